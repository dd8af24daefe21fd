"""Train a model on a text file: python -m gpt.train --data FILE --out DIR [--preset NAME] [--arch ARCH] [flags].

The best-validation model is saved atomically to --out as a model folder. Resume state (latest weights, optimizer,
step, data-sampler and RNG state) goes to --out/checkpoint/ as safetensors + JSON, so --resume continues exactly
where an interrupted run stopped. Ctrl-C saves that state at the end of the current step and exits.
Multi-GPU / multi-node: torchrun --nproc-per-node N -m gpt.train ... (DistributedDataParallel; rank 0 writes).
"""

import argparse
import json
import math
import os
import shlex
import signal
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm import tqdm

from gpt.data import DataError, load_dataset, read_text
from gpt.eval import validation_loss
from gpt.folder import build_model, load_folder, read_metrics, save_folder, write_atomic, write_card, write_metrics
from gpt.generate import LM
from gpt.model import GPTConfig, ModelFileError, pick_device
from gpt.tokenizer import CharTokenizer, UnknownCharactersError
from gpt.window import ARCHS, Model, ModelConfig, WindowConfig, row_length


@dataclass
class TrainConfig:
    """One run's settings: the defaults below <- a preset <- explicit flags; checked when made."""

    data: str | None = None  # the UTF-8 text file
    docs: bool = False  # document mode: one item per line
    arch: str = "gpt"  # gpt, or a fixed-window rung of the makemore ladder: bigram, mlp, wavenet (gpt/window.py)
    n_hidden: int = 200  # hidden width of the mlp and wavenet
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    block_size: int = 64
    dropout: float = 0.0
    bias: bool = False
    batch_size: int = 32
    max_steps: int = 2000
    lr: float = 1e-3
    min_lr: float = 1e-4
    warmup_steps: int = 100
    lr_decay_steps: int | None = None  # where the schedule reaches min_lr (default: max_steps)
    schedule: str = "cosine"  # cosine, or wsd: warmup, stable at lr, then linear decay over decay_fraction
    decay_fraction: float = 0.2
    optimizer: str = "adamw"  # adamw, or muon: Muon for the blocks' matrices, AdamW for embeddings and gains
    muon_lr: float = 0.02
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = 1.0
    ema: float = 0.0  # decay of a moving average of the weights, which is then evaluated and saved (0: off)
    eval_interval: int = 250
    eval_steps: int = 20
    checkpoint_minutes: float = 10.0  # resume state at least this often (and at every evaluation)
    device: str = "auto"
    dtype: str = "auto"
    save_dtype: str = "float32"
    compile: bool = False
    seed: int = 1337
    dataset: str | None = None  # Hub dataset id, for the card
    preset: str | None = None

    def __post_init__(self):
        if not self.data:
            raise ValueError("--data is required: give a UTF-8 text file to train on")
        counts = ["n_layer", "n_head", "n_embd", "block_size", "batch_size", "max_steps", "eval_interval", "eval_steps"]
        for k in counts:
            if getattr(self, k) < 1:
                raise ValueError(f"--{k.replace('_', '-')} must be at least 1")
        if self.arch == "gpt" and self.n_embd % self.n_head:
            raise ValueError(f"--n-embd {self.n_embd} must be divisible by --n-head {self.n_head}")
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
            if self.dropout or self.bias:
                raise ValueError(f"--dropout and --bias are for --arch gpt; {self.arch} has neither")
            if self.n_hidden < 1:
                raise ValueError("--n-hidden must be at least 1")
            if self.arch == "wavenet" and self.block_size & (self.block_size - 1):
                raise ValueError(f"--block-size {self.block_size}: wavenet needs a power of two (it fuses pairs)")
            if self.arch == "bigram":
                self.block_size = 1

    @property
    def model(self) -> ModelConfig:
        """The model's shape, for a vocabulary of vocab_size tokens (set once the data is read)."""
        if self.arch != "gpt":
            return WindowConfig(arch=self.arch, block_size=self.block_size, n_embd=self.n_embd, n_hidden=self.n_hidden)
        return GPTConfig(block_size=self.block_size, n_layer=self.n_layer, n_head=self.n_head, n_embd=self.n_embd,
                         dropout=self.dropout, bias=self.bias)  # fmt: skip

    @property
    def row_length(self) -> int:
        """Characters per training row: the GPT's context; a window model scores every position of a longer row."""
        return row_length(self.model)


