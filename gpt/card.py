"""The model card (a folder's README.md) from its config, tokenizer and metrics: formatting only.

The figures, the training command and the samples all come from metrics.json (written by training and evaluation), so
the card can be remade at any time, for a folder or for the Hub repo it is pushed to, without running the model.
"""

from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from gpt.model import HUB_TAGS, GPTConfig
from gpt.tokenizer import CharTokenizer


def public_command(run: dict) -> str:
    """The training command with the data file named as a user would have it, not by this machine's path."""
    command, data = run.get("command", ""), run.get("data")
    return command.replace(data, Path(data).name) if data else command


def metadata(config: GPTConfig, tokenizer: CharTokenizer, run: dict, name: str) -> ModelCardData:
    dataset = run.get("settings", {}).get("dataset")
    loss = run.get("exact_val_loss")
    results = None
    if loss is not None:
        results = [EvalResult(task_type="text-generation", dataset_type=dataset or "custom",
                              dataset_name=dataset or Path(run.get("data", "data")).name, dataset_split="validation",
                              metric_type="loss", metric_name="validation loss (nats per character)",
                              metric_value=round(loss, 4))]  # fmt: skip
    return ModelCardData(
        license="mit",
        library_name="transformers",
        pipeline_tag="text-generation",
        tags=HUB_TAGS + (["document-mode"] if tokenizer.documents else []),
        datasets=[dataset] if dataset else None,
        model_name=name,
        eval_results=results,
    )


def figures(config: GPTConfig, tokenizer: CharTokenizer, run: dict) -> list[str]:
    rows = [
        ("layers / heads / width", f"{config.n_layer} / {config.n_head} / {config.n_embd}"),
        ("context (characters)", f"{config.block_size}"),
        ("vocabulary", f"{tokenizer.vocab_size} characters"),
        ("parameters", f"{config.num_params():,}"),
    ]
    if run.get("exact_val_loss") is not None:
        rows.append(("**validation loss** (exact: `python -m gpt.eval`)", f"**{run['exact_val_loss']:.4f}**"))
    formats = [("best_val_loss", "best validation loss (estimate while training)", "{:,.4f}"),
               ("final_train_loss", "train loss at that step", "{:,.4f}"), ("best_step", "at step", "{:,}"),
               ("tokens_seen", "tokens seen", "{:,}"), ("wall_time_s", "training wall time (s)", "{:,.0f}"),
               ("device_name", "trained on", "{}")]  # fmt: skip
    for key, label, form in formats:
        value = run.get(key) if run.get(key) is not None else (run.get("device") if key == "device_name" else None)
        if value is not None:
            rows.append((label, form.format(value)))
    return ["| figure | value |", "|---|---|", *(f"| {label} | {value} |" for label, value in rows)]


RECIPE = ["n_layer", "n_head", "n_embd", "block_size", "dropout", "batch_size", "max_steps", "optimizer", "lr",
          "muon_lr", "min_lr", "schedule", "warmup_steps", "weight_decay"]  # fmt: skip


def recipe(run: dict) -> str:
    """The training settings that make the recipe, as `name=value` pairs (muon_lr only when Muon was used)."""
    settings = run.get("settings", {})
    keys = [k for k in RECIPE if k in settings and (k != "muon_lr" or settings.get("optimizer") == "muon")]
    return ", ".join(f"{k}={settings[k]}" for k in keys)


def reached(curve: list[dict], thresholds=(2.0, 1.8, 1.6, 1.55, 1.5, 1.47)) -> list[str]:
    """When the validation estimate first reached each threshold (minutes of training wall time)."""
    out = []
    for threshold in thresholds:
        first = next((c for c in curve if c["val_loss"] <= threshold and "time_s" in c), None)
        if first:
            out.append(f"{threshold} at {first['time_s'] / 60:.1f} min (step {first['step']:,})")
    return out


def usage(name: str, documents: bool) -> list[str]:
    prompt = "" if documents else "ROMEO:"
    return [
        "## Usage",
        "",
        "With this project's library (`pip install` its repository):",
        "",
        "```python",
        "import gpt",
        "",
        f'lm = gpt.load("{name}")',
        f"print(lm.generate({prompt!r}, max_new_tokens=200, temperature=0.8, top_k=40))",
        "```",
        "",
        f"or from the command line: `python -m gpt.sample {name} --stream`.",
        "",
        "With transformers (it is a GPT-2 model with a character tokenizer; no remote code):",
        "",
        "```python",
        "from transformers import pipeline",
        "",
        f'generate = pipeline("text-generation", model="{name}")',
        f"print(generate({prompt or 'em'!r}, max_new_tokens=100, do_sample=True, temperature=0.8, top_k=40)"
        '[0]["generated_text"])',
        "```",
    ]


def model_card(config: GPTConfig, tokenizer: CharTokenizer, metrics: dict, repo_id: str | None = None) -> str:
    """README.md: Hub metadata (with a model-index entry for the validation loss), figures, training, samples, usage."""
    run = metrics.get("run", {})
    name = repo_id or run.get("name") or "path/to/this/folder"
    kind = "document mode: one item per line" if tokenizer.documents else "running text"
    lines = [
        f"# {run.get('name', 'GPT')}",
        "",
        f"A character-level GPT ({config.num_params() / 1e6:.2f}M parameters, {kind}) trained from scratch with the "
        "`gpt` library: GPT-2's architecture (pre-norm blocks, causal self-attention, exact GELU, tied embeddings), "
        "stored so that both that library and `transformers` load it.",
        "",
        *figures(config, tokenizer, run),
    ]
    if run.get("command"):
        split = "every 10th line (i % 10 == 9)" if tokenizer.documents else "the last 10% of characters"
        data = f"Data: `{Path(run.get('data', '')).name}`; {split} held out for validation."
        lines += ["", "## Training", "", data, "", "```bash", public_command(run), "```", "", f"Recipe: {recipe(run)}."]
        times = reached(metrics.get("curve", []))
        if times:
            lines += ["", f"Validation loss (estimate) reached {'; '.join(times)}."]
    if run.get("loss_png"):
        lines += ["", "![loss curve](loss.png)"]
    samples = metrics.get("samples")
    if samples:
        lines += ["", "## Samples", "", f"`{samples['call']}`:", "", "```text", samples["text"], "```"]
    lines += ["", *usage(repo_id or "path/to/this/folder", tokenizer.documents)]
    data = metadata(config, tokenizer, run, name)
    return str(ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines) + "\n"))
