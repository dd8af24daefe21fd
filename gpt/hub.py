"""Model folders on disk and on the Hugging Face Hub: save atomically, load by path or repo id, write the card.

A model folder is config.json + model.safetensors + tokenizer.json + README.md (the model card) + metrics.json,
the same files locally and in a Hub repo, so one loader serves both.
"""

import functools
import json
import os
import re
import tempfile
from pathlib import Path

import torch
from huggingface_hub import ModelCard, ModelCardData, snapshot_download
from huggingface_hub.errors import (
    HfHubHTTPError,
    HFValidationError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from gpt.generate import LM
from gpt.model import GPT, ModelFileError
from gpt.tokenizer import CharTokenizer

MODEL_FILES = ["config.json", "model.safetensors", "tokenizer.json", "README.md", "metrics.json", "loss.png"]
REQUIRED_FILES = ["config.json", "model.safetensors", "tokenizer.json"]
REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")


class ModelNotFoundError(ValueError):
    """No model at that path or repo id; the message says what was tried and what to do."""


def pick_device(device: str | None = None) -> torch.device:
    """cuda, then mps, then cpu, unless one is named."""
    if device and device != "auto":
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def is_repo_id(name: str) -> bool:
    return bool(REPO_ID.match(name)) and ".." not in name and not name.endswith((".", "-"))


def resolve(path_or_repo_id: str | Path, revision: str | None = None) -> Path:
    """A local folder holding the model files: the folder itself, or the Hub snapshot (through the HF cache)."""
    name = str(path_or_repo_id)
    if os.path.isdir(name):
        folder = Path(name)
    elif os.path.exists(name) or name.startswith((".", "/", "~")) or name.count("/") != 1 or not is_repo_id(name):
        raise ModelNotFoundError(
            f"{name!r} is neither a model folder nor a Hub repo id: give a folder with config.json, "
            f"model.safetensors and tokenizer.json, or a repo id like 'owner/name'"
        )
    else:
        try:
            folder = Path(snapshot_download(name, revision=revision, allow_patterns=MODEL_FILES))
        except RevisionNotFoundError:
            raise ModelNotFoundError(f"{name}: revision {revision!r} does not exist on the Hub") from None
        except RepositoryNotFoundError:
            raise ModelNotFoundError(
                f"{name}: no such model repo on the Hub (or it is private: log in first)"
            ) from None
        except LocalEntryNotFoundError:
            raise ModelNotFoundError(
                f"{name}: not in the local Hugging Face cache and the Hub cannot be reached (HF_HUB_OFFLINE or no "
                f"network): download it once while online"
            ) from None
        except HFValidationError as e:
            raise ModelNotFoundError(f"{name!r} is not a valid repo id ({e})") from None
        except HfHubHTTPError as e:
            raise ModelNotFoundError(f"{name}: the Hub refused the download ({e})") from None
    missing = [f for f in REQUIRED_FILES if not (folder / f).is_file()]
    if missing:
        raise ModelFileError(f"{name}: {', '.join(missing)} missing (a model folder needs {', '.join(REQUIRED_FILES)})")
    return folder


def load(path_or_repo_id: str | Path, device: str | None = None, revision: str | None = None) -> LM:
    """Load a model folder or Hub repo (optionally at a revision) onto a device (default: the best available)."""
    folder = resolve(path_or_repo_id, revision)
    model = GPT.from_pretrained(folder)
    tokenizer = CharTokenizer.load(folder / "tokenizer.json")
    lm = LM(model.to(pick_device(device)), tokenizer)
    lm.folder = folder
    return lm


@functools.lru_cache(maxsize=4)
def load_cached(path_or_repo_id: str, revision: str | None = None) -> LM:
    """load() once per name: the app and the server share loaded models."""
    return load(path_or_repo_id, revision=revision)


def split_revision(name: str) -> tuple[str, str | None]:
    """'owner/name@revision' -> ('owner/name', 'revision'); a local folder is never split."""
    if "@" in name and not os.path.isdir(name):
        repo, revision = name.rsplit("@", 1)
        if not revision:
            raise ModelNotFoundError(f"{name!r}: nothing after '@' (give a branch, tag or commit id)")
        return repo, revision
    return name, None


def local_models(root: str | Path) -> list[str]:
    """Model folders directly under root (those with a config.json)."""
    root = Path(root)
    return sorted(str(p.parent) for p in root.glob("*/config.json")) if root.is_dir() else []


def describe(lm: LM) -> dict:
    """What the app shows about a model: architecture, size, device and the training figures."""
    run = read_metrics(lm.folder).get("run", {}) if lm.folder else {}
    keys = ["best_val_loss", "tokens_seen", "wall_time_s", "device", "device_name", "command"]
    return {
        "folder": str(lm.folder) if lm.folder else None,
        "parameters": lm.model.num_params(),
        "device": str(lm.device),
        "document_mode": lm.tokenizer.documents,
        "vocab": "".join(lm.tokenizer.chars),
        "config": vars(lm.model.config),
        "training": {k: run[k] for k in keys if k in run},
    }


def read_metrics(folder: str | Path) -> dict:
    path = Path(folder) / "metrics.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def file_mode() -> int:
    """Permissions a plain open() would give (temporary files are private by default)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def write_atomic(path: Path, write) -> None:
    """write(tmp_path) beside the target, then rename over it: a reader never sees a half-written file."""
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", delete=False) as f:
        tmp = Path(f.name)
    try:
        write(tmp)
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save_folder(
    model: GPT,
    tokenizer: CharTokenizer,
    out: str | Path,
    metrics: dict | None = None,
    dtype: torch.dtype = torch.float32,
) -> None:
    """Write the model folder atomically: every file is written aside, then moved into place."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out, prefix=".saving-") as tmp:
        tmp = Path(tmp)
        weights = model
        if dtype != torch.float32 or next(model.parameters()).device.type != "cpu":
            weights = GPT(model.config)
            weights.load_state_dict(model.state_dict())
            weights.to(dtype)
        if metrics is not None:
            (tmp / "metrics.json").write_text(json.dumps(metrics, indent=1))
        model_card(model, tokenizer, metrics or {}).save(tmp / "README.md")
        tokenizer.save(tmp / "tokenizer.json")
        weights.save_pretrained(tmp)
        for f in tmp.iterdir():
            os.chmod(f, file_mode())
            os.replace(f, out / f.name)


def model_card(model: GPT, tokenizer: CharTokenizer, metrics: dict) -> ModelCard:
    """The README.md of a model folder: Hub metadata, what the model is, how it was trained, how to use it."""
    cfg = model.config
    run = metrics.get("run", {})
    data_name = run.get("data_name")
    card_data = ModelCardData(
        license="mit",
        library_name="pytorch",
        pipeline_tag="text-generation",
        tags=["gpt", "character-level", "text-generation", "pytorch_model_hub_mixin"],
        datasets=[data_name] if data_name else None,
    )
    kind = "document-mode (one item per line)" if tokenizer.documents else "running-text"
    lines = [
        f"# {run.get('name', 'GPT')}",
        "",
        f"A character-level GPT ({model.num_params() / 1e6:.2f}M parameters, {kind}) trained from scratch with this "
        f"project's `gpt.train`.",
        "",
        "| | |",
        "|---|---|",
        f"| layers / heads / width | {cfg.n_layer} / {cfg.n_head} / {cfg.n_embd} |",
        f"| context (characters) | {cfg.block_size} |",
        f"| vocabulary | {tokenizer.vocab_size} characters |",
    ]
    for key, label in [
        ("best_val_loss", "best validation loss"),
        ("final_train_loss", "train loss at that point"),
        ("tokens_seen", "tokens seen"),
        ("wall_time_s", "training wall time (s)"),
        ("device", "trained on"),
    ]:
        if key in run:
            value = run[key]
            lines.append(f"| {label} | {value:.4f} |" if isinstance(value, float) else f"| {label} | {value} |")
    if run.get("command"):
        lines += ["", "## Training", "", "```bash", run["command"], "```"]
    if metrics.get("curve"):
        lines += ["", "![loss curve](loss.png)"] if run.get("loss_png") else []
    lines += [
        "",
        "## Usage",
        "",
        "```python",
        "import gpt",
        "",
        'lm = gpt.load("path/to/this/folder")  # or a Hub repo id: gpt.load("owner/name")',
        'print(lm.generate("ROMEO:", max_new_tokens=200, temperature=0.8, top_k=40, seed=0))',
        "```",
    ]
    content = f"---\n{card_data.to_yaml()}\n---\n\n" + "\n".join(lines) + "\n"
    return ModelCard(content)