PRESETS = {
    # The flagship, sized for a 2-core CPU and about two hours: the model size that budget can train well (4.8M
    # parameters, 6.8k tokens/s here), Muon on its matrices, warmup-stable-decay, nanoGPT's dropout for 60 epochs.
    "shakespeare-char": dict(
        n_layer=6, n_head=8, n_embd=256, block_size=256, dropout=0.2, batch_size=32, max_steps=5500,
        lr=2e-3, min_lr=1e-4, warmup_steps=200, optimizer="muon", muon_lr=0.008, schedule="wsd", decay_fraction=0.2,
        eval_interval=250, eval_steps=40, dataset="karpathy/tiny_shakespeare",
    ),
    # nanoGPT's shakespeare_char recipe (10.65M parameters): a GPU run of a few minutes, about 19 hours on this CPU.
    "shakespeare-char-gpu": dict(
        n_layer=6, n_head=6, n_embd=384, block_size=256, dropout=0.2, batch_size=64, max_steps=5000,
        lr=1e-3, min_lr=1e-4, warmup_steps=100, eval_interval=250, eval_steps=200, save_dtype="bfloat16",
        dataset="karpathy/tiny_shakespeare",
    ),
    # The laptop recipe, tuned for a 2-core CPU: at this budget the number of updates limits the loss, so a shallow
    # model (fast steps) with Muon on its matrices (about twice the progress per step of AdamW here) and a high rate.
    "shakespeare-char-cpu": dict(
        n_layer=2, n_head=4, n_embd=128, block_size=64, dropout=0.0, batch_size=16, max_steps=500,
        lr=6e-3, min_lr=6e-4, warmup_steps=50, optimizer="muon", muon_lr=0.02, eval_interval=250, eval_steps=20,
        dataset="karpathy/tiny_shakespeare",
    ),
    # The makemore ladder on the same task (gpt/window.py): each rung's lecture shape, trained by AdamW.
    "names-bigram": dict(
        docs=True, arch="bigram", batch_size=256, max_steps=3000, lr=0.1, min_lr=0.001, warmup_steps=0,
        weight_decay=0.0, eval_interval=250, eval_steps=50,
    ),
    "names-mlp": dict(
        docs=True, arch="mlp", block_size=3, n_embd=10, n_hidden=300, batch_size=128, max_steps=20000, lr=1e-2,
        min_lr=1e-3, warmup_steps=100, eval_interval=500, eval_steps=50,
    ),
    "names-wavenet": dict(
        docs=True, arch="wavenet", block_size=8, n_embd=24, n_hidden=128, batch_size=64, max_steps=10000, lr=1e-2,
        min_lr=1e-3, warmup_steps=100, eval_interval=500, eval_steps=50,
    ),
    # makemore's task: one name per line, each scored from a fresh boundary. Muon on the matrices overfits later than
    # AdamW here, and the moving average of the weights is what is saved.
    "names": dict(
        docs=True, n_layer=4, n_head=4, n_embd=96, block_size=16, dropout=0.2, batch_size=256, max_steps=10000,
        lr=3e-3, min_lr=3e-4, warmup_steps=100, optimizer="muon", muon_lr=0.01, eval_interval=500, eval_steps=50,
        ema=0.999,
    ),
}  # fmt: skip
ARCHITECTURE = ["arch", "n_layer", "n_head", "n_embd", "n_hidden", "block_size", "bias", "docs"]
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m gpt.train",
        description="Train a character-level GPT on a UTF-8 text file. A preset fills the defaults; explicit flags "
        "override it. Defaults without a preset: "
        + ", ".join(f"{f.name}={f.default}" for f in fields(TrainConfig) if f.name not in ("data", "preset")),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    a = p.add_argument
    a("--data", help="UTF-8 text file to train on (last 10%% validates; with --docs every 10th line validates)")
    a("--out", required=True, help="model folder to write (and the checkpoint/ to resume from)")
    a("--preset", choices=sorted(PRESETS), help="named recipe filling the defaults below")
    a("--resume", action="store_true", help="continue the run saved in --out/checkpoint (same settings unless given)")
    a("--docs", action="store_true", default=None, help="document mode: one item per line, boundary token")
    a("--arch", choices=["gpt", *ARCHS], help="gpt, or a rung of the makemore ladder (window of --block-size)")
    a("--n-hidden", type=int, help="hidden width of the mlp and wavenet")
    a("--n-layer", type=int, help="transformer blocks")
    a("--n-head", type=int, help="attention heads per block")
    a("--n-embd", type=int, help="embedding width (gpt: divisible by --n-head)")
    a("--block-size", type=int, help="context length in characters (wavenet: a power of two; bigram: 1)")
    a("--dropout", type=float, help="dropout probability while training")
    a("--bias", action="store_true", default=None, help="use biases in Linear and LayerNorm layers")
    a("--batch-size", type=int, help="sequences per step (per process under torchrun)")
    a("--max-steps", type=int, help="optimizer steps in total")
    a("--lr", type=float, help="peak learning rate (AdamW)")
    a("--min-lr", type=float, help="learning rate at the end of the cosine decay")
    a("--warmup-steps", type=int, help="steps of linear warmup from 0 to --lr")
    a("--lr-decay-steps", type=int, help="step where the schedule reaches --min-lr (default: --max-steps)")
    a("--schedule", choices=["cosine", "wsd"], help="cosine decay, or warmup-stable-decay (linear over the end)")
    a("--decay-fraction", type=float, help="wsd: the fraction of the steps spent decaying to --min-lr")
    a("--optimizer", choices=["adamw", "muon"], help="muon: Muon for the blocks' matrices, AdamW for the rest")
    a("--muon-lr", type=float, help="peak learning rate of Muon (scaled by the same schedule)")
    a("--weight-decay", type=float, help="AdamW weight decay (matrices only)")
    a("--beta1", type=float, help="AdamW beta1")
    a("--beta2", type=float, help="AdamW beta2")
    a("--grad-clip", type=float, help="clip the gradient norm to this (0: off)")
    a(
        "--ema",
        type=float,
        help="keep an exponential moving average of the weights with this decay, and evaluate "
        "and save it instead (0: off)",
    )
    a("--eval-interval", type=int, help="estimate train/val loss (and maybe save) every N steps")
    a("--eval-steps", type=int, help="batches per loss estimate")
    a("--checkpoint-minutes", type=float, help="save the resume state at least this often (minutes of wall time)")
    a("--device", choices=["auto", "cpu", "cuda", "mps"], help="auto picks cuda, then mps, then cpu")
    a("--dtype", choices=["auto", *DTYPES], help="autocast precision; auto is bfloat16 on CUDA, else float32")
    a("--save-dtype", choices=list(DTYPES), help="precision of the saved weights (loading always gives float32)")
    a("--compile", action="store_true", default=None, help="torch.compile the model (CUDA)")
    a("--seed", type=int, help="random seed (same seed and settings give the same run)")
    a("--dataset", help="Hub dataset id of the training data, named in the model card's metadata")
    return p


