"""A training run's settings: one dataclass whose fields carry their help, presets as data, the parser made from both.

Each setting is written once, here: the command line, --resume's checks (the `architecture` fields) and the card's
recipe (the `recipe` fields) all read the fields' metadata.
"""

import argparse
import json
import types
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch

import gpt
from gpt.models.model import MLPS, GPTConfig
from gpt.models.window import ARCHS, ModelConfig, WindowConfig, row_length

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
PRESET_FILE = Path(__file__).with_name("presets.json")
PRESETS = json.loads(PRESET_FILE.read_text())  # name -> settings, each with an "about" line for --help
PRESET_ABOUT = {name: preset.pop("about") for name, preset in PRESETS.items()}


def setting(default, help: str, choices=None, architecture: bool = False, recipe: bool = False):
    """A TrainConfig field with its command-line help; `architecture`: fixed for a run; `recipe`: named in the card."""
    meta = {"help": help, "choices": choices, "architecture": architecture, "recipe": recipe}
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class TrainConfig:
    """One run's settings: the defaults below <- a preset <- explicit flags; checked when made, then never changed (a
    time budget's plan and its moving end are new configs, made with dataclasses.replace and checked again)."""

    data: str | None = setting(
        None,
        "UTF-8 text file to train on, or a Hub dataset id (owner/name[@revision], read through `datasets`); the last "
        "10%% validates (with --docs every 10th line)",
    )
    text_column: str = setting("text", "--data from the Hub: the dataset's column of text (its rows one a line)")
    docs: bool = setting(False, "document mode: one item per line, boundary token", architecture=True)
    tokenizer: str = setting(
        "char",
        "char: one token per character of the text; bpe: a byte-level BPE of --vocab-size tokens learnt from the "
        "training split, for any UTF-8 text (emoji, accents, CJK)",
        ["char", "bpe"],
        architecture=True,
        recipe=True,
    )
    chars: str | None = setting(
        None,
        "char: characters the vocabulary holds beside the text's own, for a base that a fine-tune will teach them "
        "(a request's capitals, digits and punctuation, say)",
        architecture=True,
    )
    vocab_size: int = setting(1024, "bpe: tokens in the vocabulary, the 256 bytes included", architecture=True)
    arch: str = setting(
        "gpt",
        "gpt, or a rung of the makemore ladder (a window of --block-size)",
        ["gpt", *ARCHS],
        architecture=True,
        recipe=True,
    )
    n_hidden: int = setting(200, "hidden width of the mlp and wavenet", architecture=True, recipe=True)
    n_layer: int = setting(4, "transformer blocks", architecture=True, recipe=True)
    n_head: int = setting(4, "attention heads per block", architecture=True, recipe=True)
    n_embd: int = setting(128, "embedding width (gpt: divisible by --n-head)", architecture=True, recipe=True)
    block_size: int = setting(
        64, "context length in tokens (wavenet: a power of two; bigram: 1)", architecture=True, recipe=True
    )
    dropout: float = setting(0.0, "dropout probability while training", recipe=True)
    bias: bool = setting(False, "use biases in Linear and LayerNorm layers", architecture=True)
    rotary: bool = setting(
        False, "gpt: rotary positions (Llama's) instead of a learnt position embedding", architecture=True, recipe=True
    )
    rms_norm: bool = setting(False, "gpt: RMSNorm instead of LayerNorm", architecture=True, recipe=True)
    qk_norm: bool = setting(
        False, "gpt: RMS-norm each head's queries and keys (Qwen3's QK-norm)", architecture=True, recipe=True
    )
    mlp: str = setting(
        "gelu",
        "gpt: the MLP: gelu (GPT-2's), swiglu (gated, Llama's) or relu2 (squared ReLU). With --rotary, --rms-norm "
        "and swiglu the folder is a Llama (with --qk-norm a Qwen3) for transformers, vLLM and llama.cpp",
        list(MLPS),
        architecture=True,
        recipe=True,
    )
    untied_head: bool = setting(
        False, "gpt: an output head of its own instead of the token embedding", architecture=True, recipe=True
    )
    batch_size: int = setting(32, "sequences per step (per process under torchrun)", recipe=True)
    max_steps: int = setting(2000, "optimizer steps in total", recipe=True)
    lr: float = setting(1e-3, "peak learning rate (AdamW)", recipe=True)
    min_lr: float = setting(1e-4, "learning rate at the end of the decay", recipe=True)
    warmup_steps: int = setting(100, "steps of linear warmup from 0 to --lr", recipe=True)
    lr_decay_steps: int | None = setting(None, "step where the schedule reaches --min-lr (unset: --max-steps)")
    schedule: str = setting(
        "cosine", "cosine decay, or wsd: warmup, stable at --lr, then linear decay", ["cosine", "wsd"], recipe=True
    )
    decay_fraction: float = setting(0.2, "wsd: the fraction of the steps spent decaying to --min-lr")
    optimizer: str = setting(
        "adamw", "muon: Muon for the blocks' matrices, AdamW for embeddings and gains", ["adamw", "muon"], recipe=True
    )
    muon_lr: float = setting(0.02, "peak learning rate of Muon (scaled by the same schedule)", recipe=True)
    weight_decay: float = setting(0.1, "AdamW weight decay (matrices only)", recipe=True)
    beta1: float = setting(0.9, "AdamW beta1")
    beta2: float = setting(0.99, "AdamW beta2")
    grad_clip: float = setting(1.0, "clip the gradient norm to this (0: off)")
    ema: float = setting(
        0.0, "decay of a moving average of the weights, which is evaluated and saved (0: off)", recipe=True
    )
    eval_interval: int = setting(250, "estimate train/val loss (and maybe save) every N steps")
    eval_steps: int = setting(20, "batches per loss estimate")
    checkpoint_minutes: float = setting(10.0, "save the resume state at least this often (and at every evaluation)")
    device: str = setting("auto", "auto picks cuda, then mps, then cpu", ["auto", "cpu", "cuda", "mps"])
    dtype: str = setting("auto", "autocast precision; auto is bfloat16 on CUDA, else float32", ["auto", *DTYPES])
    save_dtype: str = setting("float32", "precision of the saved weights (loading always gives float32)", list(DTYPES))
    compile: bool = setting(
        False,
        "torch.compile the model: faster steps on CUDA, and for the modern block on a CPU (a --time-budget of 10 "
        "minutes or more compiles where it pays unless --no-compile)",
    )
    seed: int = setting(1337, "random seed (same seed and settings give the same run)")
    threads: int | None = setting(
        None, "CPU threads for torch (default: one per core); another busy job on the same cores slows both a lot"
    )
    time_budget: float | None = setting(
        None,
        "minutes to train for: the model size, batch and steps are chosen for this budget, this machine's measured "
        "speed and the size of the text (explicit --n-layer, --n-embd, --block-size, --batch-size still win)",
    )
    dataset: str | None = setting(None, "Hub dataset id of the training data, named in the model card's metadata")
    sft: bool = setting(
        False,
        "supervised fine-tuning: --data is conversations (JSONL, OpenAI's chat format); the tokenizer gains turn "
        "tokens and the loss counts the assistant's tokens only (needs --init-from)",
        architecture=True,
        recipe=True,
    )
    replay: str | None = setting(
        None,
        "--sft or --rl: a text file the base model knows (its training 90%%), learnt as text beside the tuning so that "
        "the model keeps what it could do; the card gives its validation loss before and after (--rl)",
    )
    replay_share: float = setting(
        0.25,
        "with --replay: the share of each --sft batch that is that text; with --rl, the weight of its loss beside "
        "the policy's (InstructGPT's pre-training mix)",
        recipe=True,
    )
    init_from: str | None = setting(
        None,
        "fine-tune: start from this model folder or Hub repo id (owner/name[@revision]); its shape and tokenizer are "
        "kept, and the finetune preset's lower rates fill the defaults unless --preset is given",
    )
    rl: str | None = setting(
        None,
        "reinforcement learning: a reward, module:function scoring (conversation, reply) as a number, e.g. "
        "gpt.names_task:reward; needs --init-from a chat-tuned model and --prompts",
        recipe=True,
    )
    prompts: str | None = setting(
        None, "--rl: conversations to answer (JSONL, OpenAI's chat format; every 10th validates)"
    )
    group_size: int = setting(
        8, "--rl: replies sampled per prompt; each is weighed against its group's mean", recipe=True
    )
    kl: float = setting(
        0.05, "--rl: weight of the KL penalty that keeps the model near the one it started from", recipe=True
    )
    reply_tokens: int = setting(64, "--rl: most tokens a sampled reply may have")
    dpo: str | None = setting(
        None,
        "preference tuning (DPO): pairs of replies, one chosen and one rejected (JSONL, TRL's conversational "
        "format; every 10th is held out); needs --init-from a chat-tuned model",
        recipe=True,
    )
    beta: float = setting(0.1, "--dpo: how far the implicit reward may pull from the starting model", recipe=True)
    rpo_alpha: float = setting(
        0.0,
        "--dpo: weight of the chosen replies' own loss per token, added to DPO's (TRL's rpo_alpha; 1.0 in the RPO "
        "paper): keeps the chosen replies likely while the rejected ones are pushed down",
        recipe=True,
    )
    reward_model: str | None = setting(
        None,
        "train a reward model (a score head on --init-from's transformer) on these pairs (JSONL, as --dpo); its "
        "folder is a reward for --rl",
        recipe=True,
    )
    text: str | None = setting(
        None, "--dpo: the base model's pre-training text, whose validation split shows what tuning forgot"
    )
    track: str | None = setting(
        None, "log the run's settings, losses, learning rate and tokens/s to trackio under this project (trackio show)"
    )
    track_space: str | None = setting(None, "--track: log to this Hugging Face Space (user/name) instead of locally")
    preset: str | None = None

    def __post_init__(self):
        if self.rl and not (self.init_from and self.prompts):
            raise ValueError("--rl tunes a chat model: give --init-from CHAT_MODEL and --prompts FILE.jsonl")
        if self.rl and (self.sft or self.data):
            raise ValueError("--rl learns from its own replies to --prompts: leave out --sft and --data")
        pairs = self.dpo or self.reward_model
        if self.dpo and self.reward_model:
            raise ValueError("--dpo tunes a chat model and --reward-model trains a scorer: give one of them")
        if pairs and not self.init_from:
            raise ValueError("preference pairs tune a chat model: give --init-from CHAT_MODEL (chat-tuned with --sft)")
        if pairs and (self.rl or self.sft or self.data or self.time_budget):
            raise ValueError("--dpo and --reward-model learn from pairs: leave out --rl, --sft, --data, --time-budget")
        if self.track_space and not self.track:
            raise ValueError("--track-space needs --track PROJECT")
        if self.text and not self.dpo:
            raise ValueError("--text measures what --dpo forgot: it needs --dpo")
        if self.beta <= 0:
            raise ValueError("--beta must be more than 0 (DPO's usual is 0.1)")
        if self.rpo_alpha < 0:
            raise ValueError("--rpo-alpha must be 0 or more (0: plain DPO; the RPO paper's is 1.0)")
        if not self.data and not self.rl and not pairs:
            raise ValueError("--data is required: give a UTF-8 text file (or a Hub dataset id) to train on")
        counts = ["n_layer", "n_head", "n_embd", "block_size", "batch_size", "max_steps", "eval_interval", "eval_steps"]
        counts += ["group_size", "reply_tokens"]
        for k in counts + ["threads"] * (self.threads is not None):
            if getattr(self, k) < 1:
                raise ValueError(f"--{k.replace('_', '-')} must be at least 1")
        if self.sft and not self.init_from:
            raise ValueError("--sft fine-tunes a trained model: give --init-from FOLDER_OR_REPO_ID")
        if self.sft and (self.arch != "gpt" or self.docs):
            raise ValueError("--sft is for GPT models of running text")
        if self.replay and not (self.sft or self.rl):
            raise ValueError("--replay mixes text into chat-tuning: it needs --sft or --rl")
        if self.kl < 0:
            raise ValueError("--kl must be at least 0 (0: off)")
        if self.replay_share < 0 or (self.sft and self.replay_share >= 1):
            raise ValueError("--replay-share must be at least 0 (and below 1 with --sft: a share of each batch)")
        if self.tokenizer not in ("char", "bpe"):
            raise ValueError("--tokenizer is char or bpe")
        if self.chars and self.tokenizer != "char":
            raise ValueError("--chars adds characters to a character tokenizer; a byte-level BPE has every byte")
        if self.tokenizer == "bpe" and not 257 <= self.vocab_size <= 1 << 17:
            raise ValueError("--vocab-size must be from 257 to 131,072 (a byte-level BPE has the 256 bytes)")
        if self.time_budget is not None and not 0 < self.time_budget <= 60 * 24 * 7:
            raise ValueError("--time-budget is in minutes: more than 0, at most a week (10080)")
        if self.arch == "gpt" and self.n_embd % self.n_head:
            raise ValueError(f"--n-embd {self.n_embd} must be divisible by --n-head {self.n_head}")
        if self.arch == "gpt" and self.rotary and (self.n_embd // self.n_head) % 2:
            raise ValueError(f"--rotary needs an even head size: --n-embd / --n-head is {self.n_embd // self.n_head}")
        if self.mlp not in MLPS:
            raise ValueError(f"--mlp is one of {', '.join(MLPS)}")
        if not 0 <= self.dropout < 1:
            raise ValueError("--dropout must be in [0, 1)")
        if not 0 <= self.ema < 1:
            raise ValueError("--ema must be in [0, 1) (0: off; 0.999 averages about the last 1,000 steps)")
        if self.warmup_steps < 0 or self.lr <= 0 or self.min_lr < 0 or self.muon_lr <= 0:
            raise ValueError("--lr and --muon-lr must be > 0, --min-lr and --warmup-steps >= 0")
        if self.schedule not in ("cosine", "wsd") or not 0 < self.decay_fraction <= 1:
            raise ValueError("--schedule is cosine or wsd, with --decay-fraction in (0, 1]")
        if self.optimizer not in ("adamw", "muon"):
            raise ValueError("--optimizer is adamw or muon")
        if self.arch not in ("gpt", *ARCHS):
            raise ValueError(f"--arch is one of gpt, {', '.join(ARCHS)}")
        if self.arch != "gpt":
            if self.dropout or self.bias or self.model_switches():
                raise ValueError(
                    f"--dropout, --bias and the block's switches are for --arch gpt; {self.arch} has none of them"
                )
            if self.n_hidden < 1:
                raise ValueError("--n-hidden must be at least 1")
            if self.arch == "wavenet" and self.block_size & (self.block_size - 1):
                raise ValueError(f"--block-size {self.block_size}: wavenet needs a power of two (it fuses pairs)")
            if self.arch == "bigram":  # a table of pairs: one character of context, whatever was asked
                object.__setattr__(self, "block_size", 1)

    def model_switches(self) -> list[str]:
        """The block's switches this run turns from GPT-2's, as flags."""
        on = [f"--{k.replace('_', '-')}" for k in ("rotary", "rms_norm", "qk_norm", "untied_head") if getattr(self, k)]
        return on + ([f"--mlp {self.mlp}"] if self.mlp != "gelu" else [])

    @property
    def model(self) -> ModelConfig:
        """The model's shape, for a vocabulary of vocab_size tokens (set once the data is read)."""
        if self.arch != "gpt":
            return WindowConfig(arch=self.arch, block_size=self.block_size, n_embd=self.n_embd, n_hidden=self.n_hidden)
        return GPTConfig(
            block_size=self.block_size,
            n_layer=self.n_layer,
            n_head=self.n_head,
            n_embd=self.n_embd,
            dropout=self.dropout,
            bias=self.bias,
            tie_embeddings=not self.untied_head,
            rotary=self.rotary,
            rms_norm=self.rms_norm,
            qk_norm=self.qk_norm,
            mlp=self.mlp,
        )

    @property
    def row_length(self) -> int:
        """Characters per training row: the GPT's context; a window model scores every position of a longer row."""
        return row_length(self.model)


ARCHITECTURE = [f.name for f in fields(TrainConfig) if f.metadata.get("architecture")]
RECIPE = [f.name for f in fields(TrainConfig) if f.metadata.get("recipe")]


def build_parser() -> argparse.ArgumentParser:
    """The command line, one flag per TrainConfig field: its help, choices and type come from the field."""
    presets = "; ".join(f"{name}: {about}" for name, about in PRESET_ABOUT.items())
    p = argparse.ArgumentParser(
        prog=gpt.prog("gpt.train"),
        description="Train a GPT (or a makemore rung) on a UTF-8 text file, from scratch or from --init-from. A "
        f"preset fills the defaults; explicit flags override it. Presets: {presets}.",
    )
    p.add_argument("--out", required=True, help="model folder to write (and the checkpoint/ to resume from)")
    p.add_argument("--preset", choices=sorted(PRESETS), help="named recipe filling the defaults below")
    p.add_argument("--resume", action="store_true", help="continue the run saved in --out/checkpoint")
    for f in fields(TrainConfig):
        if f.name == "preset":
            continue
        flag, meta = f"--{f.name.replace('_', '-')}", f.metadata
        shown = "" if f.default is None else f" (default: {f.default})"
        if f.type is bool:
            # --no-FLAG too: to take back a preset's switch, or keep a time budget from compiling (--no-compile)
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=meta["help"])
            continue
        kind = f.type
        if isinstance(kind, types.UnionType):
            kind = next(t for t in kind.__args__ if t is not type(None))
        p.add_argument(flag, type=kind, choices=meta["choices"], help=meta["help"] + shown)
    return p


# the settings that name files or folders
PATHS = ("data", "replay", "init_from", "prompts", "rl", "dpo", "reward_model", "text")


def portable(path: str | None) -> str | None:
    """A path as a folder's record keeps it: a relative one as given, an absolute or `..` one by its name alone, so
    no card or metrics.json shows the folders of the machine it was trained on."""
    if not path:
        return path
    return Path(path).name if Path(path).is_absolute() or ".." in Path(path).parts else path


def portable_args(argv: list[str]) -> list[str]:
    """A command's arguments with each path made portable (`--flag=PATH` too)."""
    out = []
    for arg in argv:
        flag, eq, value = arg.partition("=") if arg.startswith("--") else ("", "", arg)
        out.append(flag + eq + (portable(value) or value))
    return out


def recorded_settings(c: TrainConfig) -> dict:
    return {k: portable(v) if k in PATHS else v for k, v in asdict(c).items()}
