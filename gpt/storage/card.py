"""The model card (a folder's README.md) from its config, tokenizer and metrics: formatting only.

The figures, the training command and the samples all come from metrics.json (written by training and evaluation), so
the card can be remade at any time, for a folder or for the Hub repo it is pushed to, without running the model.
"""

import json
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from gpt.models.model import GPTConfig
from gpt.models.tokenizer import AnyTokenizer, turn
from gpt.models.window import ModelConfig, WindowConfig
from gpt.storage.card_stages import assistant_measured, chat_measured, dpo_tuned, pair_section, reward_usage, rl_figures
from gpt.storage.layout import REWARD_ARCHITECTURES, family
from gpt.training.config import RECIPE

HUB_TAGS = ["text-generation", "from-scratch"]  # the Hub tags of every GPT's card, beside its tokenizer's and family's
LADDER = {
    "bigram": "A bigram model (makemore, lecture 2): a table of next-character logits read by the previous character",
    "mlp": "An MLP language model with BatchNorm (Bengio et al. 2003; makemore, lectures 3-4): the last {w} characters "
    "embedded ({e} wide), concatenated, one hidden layer of {h} (Linear, BatchNorm, tanh)",
    "wavenet": "A WaveNet-style hierarchical model (makemore, lecture 5): {w} characters embedded ({e} wide), fused "
    "two neighbours at a time by {l} layers of {h} (Linear, BatchNorm, tanh)",
}


def public_command(run: dict) -> str:
    """The training command with the data files named as a user would have them, not by this machine's paths."""
    command = run.get("command", "")
    for path in (run.get("data"), run.get("settings", {}).get("replay")):
        command = command.replace(path, Path(path).name) if path else command
    return command


def dataset_id(run: dict) -> str | None:
    """The Hub dataset the model was trained on: --dataset, or --data's when it was read from the Hub."""
    return run.get("settings", {}).get("dataset") or run.get("text", {}).get("dataset")


def metadata(config: ModelConfig, tokenizer: AnyTokenizer, run: dict, name: str) -> ModelCardData:
    dataset = dataset_id(run)
    scores = [
        ("loss", f"validation loss (nats per {unit(tokenizer)})", run.get("exact_val_loss")),
        ("bits_per_byte", "validation bits per byte", run.get("val_bits_per_byte")),
        ("reward", "mean reward on held-out prompts (the app's sampling)", run.get("val_reward")),
        ("accuracy", "held-out pairs ordered as ranked", run.get("val_accuracy")),
    ]
    results = [
        EvalResult(
            task_type="text-generation",
            dataset_type=dataset or "custom",
            dataset_name=dataset or data_file(run),
            dataset_split="validation",
            metric_type=kind,
            metric_name=label,
            metric_value=round(value, 4),
        )
        for kind, label, value in scores
        if value is not None
    ]
    window = isinstance(config, WindowConfig)
    kind = None if window else family(config)
    tags = (
        ["text-generation", "from-scratch", "makemore", config.arch] if window else [*filter(None, [kind]), *HUB_TAGS]
    )
    level = ["character-level"] if tokenizer.kind == "character" else ["byte-level-bpe"]
    base = run.get("base_model") or {}
    if base:
        tags = [t if t != "from-scratch" else "fine-tuned" for t in tags] + ["chat"] * chat_tuned(run)
    return ModelCardData(
        base_model=base["name"].split("@")[0] if base.get("on_hub") else None,
        license="mit",
        library_name="transformers" if kind else None,
        pipeline_tag="text-classification" if is_reward_model(run) else "text-generation",
        tags=level + tags + (["document-mode"] if tokenizer.documents else []),
        datasets=[dataset] if dataset else None,
        model_name=name,
        eval_results=results or None,
    )


def chat_tuned(run: dict) -> bool:
    """Tuned to answer in turns: by SFT on conversations, or by DPO on pairs of replies."""
    return run.get("text", {}).get("form") == "conversations" or dpo_tuned(run)


def rl_tuned(run: dict) -> bool:
    return bool(run.get("settings", {}).get("rl"))