def resolve_settings(args: argparse.Namespace) -> TrainConfig:
    """Defaults <- preset <- explicit flags; on --resume the saved run's settings stand in for the defaults."""
    explicit = {k: v for k, v in vars(args).items() if v is not None and k not in ("out", "resume", "preset")}
    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise ValueError(f"--out {args.out} is a file: give a folder for the model")
    if args.resume:
        saved = read_checkpoint_meta(Path(args.out))["settings"]
        for k in ARCHITECTURE:
            if k in explicit and explicit[k] != saved[k]:
                raise ValueError(
                    f"--{k.replace('_', '-')} {explicit[k]} differs from the run being resumed ({saved[k]})"
                )
        return TrainConfig(**{**saved, **explicit})
    return TrainConfig(**{**PRESETS.get(args.preset, {}), **explicit, "preset": args.preset})


def learning_rate(step: int, c: TrainConfig) -> float:
    """Linear warmup, then cosine decay (or stable, then linear decay) to min_lr at lr_decay_steps, then flat."""
    decay_steps = c.lr_decay_steps or c.max_steps
    if step < c.warmup_steps:
        return c.lr * (step + 1) / (c.warmup_steps + 1)
    if step >= decay_steps:
        return c.min_lr
    if c.schedule == "wsd":
        decay_start = decay_steps - max(1, round(c.decay_fraction * decay_steps))
        return c.lr - (c.lr - c.min_lr) * max(0, step - decay_start) / (decay_steps - decay_start)
    ratio = (step - c.warmup_steps) / max(1, decay_steps - c.warmup_steps)
    return c.min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (c.lr - c.min_lr)


