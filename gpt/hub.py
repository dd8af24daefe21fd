"""Model folders on disk and on the Hugging Face Hub: save atomically, load by path or repo id, write the card,
publish a folder (python -m gpt.hub push) and deploy the app as a Space (python -m gpt.hub deploy).

A model folder is config.json + model.safetensors + tokenizer.json + README.md (the model card) + metrics.json
(+ loss.png), the same files locally and in a Hub repo, so one loader serves both.
"""

import argparse
import functools
import json
import os
import re
import shutil
import sys
from pathlib import Path

import torch
from huggingface_hub import (
    CommitOperationAdd,
    HfApi,
    ModelCard,
    ModelCardData,
    SpaceCard,
    SpaceCardData,
    constants,
    get_token,
    snapshot_download,
)
from huggingface_hub.errors import (
    HfHubHTTPError,
    HFValidationError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from gpt.folder import REQUIRED_FILES, file_mode, fresh_dir, missing_files
from gpt.generate import LM
from gpt.model import GPT, ModelFileError
from gpt.tokenizer import CharTokenizer

MODEL_FILES = ["config.json", "model.safetensors", "tokenizer.json", "README.md", "metrics.json", "loss.png"]
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
    missing = missing_files(folder)
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


def read_metrics(folder: str | Path) -> dict:
    path = Path(folder) / "metrics.json"
    return json.loads(path.read_text()) if path.is_file() else {}


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
    tmp = fresh_dir(out / ".saving")
    try:
        weights = model
        if dtype != torch.float32 or next(model.parameters()).device.type != "cpu":
            weights = GPT(model.config)
            weights.load_state_dict(model.state_dict())
            weights.to(dtype)
        if metrics is not None:
            (tmp / "metrics.json").write_text(json.dumps(metrics, indent=1))
        model_card(LM(model, tokenizer), metrics or {}, samples=False).save(tmp / "README.md")
        tokenizer.save(tmp / "tokenizer.json")
        weights.save_pretrained(tmp)
        for name in [
            "model.safetensors",
            "config.json",
            "tokenizer.json",
            "metrics.json",
            "README.md",
        ]:  # weights first
            if (tmp / name).is_file():
                os.chmod(tmp / name, file_mode())
                os.replace(tmp / name, out / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


SAMPLE_SETTINGS = dict(max_new_tokens=300, temperature=0.8, top_k=40, seed=0)


def model_card(lm: LM, metrics: dict, repo_id: str | None = None, samples: bool = True) -> ModelCard:
    """The README.md of a model folder: Hub metadata, what the model is, its figures, samples and usage."""
    cfg, tokenizer = lm.model.config, lm.tokenizer
    run = metrics.get("run", {})
    card_data = ModelCardData(
        license="mit",
        library_name="pytorch",
        pipeline_tag="text-generation",
        tags=["gpt", "character-level", "text-generation", "pytorch_model_hub_mixin"],
        datasets=[run["settings"]["dataset"]] if run.get("settings", {}).get("dataset") else None,
    )
    kind = "document mode: one item per line" if tokenizer.documents else "running text"
    lines = [
        f"# {run.get('name', 'GPT')}",
        "",
        f"A character-level GPT ({lm.model.num_params() / 1e6:.2f}M parameters, {kind}) trained from scratch with "
        "this project's `gpt.train`: pre-norm transformer blocks with causal self-attention, tied input/output "
        "embeddings, safetensors weights.",
        "",
        "| | |",
        "|---|---|",
        f"| layers / heads / width | {cfg.n_layer} / {cfg.n_head} / {cfg.n_embd} |",
        f"| context (characters) | {cfg.block_size} |",
        f"| vocabulary | {tokenizer.vocab_size} characters |",
        f"| parameters | {lm.model.num_params():,} |",
    ]
    if run.get("exact_val_loss"):
        lines.append(f"| **validation loss** (exact: `python -m gpt.eval`) | **{run['exact_val_loss']:.4f}** |")
    figures = [
        ("best_val_loss", "best validation loss (estimate while training)"),
        ("final_train_loss", "train loss at that step"),
        ("best_step", "at step"),
        ("tokens_seen", "tokens seen"),
        ("wall_time_s", "training wall time (s)"),
        ("device_name", "trained on"),
    ]
    for key, label in figures:
        value = run.get(key) or (run.get("device") if key == "device_name" else None)
        if isinstance(value, float):
            lines.append(f"| {label} | {value:,.0f} |" if key == "wall_time_s" else f"| {label} | {value:,.4f} |")
        elif value is not None:
            lines.append(f"| {label} | {value:,} |" if isinstance(value, int) else f"| {label} | {value} |")
    if run.get("command"):
        split = "the last 10% of characters" if not tokenizer.documents else "every 10th line (i % 10 == 9)"
        data = f"Data: `{Path(run.get('data', '')).name}`; {split} held out for validation."
        lines += ["", "## Training", "", data, "", "```bash", run["command"], "```"]
    if run.get("loss_png"):
        lines += ["", "![loss curve](loss.png)"]
    if samples:
        if tokenizer.documents:
            settings = {**SAMPLE_SETTINGS, "max_new_tokens": cfg.block_size}
            call = f"lm.generate_batch([''] * 12, {', '.join(f'{k}={v}' for k, v in settings.items())})"
            text = "\n".join(lm.generate_batch([""] * 12, **settings))
        else:
            call = f"lm.generate('\\n', {', '.join(f'{k}={v}' for k, v in SAMPLE_SETTINGS.items())})"
            text = lm.generate("\n", **SAMPLE_SETTINGS).strip("\n")
        lines += ["", "## Samples", "", f"`{call}`:", "", "```text", text, "```"]
    name = repo_id or "path/to/this/folder"
    lines += [
        "",
        "## Usage",
        "",
        "```python",
        "import gpt  # this project's library: pip install -r requirements.txt in its repository",
        "",
        f'lm = gpt.load("{name}")',
        f"print(lm.generate({'' if tokenizer.documents else 'ROMEO:'!r}, max_new_tokens=200, temperature=0.8))",
        "```",
        "",
        "or from the command line: `python -m gpt.sample " + name + " --stream`.",
    ]
    return ModelCard(f"---\n{card_data.to_yaml()}\n---\n\n" + "\n".join(lines) + "\n")


# Publishing.


class HubError(ValueError):
    """A Hub operation cannot go ahead; the message says what to do."""


def hub_api() -> HfApi:
    token = get_token()
    if not token:
        raise HubError("no Hugging Face token: run `hf auth login` or set HF_TOKEN to a token with write access")
    return HfApi(token=token)


def checked_repo_id(repo_id: str) -> str:
    if not is_repo_id(repo_id):
        raise HubError(f"{repo_id!r} is not a valid repo id: use owner/name (letters, digits, '-', '_', '.')")
    return repo_id


def push(folder: str | Path, repo_id: str, private: bool = False, revision: str | None = None,
         message: str | None = None) -> tuple[str, str]:  # fmt: skip
    """Upload a model folder (with its card regenerated for the repo) in one commit; returns (repo URL, commit id)."""
    checked_repo_id(repo_id)
    folder = Path(folder)
    if not folder.is_dir():
        raise HubError(f"{folder}: no such model folder")
    lm = load(folder, device="cpu")
    api = hub_api()
    repo_url = api.create_repo(repo_id, private=private, exist_ok=True)
    if revision:
        api.create_branch(repo_id, branch=revision, exist_ok=True)
    card = str(model_card(lm, read_metrics(folder), repo_id=repo_id)).encode()
    ops = [CommitOperationAdd("README.md", card)]
    ops += [CommitOperationAdd(f, str(folder / f)) for f in MODEL_FILES if f != "README.md" and (folder / f).is_file()]
    info = api.create_commit(repo_id, ops, commit_message=message or f"Upload {folder.name}", revision=revision)
    return str(repo_url), info.oid


APP_FILES = ["app.py", "requirements.txt"]


def space_card(space_id: str, model: str | None) -> SpaceCard:
    """The Space's README.md: front matter the Hub reads to build and run the Gradio app."""
    import gradio

    data = SpaceCardData(
        title=space_id.split("/")[1],
        sdk="gradio",
        sdk_version=gradio.__version__,
        python_version=f"{sys.version_info.major}.{sys.version_info.minor}",
        app_file="app.py",
        license="mit",
        models=[model] if model else None,
        emoji="🎭",
        colorFrom="yellow",
        colorTo="red",
        short_description="Chat with a small character-level GPT trained from scratch",
        preload_from_hub=[f"{model} {','.join(MODEL_FILES)}"] if model else None,
    )
    body = (
        f"# {data.title}\n\nA small character-level GPT trained from scratch: streaming chat, a completion playground "
        "that shows token probabilities and attention, and a model picker. Runs on CPU, CUDA or ZeroGPU.\n"
    )
    return SpaceCard(f"---\n{data.to_yaml()}\n---\n\n{body}")


def deploy(space_id: str, model: str | None = None, bundle: str | Path | None = None, hardware: str | None = None,
           private: bool = False) -> str:  # fmt: skip
    """Create (or update) a Gradio Space running app.py on a Hub model or on a bundled folder; returns its URL."""
    checked_repo_id(space_id)
    if model and bundle:
        raise HubError("give --model or --bundle, not both")
    root = Path(__file__).resolve().parents[1]
    if model:
        checked_repo_id(model)
    else:
        bundle = Path(bundle) if bundle else root / "weights" / "shakespeare-char"
        resolve(bundle)  # a clear error now rather than a broken Space later
    api = hub_api()
    api.create_repo(space_id, repo_type="space", space_sdk="gradio", space_hardware=hardware, private=private,
                    exist_ok=True)  # fmt: skip
    ops = [CommitOperationAdd("README.md", str(space_card(space_id, model)).encode())]
    ops += [CommitOperationAdd(f, str(root / f)) for f in APP_FILES]
    ops += [CommitOperationAdd(f"gpt/{p.name}", str(p)) for p in sorted((root / "gpt").glob("*.py"))]
    if bundle:
        bundle = Path(bundle)
        ops += [CommitOperationAdd(f"weights/{bundle.name}/{f}", str(bundle / f)) for f in MODEL_FILES
                if (bundle / f).is_file()]  # fmt: skip
    api.create_commit(space_id, ops, repo_type="space", commit_message="Deploy the gpt app")
    api.add_space_variable(space_id, "MODEL_ID", model or f"weights/{Path(bundle).name}")
    return f"{constants.ENDPOINT}/spaces/{space_id}"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m gpt.hub", description="Publish models and deploy the app.")
    sub = p.add_subparsers(dest="command", required=True)
    push_p = sub.add_parser("push", help="upload a model folder to a Hub model repo (one commit)")
    push_p.add_argument("folder", help="model folder, e.g. weights/shakespeare-char")
    push_p.add_argument("--repo", required=True, help="owner/name of the model repo (created if needed)")
    push_p.add_argument("--private", action="store_true", help="create the repo private")
    push_p.add_argument("--revision", help="branch to commit to (created if needed)")
    push_p.add_argument("--message", help="commit message")
    deploy_p = sub.add_parser("deploy", help="create or update a Gradio Space running this app")
    deploy_p.add_argument("--space", required=True, help="owner/name of the Space")
    deploy_p.add_argument("--model", help="Hub model repo the Space serves (preloaded at build time)")
    deploy_p.add_argument("--bundle", help="model folder uploaded with the app (default: weights/shakespeare-char)")
    deploy_p.add_argument("--hardware", help="cpu-basic, zero-a10g, t4-small, ... (default: the Hub's)")
    deploy_p.add_argument("--private", action="store_true", help="create the Space private")
    args = p.parse_args(argv)
    try:
        if args.command == "push":
            url, commit = push(args.folder, args.repo, args.private, args.revision, args.message)
            print(f"pushed {args.folder} to {url} (commit {commit})")
        else:
            print(f"deployed: {deploy(args.space, args.model, args.bundle, args.hardware, args.private)}")
    except (HubError, ModelNotFoundError, ModelFileError, FileNotFoundError) as e:
        sys.exit(f"error: {e}")
    except HfHubHTTPError as e:
        sys.exit(f"error: the Hub refused: {str(e).splitlines()[0]}")


if __name__ == "__main__":
    main()