def is_reward_model(run: dict) -> bool:
    return bool(run.get("settings", {}).get("reward_model"))


def model_kind(run: dict) -> str:
    """base, fine-tuned, chat-tuned, DPO-tuned, RL-tuned or reward model: what the app and the card call a folder."""
    if rl_tuned(run) or dpo_tuned(run):
        return "RL-tuned" if rl_tuned(run) else "DPO-tuned"
    if is_reward_model(run):
        return "reward model"
    return "chat-tuned" if chat_tuned(run) else "fine-tuned" if run.get("base_model") else "base"


def origin(run: dict) -> str:
    base = run.get("base_model")
    if not base:
        return "trained from scratch"
    learnt = f" (which learnt `{base['text']}`)" if base.get("text") else ""
    if rl_tuned(run):
        return f"RL-tuned from `{base['name']}`{learnt} with the reward `{run['settings']['rl']}`"
    if dpo_tuned(run) or is_reward_model(run):
        done = "tuned by DPO" if dpo_tuned(run) else "made into a reward model"
        return f"{done} from `{base['name']}`{learnt} on the preference pairs `{data_file(run)}`"
    return f"fine-tuned {'for chat ' * chat_tuned(run)}from `{base['name']}`{learnt}"


def base_note(run: dict) -> list[str]:
    """For a base that is a local folder: how to name it as this card's `base_model` on the Hub."""
    base = run.get("base_model") or {}
    if not base or base.get("on_hub"):
        return []
    return [
        "",
        f"The base, `{base['name']}`, is a local folder, so this card names no `base_model`: push it first "
        f"(`python -m gpt.hub push {base['name']} --repo you/{Path(base['name']).name}`) and fine-tune from that repo "
        "id, and the card links it.",
    ]


def unit(tokenizer: AnyTokenizer) -> str:
    return "character" if tokenizer.kind == "character" else "token"


def vocabulary(tokenizer: AnyTokenizer) -> str:
    """65 characters, 2,048 BPE tokens, and a chat model's turn tokens apart."""
    turns = len(tokenizer.specials)
    size = f"{tokenizer.vocab_size - turns:,} {'characters' if unit(tokenizer) == 'character' else 'BPE tokens'}"
    return size + (f" and {turns} turn tokens" if turns else "")


def data_file(run: dict) -> str:
    """The training text's file name (never this machine's path)."""
    return run.get("text", {}).get("file") or Path(run.get("data", "data")).name


def figures(config: ModelConfig, tokenizer: AnyTokenizer, run: dict) -> list[str]:
    if isinstance(config, WindowConfig):
        shape = (
            ("architecture", config.arch)
            if config.arch == "bigram"
            else (
                "architecture / layers / embedding / hidden",
                f"{config.arch} / {config.n_layer} / {config.n_embd} / {config.n_hidden}",
            )
        )
    else:
        shape = ("layers / heads / width", f"{config.n_layer} / {config.n_head} / {config.n_embd}")
    rows = [
        shape,
        (f"context ({unit(tokenizer)}s)", f"{config.block_size}"),
        ("vocabulary", vocabulary(tokenizer)),
        ("parameters", f"{config.num_params():,}"),
    ]
    if run.get("exact_val_loss") is not None:
        label = f"**validation loss** (nats per {unit(tokenizer)}, exact: `python -m gpt.eval`)"
        if chat_tuned(run):
            label = "**validation loss** on the assistant's tokens (nats per token, exact: `python -m gpt.eval`)"
        rows.append((label, f"**{run['exact_val_loss']:.4f}**"))
    if run.get("val_bits_per_byte") is not None:
        rows.append(("validation bits per byte (compares across tokenizers)", f"{run['val_bits_per_byte']:.4f}"))
    formats = [
        ("best_val_loss", "best validation loss (estimate while training)", "{:,.4f}"),
        ("final_train_loss", "train loss at that step", "{:,.4f}"),
        ("last_100_train_loss", "mean train loss over the last 100 steps", "{:,.4f}"),
        ("best_step", "at step", "{:,}"),
        ("tokens_seen", "tokens seen", "{:,}"),
        ("wall_time_s", "training wall time (s)", "{:,.0f}"),
        ("device_name", "trained on", "{}"),
    ]
    if dpo_tuned(run) or is_reward_model(run):  # the pair loss has its own section
        formats = [f for f in formats if f[0] not in ("best_val_loss", "final_train_loss")]
    for key, label, form in formats:
        value = run.get(key) if run.get(key) is not None else (run.get("device") if key == "device_name" else None)
        if value is not None:
            rows.append((label, form.format(value)))
    return ["| figure | value |", "|---|---|", *(f"| {label} | {value} |" for label, value in rows)]