def make_optimizers(model: Model, c: TrainConfig, fused: bool) -> dict[str, torch.optim.Optimizer]:
    """AdamW (decay on matrices only), or Muon for the blocks' matrices with AdamW for embeddings and gains.

    Each group keeps its peak rate as "peak_lr"; the schedule scales every group by the same factor.
    """
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    hidden = [p for n, p in named if c.optimizer == "muon" and n.startswith("transformer.h.") and p.dim() == 2]
    ids = {id(p) for p in hidden}
    rest = [p for _, p in named if id(p) not in ids]
    groups = [{"params": [p for p in rest if p.dim() >= 2], "weight_decay": c.weight_decay, "peak_lr": c.lr},
              {"params": [p for p in rest if p.dim() < 2], "weight_decay": 0.0, "peak_lr": c.lr}]  # fmt: skip
    optimizers = {"adamw": torch.optim.AdamW(groups, lr=c.lr, betas=(c.beta1, c.beta2), fused=fused)}
    if hidden:
        muon_groups = [{"params": hidden, "peak_lr": c.muon_lr}]
        optimizers["muon"] = torch.optim.Muon(muon_groups, lr=c.muon_lr, weight_decay=c.weight_decay,
                                              adjust_lr_fn="match_rms_adamw")  # fmt: skip
    return optimizers


# Resume state: tensors in state-STEP.safetensors, everything else in state.json, which names that file. Writing the
# tensors first and then state.json (each atomically) makes state.json the commit point: whenever a run is killed,
# state.json and the file it names are from the same step. Older tensor files are removed after the commit.


def read_checkpoint_meta(out: Path) -> dict:
    path = out / "checkpoint" / "state.json"
    if not path.is_file():
        raise ValueError(f"{path} not found: nothing to resume in {out} (train without --resume first)")
    try:
        return json.loads(path.read_text())
    except ValueError as e:
        raise ValueError(f"{path} is not valid JSON ({e}): train again without --resume") from None


def tidy_checkpoint(folder: Path, keep: str | None) -> None:
    """Remove tensor files other than `keep` and any temporary file an interrupted write left behind.

    ".*.tmp" are ours (write_atomic); ".tmp*" are safetensors' own, which writes through a temporary file too.
    """
    for f in [*folder.glob("state-*.safetensors"), *folder.glob(".*.tmp"), *folder.glob(".tmp*")]:
        if f.name != keep:
            f.unlink(missing_ok=True)


def save_checkpoint(out: Path, model: Model, optimizers: dict, meta: dict, rng: dict[str, torch.Tensor],
                    averaged: AveragedModel | None = None) -> None:  # fmt: skip
    tensors = {f"model.{k}": v for k, v in model.state_dict().items() if k != "lm_head.weight"}  # tied: stored once
    if averaged is not None:
        tensors.update({f"ema.{k}": v for k, v in averaged.state_dict().items() if k != "module.lm_head.weight"})
    param_groups = {}
    for kind, optimizer in optimizers.items():
        opt = optimizer.state_dict()
        param_groups[kind] = opt["param_groups"]
        for i, state in opt["state"].items():
            for name, value in state.items():
                tensors[f"optimizer.{kind}.{i}.{name}"] = value
    tensors.update({f"rng.{k}": v for k, v in rng.items()})
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    name = f"state-{meta['step']}.safetensors"
    meta = {**meta, "param_groups": param_groups, "tensors": name}
    folder = out / "checkpoint"
    folder.mkdir(parents=True, exist_ok=True)
    write_atomic(folder / name, lambda p: save_file(tensors, str(p), metadata={"step": str(meta["step"])}))
    write_atomic(folder / "state.json", lambda p: p.write_text(json.dumps(meta, indent=1)))
    tidy_checkpoint(folder, keep=name)


def load_checkpoint(out: Path, model: Model, optimizers: dict,
                    averaged: AveragedModel | None = None) -> tuple[dict, dict[str, torch.Tensor]]:  # fmt: skip
    meta = read_checkpoint_meta(out)
    path = out / "checkpoint" / meta.get("tensors", "state.safetensors")
    restart = "restore the checkpoint folder or train again without --resume"
    try:
        with safe_open(str(path), "pt") as f:
            step = (f.metadata() or {}).get("step")
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise ValueError(f"{path} is missing, unreadable or truncated ({e}): {restart}") from None
    if step is not None and step != str(meta["step"]):
        raise ValueError(f"{path} holds step {step} but state.json step {meta['step']}: {restart}")
    weights = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    ema = {k[len("ema.") :]: v for k, v in tensors.items() if k.startswith("ema.")}
    if "transformer.wte.weight" in weights:  # a GPT's head is tied to its token embedding
        weights["lm_head.weight"] = weights["transformer.wte.weight"]
        if ema:
            ema["module.lm_head.weight"] = ema["module.transformer.wte.weight"]
    groups = meta["param_groups"]
    groups = {"adamw": groups} if isinstance(groups, list) else groups  # the first format had AdamW alone
    states: dict[str, dict[int, dict]] = {kind: {} for kind in groups}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            rest = key.split(".", 1)[1]
            rest = f"adamw.{rest}" if rest.split(".", 1)[0].isdigit() else rest
            kind, i, name = rest.split(".", 2)
            states.setdefault(kind, {}).setdefault(int(i), {})[name] = value
    try:
        model.load_state_dict(weights, strict=True)
        if bool(ema) != (averaged is not None):
            raise ValueError(f"it was saved {'with' if ema else 'without'} --ema")
        if averaged is not None:
            averaged.load_state_dict(ema, strict=True)
        if set(groups) != set(optimizers):
            raise ValueError(f"it was saved with {', '.join(groups)}, this run uses {', '.join(optimizers)}")
        for kind, optimizer in optimizers.items():
            optimizer.load_state_dict({"state": states[kind], "param_groups": groups[kind]})
    except (RuntimeError, ValueError, KeyError, TypeError) as e:
        reason = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        raise ValueError(f"{path} does not match this run's model or optimizer ({reason}): {restart}") from None
    rng = {k[len("rng.") :]: v for k, v in tensors.items() if k.startswith("rng.")}
    return meta, rng


def checkpoint_due(due: bool, world: int, device) -> bool:
    """Whether any rank's clock says a checkpoint is due: every rank must save at the same step."""
    if world == 1:
        return due
    flag = torch.tensor(int(due), device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())