GPT_ONLY = ("n_layer", "n_head", "dropout", "muon_lr")
RL_ONLY = ("rl", "group_size", "kl")
WHEN_SET = {"dpo": "dpo", "beta": "dpo", "reward_model": "reward_model", "sft": "sft"}  # shown with its stage only


def recipe(run: dict) -> str:
    """The training settings that make the recipe, as `name=value` pairs (muon_lr only with Muon, ema only when on)."""
    settings = run.get("settings", {})
    window = settings.get("arch", "gpt") != "gpt"
    keys = [
        k
        for k in RECIPE
        if k in settings
        and (k != "muon_lr" or settings.get("optimizer") == "muon")
        and (k != "ema" or settings[k])
        and (k != "tokenizer" or settings[k] != "char")
        and (k != "replay_share" or settings.get("replay"))
        and (k not in RL_ONLY or settings.get("rl"))
        and (k not in WHEN_SET or settings.get(WHEN_SET[k]))
        and not (window and k in GPT_ONLY)
        and not (not window and k in ("arch", "n_hidden"))
    ]
    pairs = [f"{k}={settings[k]}" for k in keys]
    return ", ".join(pairs + ([f"vocab_size={settings['vocab_size']}"] if settings.get("tokenizer") == "bpe" else []))


def reached(curve: list[dict], thresholds=(2.0, 1.8, 1.6, 1.55, 1.5, 1.47)) -> list[str]:
    """When the validation estimate first reached each threshold (minutes of training wall time); thresholds first
    reached at the same evaluation share one entry."""
    at: dict[int, list[float]] = {}
    for threshold in thresholds:
        first = next((i for i, c in enumerate(curve) if c["val_loss"] <= threshold and "time_s" in c), None)
        if first is not None:
            at.setdefault(first, []).append(threshold)
    return [
        f"{' and '.join(map(str, ts))} at {curve[i]['time_s'] / 60:.1f} min (step {curve[i]['step']:,})"
        for i, ts in at.items()
    ]


def example_prompt(run: dict, documents: bool) -> str:
    """A prompt from the training text (the record of it): a speaker's cue for a play, else a real opening."""
    text = run.get("text", {})
    if documents:
        return ""
    if text.get("chat") == "scene":
        return f"{text['speakers'][0]}:\n"
    return (text.get("openings") or ["\n"])[0]


FAMILY_NAMES = {"gpt2": "GPT-2", "llama": "Llama", "qwen3": "Qwen3"}
MLP_NAMES = {"gelu": "a GELU MLP", "swiglu": "a SwiGLU MLP", "relu2": "a squared-ReLU MLP"}


def architecture(config: GPTConfig) -> str:
    """The block in words, and what loads the folder (gpt/storage/layout.py)."""
    head = "tied embeddings" if config.tie_embeddings else "its own output head"
    kind = family(config)
    if kind == "gpt2":
        return (
            f"GPT-2's architecture (pre-norm blocks, causal self-attention, exact GELU, {head}), stored so that both "
            "that library and `transformers` load it."
        )
    parts = [
        "rotary positions" if config.rotary else "learnt positions",
        "RMS norm" if config.rms_norm else "layer norm",
        *(["QK-norm"] if config.qk_norm else []),
        MLP_NAMES[config.mlp],
        head,
    ]
    if kind:
        return (
            f"a modern pre-norm block ({', '.join(parts)}), stored as `transformers`' {FAMILY_NAMES[kind]} so that "
            "that library, `transformers`, vLLM and llama.cpp load it."
        )
    return (
        f"a pre-norm block of its own mix ({', '.join(parts)}), stored in that library's own layout: only it loads it."
    )