def gather_states(state: torch.Tensor, world: int, device) -> torch.Tensor:
    """Every rank's copy of a byte state, stacked (rank 0 writes them all to the checkpoint)."""
    if world == 1:
        return state[None]
    parts = [torch.empty_like(state, device=device) for _ in range(world)]
    dist.all_gather(parts, state.to(device))
    return torch.stack([p.cpu() for p in parts])


@torch.no_grad()
def estimate_loss(model, batches: dict, steps: int, batch_size: int, seed: int, ctx, device, world: int) -> dict:
    """Mean loss over the same `steps` batches of each split every time (a fixed generator), averaged over ranks."""
    model.eval()
    out = {}
    for split, data in batches.items():
        g = torch.Generator().manual_seed(seed)
        losses = torch.zeros(steps, device=device)
        for i in range(steps):
            x, y = data.sample(batch_size, g)
            with ctx:
                losses[i] = model(x.to(device), y.to(device))[1]
        mean = losses.mean()
        if world > 1:
            dist.all_reduce(mean)
            mean /= world
        out[split] = mean.item()
    model.train()
    return out


SAMPLE_SETTINGS = dict(max_new_tokens=300, temperature=0.8, top_k=40, seed=0)


def samples(lm: LM) -> dict:
    """A few samples for the card, made once with fixed settings: the call that makes them and their text."""
    if lm.tokenizer.documents:
        settings = {**SAMPLE_SETTINGS, "max_new_tokens": min(lm.row_length, 64)}
        call = f"lm.generate_batch([''] * 12, {', '.join(f'{k}={v}' for k, v in settings.items())})"
        return {"call": call, "text": "\n".join(lm.generate_batch([""] * 12, **settings))}
    call = f"lm.generate('\\n', {', '.join(f'{k}={v}' for k, v in SAMPLE_SETTINGS.items())})"
    return {"call": call, "text": lm.generate("\n", **SAMPLE_SETTINGS).strip("\n")}


def plot_loss(curve: list[dict], path: Path) -> None:
    """Train and validation loss against training wall time (minutes), with the steps on the top axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    timed = all("time_s" in c for c in curve)
    x = [c["time_s"] / 60 if timed else c["step"] for c in curve]
    ax.plot(x, [c["train_loss"] for c in curve], label="train")
    ax.plot(x, [c["val_loss"] for c in curve], label="validation")
    ax.set_xlabel("training wall time (min)" if timed else "step")
    ax.set_ylabel("cross-entropy (nats/char)")
    if timed and x[-1] > 0:
        steps = ax.secondary_xaxis("top", functions=(lambda m: m * curve[-1]["step"] / x[-1],
                                                     lambda s: s * x[-1] / max(curve[-1]["step"], 1)))  # fmt: skip
        steps.set_xlabel("step (at the run's mean speed)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    write_atomic(path, lambda p: fig.savefig(p, format="png"))
    plt.close(fig)


def train(c: TrainConfig, out: Path, resume: bool = False, command: str = "") -> dict:
    """Run the training loop with resolved settings; returns the run summary written to metrics.json."""
    world = int(os.environ.get("WORLD_SIZE", 1))
    rank = int(os.environ.get("RANK", 0))
    if world > 1:
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
        backend = "nccl" if torch.cuda.is_available() and c.device in ("auto", "cuda") else "gloo"
        dist.init_process_group(backend)
        device = torch.device(f"cuda:{local_rank}") if backend == "nccl" else pick_device(c.device)
        if device.type == "cuda":
            torch.cuda.set_device(device)
    else:
        device = pick_device(c.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda asked for, but no CUDA GPU is available")
    master = rank == 0
    dtype_name = c.dtype
    if dtype_name == "auto":
        dtype_name = "bfloat16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "float32"
    amp_dtype = DTYPES[dtype_name]
    ctx = torch.autocast(device.type, dtype=amp_dtype) if amp_dtype != torch.float32 else nullcontext()
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    if device.type == "cpu":  # subnormal floats slow CPU arithmetic as weights and moments shrink; flush them to zero
        torch.set_flush_denormal(True)
    torch.manual_seed(c.seed + rank)
    data_rng = torch.Generator().manual_seed(c.seed + rank)
    tokenizer = CharTokenizer.load(out) if resume else None
    tokenizer, train_data, val_data = load_dataset(c.data, c.row_length, c.docs, tokenizer)
    model = build_model(replace(c.model, vocab_size=tokenizer.vocab_size)).to(device)
    optimizers = make_optimizers(model, c, fused=device.type == "cuda")
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    averaged = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(c.ema)) if c.ema else None
    start, best_val, curve, tokens_seen, elapsed = 0, float("inf"), [], 0, 0.0
    if resume:
        meta, rng = load_checkpoint(out, model, optimizers, averaged)
        tidy_checkpoint(out / "checkpoint", keep=meta.get("tensors"))
        start, best_val, curve = meta["step"], meta["best_val_loss"], meta["curve"]
        tokens_seen, elapsed = meta["tokens_seen"], meta["wall_time_s"]
        data_rng.set_state(rng["data"][rank])
        torch.set_rng_state(rng["torch"][rank])
        if device.type == "cuda" and "cuda" in rng:
            torch.cuda.set_rng_state(rng["cuda"][rank])
    raw_model = model
    if c.compile:
        model = torch.compile(model)
    if world > 1:
        model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    evaluated, saved = (averaged.module, averaged.module) if averaged else (model, raw_model)

    stop_requested = []
    if world == 1 and master:  # Ctrl-C, kill and a closed terminal all stop at the end of the step, saving the state
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, lambda *_: stop_requested.append(True))

    tokens_per_step = c.batch_size * train_data.row_length * world  # padding included
    splits = {"train": train_data, "val": val_data}
    run = {
        "name": out.name, "data": str(c.data), "command": command, "device": str(device).split(":")[0],
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else
        f"{device.type} ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads)",
        "parameters": raw_model.num_params(), "world_size": world, "dtype": dtype_name, "settings": asdict(c),
    }  # fmt: skip
    if resume:  # the card keeps the command that started the run and lists the ones that continued it
        earlier = read_metrics(out).get("run", {})
        run["command"] = earlier.get("command", command)
        run["resumed_with"] = [*earlier.get("resumed_with", []), command]
    out.mkdir(parents=True, exist_ok=True)

    def checkpoint(step: int) -> None:
        rng = {"data": gather_states(data_rng.get_state(), world, device)}
        rng["torch"] = gather_states(torch.get_rng_state(), world, device)
        if device.type == "cuda":
            rng["cuda"] = gather_states(torch.cuda.get_rng_state(device), world, device)
        if master:
            meta = {"step": step, "best_val_loss": best_val, "curve": curve, "tokens_seen": tokens_seen}
            meta.update({"wall_time_s": elapsed + time.time() - t0, "settings": asdict(c)})
            save_checkpoint(out, raw_model, optimizers, meta, rng, averaged)
        last_save[0] = time.time()

    def metrics() -> dict:
        summary = {"best_val_loss": best_val, "tokens_seen": tokens_seen, "wall_time_s": elapsed + time.time() - t0}
        best = min(curve, key=lambda c: c["val_loss"]) if curve else {}
        summary["final_train_loss"] = best.get("train_loss")
        summary["best_step"] = best.get("step")
        return {"run": {**run, **summary}, "curve": curve}

    t0 = time.time()
    last_save = [t0]
    bar = tqdm(total=c.max_steps, initial=start, disable=not master, unit="step", dynamic_ncols=True)
    last_loss, interval_start, interval_tokens = float("nan"), time.time(), 0
    step = start
    while True:
        if (step % c.eval_interval == 0 or step == c.max_steps) and not (resume and step == start):
            losses = estimate_loss(evaluated, splits, c.eval_steps, c.batch_size, c.seed, ctx, device, world)
            tok_s = interval_tokens / max(time.time() - interval_start, 1e-9)
            entry = {"step": step, "train_loss": losses["train"], "val_loss": losses["val"]}
            entry.update({"lr": learning_rate(max(step - 1, 0), c), "tokens_per_s": round(tok_s),
                          "time_s": round(elapsed + time.time() - t0, 1)})  # fmt: skip
            curve.append(entry)
            if master:
                bar.write(f"step {step}: train {losses['train']:.4f}, val {losses['val']:.4f}")
            if losses["val"] < best_val:
                best_val = losses["val"]
                if master:
                    save_folder(saved, tokenizer, out, metrics(), DTYPES[c.save_dtype])
            checkpoint(step)
            interval_start, interval_tokens = time.time(), 0
        if step >= c.max_steps or stop_requested:
            break
        lr = learning_rate(step, c)
        for optimizer in optimizers.values():
            for group in optimizer.param_groups:
                group["lr"] = group["peak_lr"] * lr / c.lr
        x, y = train_data.sample(c.batch_size, data_rng)
        with ctx:
            _, loss = model(x.to(device, non_blocking=True), y.to(device, non_blocking=True))
        scaler.scale(loss).backward()
        if c.grad_clip:
            for optimizer in optimizers.values():
                scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), c.grad_clip)
        for optimizer in optimizers.values():
            scaler.step(optimizer)
        scaler.update()
        for optimizer in optimizers.values():
            optimizer.zero_grad(set_to_none=True)
        if averaged is not None:
            averaged.update_parameters(raw_model)
        step += 1
        if step % 10 == 0 and checkpoint_due(time.time() - last_save[0] >= 60 * c.checkpoint_minutes, world, device):
            checkpoint(step)
        tokens_seen += tokens_per_step
        interval_tokens += tokens_per_step
        if master and (step % 10 == 0 or step == c.max_steps):
            last_loss = loss.item()
            tok_s = interval_tokens / max(time.time() - interval_start, 1e-9)
            bar.set_postfix(loss=f"{last_loss:.4f}", tok_s=f"{tok_s:,.0f}", lr=f"{lr:.2e}", refresh=False)
        bar.update(1)
    bar.close()
    if stop_requested:
        checkpoint(step)
    if world > 1:  # all ranks leave together; rank 0's last work below is single-process
        dist.barrier()
        dist.destroy_process_group()
    summary = metrics()
    if master:
        if curve:
            plot_loss(curve, out / "loss.png")
            summary["run"]["loss_png"] = True
        lm = load_folder(out)  # the best model, as saved
        summary["run"]["exact_val_loss"] = validation_loss(lm, read_text(c.data))[0]
        summary["samples"] = samples(lm)
        write_metrics(out, summary)
        write_card(out, lm.model.config, lm.tokenizer)
    summary.update(interrupted=bool(stop_requested), step=step)
    return summary


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    out = Path(args.out)
    command = "python -m gpt.train " + shlex.join(sys.argv[1:] if argv is None else argv)
    try:
        settings = resolve_settings(args)
        summary = train(settings, out, args.resume, command)
    except (DataError, UnknownCharactersError, ModelFileError, ValueError, FileNotFoundError) as e:
        sys.exit(f"error: {e}")
    except OSError as e:  # a folder that cannot be written, a full disk
        sys.exit(f"error: cannot write {e.filename or out}: {e.strerror or e}")
    run = summary["run"]
    if int(os.environ.get("RANK", 0)) == 0:
        print(
            f"best val loss {run['best_val_loss']:.4f} (exact {run.get('exact_val_loss', float('nan')):.4f}) | "
            f"tokens seen {run['tokens_seen']:,} | "
            f"wall time {run['wall_time_s']:.1f}s | model folder {out}"
            + (f" | interrupted at step {summary['step']}: continue with --resume" if summary["interrupted"] else "")
        )


if __name__ == "__main__":
    main()