def usage(name: str, tokenizer: AnyTokenizer, kind: str | None, prompt: str, run: dict) -> list[str]:
    """How to load and prompt the model, with the library and, for a transformers family (kind), with transformers
    (which needs a non-empty prompt: a document model's gets the start of an item)."""
    hf_prompt = prompt or (run.get("text", {}).get("openings") or ["em"])[0]
    tokenizer_kind = "character" if unit(tokenizer) == "character" else "byte-level BPE"
    library = [
        "## Usage",
        "",
        "With this project's library (`pip install` its repository):",
        "",
        "```python",
        "import gpt",
        "",
        f'lm = gpt.load("{name}")',
        f"print(lm.generate({json.dumps(prompt)}, max_new_tokens=200, temperature=0.8, top_k=40))",
        "```",
        "",
        f"or from the command line: `python -m gpt.sample {name} --stream`.",
    ]
    if kind is None:
        return library + ["", "This architecture is not one `transformers` has: the folder is for the `gpt` library."]
    return library + [
        "",
        f"With transformers (it is a {FAMILY_NAMES[kind]} model with a {tokenizer_kind} tokenizer; no remote code):",
        "",
        "```python",
        "from transformers import pipeline",
        "",
        f'generate = pipeline("text-generation", model="{name}")',
        f"print(generate({json.dumps(prompt or hf_prompt)}, max_new_tokens=100, do_sample=True, temperature=0.8, "
        'top_k=40)[0]["generated_text"])',
        "```",
    ]


def chat_usage(name: str, tokenizer: AnyTokenizer, openings: list[str], context: int) -> list[str]:
    """How to talk to a chat-tuned model: its template, with the library and with transformers, saying a first
    message of its own conversations that leaves room for a reply in the context (transformers cannot go past it)."""
    known = [m for m in [*(openings or []), "Hello."] if m.strip() and not tokenizer.unknown(m)]
    known = known[:-1] if len(known) > 1 and known[-1] == "Hello." else known or [""]  # its own text first
    asked = {m: len(tokenizer.encode(turn("user", m) + "<|assistant|>")) for m in known}
    message = next((m for m, n in asked.items() if n + 8 <= context), min(asked, key=asked.get))
    said, room = json.dumps(message), max(1, min(100, context - asked[message]))
    return [
        "## Usage",
        "",
        "With this project's library (`pip install` its repository), through the model's chat template:",
        "",
        "```python",
        "import gpt",
        "from gpt.serving.chat import chat_prompt",
        "",
        f'lm = gpt.load("{name}")',
        f'prompt = chat_prompt(lm, history=[], message={said}, system="")',
        "print(lm.generate(prompt.text, stop=prompt.stop, max_new_tokens=200, temperature=0.8, top_k=40))",
        "```",
        "",
        "With transformers (its `tokenizer_config.json` carries the chat template; no remote code):",
        "",
        "```python",
        "from transformers import pipeline",
        "",
        f'chat = pipeline("text-generation", model="{name}")',
        f'messages = [{{"role": "user", "content": {said}}}]',
        f"print(chat(messages, max_new_tokens={room}, do_sample=True, temperature=0.8, top_k=40)"
        '[0]["generated_text"][-1])',
        "```",
    ]


def size(parameters: int) -> str:
    """4.80M, or the count itself below 100,000 (a ladder rung is not 0.00M)."""
    return f"{parameters / 1e6:.2f}M" if parameters >= 100_000 else f"{parameters:,}"


def model_card(config: ModelConfig, tokenizer: AnyTokenizer, metrics: dict, repo_id: str | None = None) -> str:
    """README.md: Hub metadata (with a model-index entry for the validation loss), figures, training, samples, usage."""
    run = metrics.get("run", {})
    name = repo_id or run.get("name") or "path/to/this/folder"
    kind = "document mode: one item per line" if tokenizer.documents else "running text"
    if isinstance(config, WindowConfig):
        what = LADDER[config.arch].format(w=config.block_size, e=config.n_embd, h=config.n_hidden, l=config.n_layer)
        intro = (
            f"{what}; {config.num_params():,} parameters, {kind}, {origin(run)} with the `gpt` library "
            "as a rung of the makemore ladder below its GPT. The lectures split names randomly 80/10/10; this "
            "model's validation loss is on a fixed split (every 10th name), so compare with theirs loosely."
        )
    else:
        intro = (
            f"A {'character-level' if unit(tokenizer) == 'character' else 'byte-level BPE'} GPT "
            f"({size(config.num_params())} parameters, {kind}) {origin(run)} with the `gpt` library: "
            f"{architecture(config)}"
        )
        if is_reward_model(run):
            intro += (
                " It writes nothing: it reads a conversation and gives the last reply one score, higher for what the "
                f"pairs preferred (`transformers`: `{REWARD_ARCHITECTURES[family(config)]}`, the score at the last "
                "token)."
            )
    lines = [
        f"# {run.get('name', 'GPT')}",
        "",
        intro,
        "",
        *figures(config, tokenizer, run),
    ]
    dataset = dataset_id(run)
    if run.get("command"):
        split = "every 10th line (i % 10 == 9)" if tokenizer.documents else "the last 10% of characters"
        if chat_tuned(run):
            split = "every 10th conversation, scored on the assistant's tokens only,"
        if rl_tuned(run):
            split = "every 10th prompt, whose replies the reward scores,"
        if dpo_tuned(run) or is_reward_model(run):
            split = "every 10th pair"

        data = f"Data: `{data_file(run)}`" + (f" (`{dataset}` on the Hub)" if dataset else "")
        if data_file(run).split("@")[0] == dataset:
            data = f"Data: `{data_file(run)}` on the Hub"
        data += f"; {split} held out for validation."
        replay = run.get("settings", {}).get("replay")
        if replay and not rl_tuned(run):  # RL's mix of the text is told with its figures
            share = run["settings"]["replay_share"]
            data += (
                f" A share of {share:.0%} of each batch is windows of `{Path(replay).name}` (the training 90%), "
                "learnt as text: replay of what the base model knew."
            )
        if chat_tuned(run) and metrics.get("chat_bench"):
            data += (
                " When those conversations come from text the base model was trained on, that figure flatters the "
                "model: the measures under *Chat, measured* use text neither model saw."
            )
        lines += ["", "## Training", "", data, *base_note(run), "", "```bash", public_command(run), "```"]
        if run.get("resumed_with"):
            lines += ["", "Continued by exact resume with:", "", "```bash", *run["resumed_with"], "```"]
        lines += ["", f"Recipe: {recipe(run)}."]
        language_loss = unit(tokenizer) == "character" and not chat_tuned(run) and not is_reward_model(run)
        times = reached(metrics.get("curve", [])) if language_loss else []
        if times:
            lines += ["", f"Validation loss (estimate) reached {'; '.join(times)}."]
    if rl_tuned(run):
        lines += ["", *rl_figures(run)]
    if (dpo_tuned(run) or is_reward_model(run)) and run.get("val_loss") is not None:
        lines += ["", *pair_section(run)]
    if run.get("loss_png"):
        lines += ["", "![loss curve](loss.png)"]
    samples = metrics.get("samples")
    if samples:
        lines += ["", "## Samples", "", f"`{samples['call']}`:", "", "```text", samples["text"], "```"]
    if metrics.get("chat_bench"):
        lines += ["", *chat_measured(metrics["chat_bench"])]
    if metrics.get("assistant_bench"):
        lines += ["", *assistant_measured(metrics["assistant_bench"])]
    prompt = example_prompt(run, tokenizer.documents)
    folder = repo_id or "path/to/this/folder"
    if is_reward_model(run):
        lines += ["", *reward_usage(folder, family(config))]
    elif chat_tuned(run):
        lines += ["", *chat_usage(folder, tokenizer, run.get("text", {}).get("openings"), config.block_size)]
    else:
        lines += [
            "",
            *usage(folder, tokenizer, None if isinstance(config, WindowConfig) else family(config), prompt, run),
        ]
    data = metadata(config, tokenizer, run, name)
    return str(ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines) + "\n"))
