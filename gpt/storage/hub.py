"""The Hugging Face Hub: a repo id resolved to a downloaded folder (for `gpt.load`), a folder published
(python -m gpt.hub push) and the app deployed as a Space (python -m gpt.hub deploy). Network only: the folder
format is gpt/storage/folder.py's.

A repo holds the same files as a local model folder, so one loader serves both: a repo id is downloaded through the
HF cache and then loaded as a folder.
"""

import argparse
import os
import re
import sys
from pathlib import Path

import httpx2
from huggingface_hub import (
    CommitOperationAdd,
    CommitOperationDelete,
    HfApi,
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

import gpt
from gpt.storage.card import model_card
from gpt.storage.folder import FOLDER_FILES, read_config, read_folder, read_metrics
from gpt.storage.layout import family

REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")


class ModelNotFoundError(ValueError):
    """No model at that path or repo id; the message says what was tried and what to do."""


class HubError(ValueError):
    """A Hub operation cannot go ahead; the message says what to do."""


def is_repo_id(name: str) -> bool:
    return bool(REPO_ID.match(name)) and ".." not in name and not name.endswith((".", "-"))


def split_revision(name: str, revision: str | None = None) -> tuple[str, str | None]:
    """'owner/name@revision' -> ('owner/name', 'revision'); a local folder is never split."""
    if "@" not in name or os.path.isdir(name):
        return name, revision
    repo, pinned = name.rsplit("@", 1)
    if not pinned:
        raise ModelNotFoundError(f"{name!r}: nothing after '@' (give a branch, tag or commit id)")
    if revision and revision != pinned:
        raise ModelNotFoundError(f"{name!r} pins revision {pinned!r} but revision {revision!r} was also given")
    return repo, pinned


def resolve(path_or_repo_id: str | Path, revision: str | None = None, token: str | None = None) -> Path:
    """A local folder holding the model files: the folder itself, or the Hub snapshot (through the HF cache)."""
    name, revision = split_revision(str(path_or_repo_id), revision)
    if os.path.isdir(name):
        return Path(name)
    if os.path.exists(name) or name.startswith((".", "/", "~")) or name.count("/") != 1 or not is_repo_id(name):
        raise ModelNotFoundError(
            f"{name!r} is neither a model folder nor a Hub repo id: give a folder with config.json, "
            f"model.safetensors and tokenizer.json, or a repo id like 'owner/name'"
        )
    try:
        return Path(snapshot_download(name, revision=revision, allow_patterns=FOLDER_FILES, token=token))
    except RevisionNotFoundError:
        raise ModelNotFoundError(f"{name}: revision {revision!r} does not exist on the Hub") from None
    except RepositoryNotFoundError:
        raise ModelNotFoundError(
            f"{name}: no such model repo on the Hub (or it is private: log in, or pass a token)"
        ) from None
    except LocalEntryNotFoundError:
        raise ModelNotFoundError(
            f"{name}: not in the local Hugging Face cache and the Hub cannot be reached (HF_HUB_OFFLINE or no "
            f"network): download it once while online"
        ) from None
    except HFValidationError as e:
        raise ModelNotFoundError(f"{name!r} is not a valid repo id ({e})") from None
    except HfHubHTTPError as e:
        raise ModelNotFoundError(f"{name}: the Hub refused the download ({str(e).splitlines()[0]})") from None


# Publishing.


def hub_api(token: str | None = None) -> HfApi:
    token = token or get_token()
    if not token:
        raise HubError("no Hugging Face token: run `hf auth login` or set HF_TOKEN to a token with write access")
    return HfApi(token=token)


def checked_repo_id(repo_id: str) -> str:
    if not is_repo_id(repo_id):
        raise HubError(f"{repo_id!r} is not a valid repo id: use owner/name (letters, digits, '-', '_', '.')")
    return repo_id


def push(
    folder: str | Path, repo_id: str, private: bool = False, revision: str | None = None, message: str | None = None
) -> tuple[str, str]:
    """Upload a model folder (with its card remade for the repo) in one commit; returns (repo URL, commit id)."""
    checked_repo_id(repo_id)
    folder = Path(folder)
    if not folder.is_dir():
        raise HubError(f"{folder}: no such model folder")
    model, tokenizer = read_folder(folder)  # a folder that does not load is not pushed
    config, layout = read_config(folder)
    if layout is None and family(config):  # a GPT of a transformers family, stored in this library's first format
        raise HubError(f"{folder} is in the first folder format: run `python -m gpt.folder upgrade {folder}` first")
    api = hub_api()
    repo_url = api.create_repo(repo_id, private=private, exist_ok=True)
    if revision:
        api.create_branch(repo_id, branch=revision, exist_ok=True)
    card = model_card(model.config, tokenizer, read_metrics(folder), repo_id=repo_id)
    ops = [CommitOperationAdd("README.md", card.encode())]
    ops += [CommitOperationAdd(f, str(folder / f)) for f in FOLDER_FILES if f != "README.md" and (folder / f).is_file()]
    info = api.create_commit(repo_id, ops, commit_message=message or f"Upload {folder.name}", revision=revision)
    return str(repo_url), info.oid


def pinned_version(requirements: Path, package: str) -> str:
    """The version a requirements file pins a package to (`gradio==X` or with extras, `gradio[mcp]==X`)."""
    for line in requirements.read_text().splitlines():
        name = re.split(r"[\[=<>~! ]", line.strip(), maxsplit=1)[0].lower()
        if name == package and "==" in line:
            return line.split("==", 1)[1].split("#")[0].strip()
    raise HubError(f"{requirements} does not pin {package} (the Space's sdk_version comes from there)")


def space_card(space_id: str, model: str | None, sdk_version: str, python_version: str) -> str:
    """The Space's README.md: front matter the Hub reads to build and run the Gradio app."""
    repo = split_revision(model)[0] if model else None
    data = SpaceCardData(
        title=space_id.split("/")[1],
        sdk="gradio",
        sdk_version=sdk_version,
        python_version=python_version,
        app_file="app.py",
        license="mit",
        models=[repo] if repo else None,
        emoji="🎭",
        colorFrom="yellow",
        colorTo="red",
        short_description="Chat with a small character-level GPT trained from scratch",
        preload_from_hub=[f"{repo} {','.join(FOLDER_FILES)}"] if repo else None,
    )
    body = (
        f"# {data.title}\n\nA small character-level GPT trained from scratch: streaming chat, a completion playground "
        "that shows token probabilities and attention, and a model picker. Runs on CPU, CUDA or ZeroGPU.\n"
    )
    return str(SpaceCard(f"---\n{data.to_yaml()}\n---\n\n{body}"))


def deploy(
    space_id: str,
    files: dict[str, Path],
    variable: str,
    model: str | None = None,
    bundle: str | Path | None = None,
    hardware: str | None = None,
    private: bool = False,
    share_token: bool = False,
    python_version: str = "3.11",
) -> str:
    """Create or update a Gradio Space running the app on a Hub model (owner/name[@revision]) or on a bundled
    folder, so that it holds exactly these files; returns its URL.

    files: the app's files (path in the Space -> local path), one of them requirements.txt; variable: the environment
    variable that names the model to the app. share_token: store the caller's token as the Space secret HF_TOKEN, so
    the Space can read a private model.
    """
    checked_repo_id(space_id)
    if model and bundle:
        raise HubError("give --model or --bundle, not both")
    if not model and not bundle:
        raise HubError("give --model owner/name (a Hub model) or --bundle FOLDER (a model folder to upload)")
    api = hub_api()
    if model:
        repo, revision = split_revision(model)
        checked_repo_id(repo)
        try:
            api.model_info(repo, revision=revision)  # a clear error now rather than a Space that fails at start
        except RevisionNotFoundError:
            raise HubError(f"{model}: revision {revision!r} does not exist on the Hub") from None
        except RepositoryNotFoundError:
            raise HubError(f"{repo}: no such model repo on the Hub (or your token cannot read it)") from None
    else:
        bundle = Path(bundle)
        read_folder(bundle)
    wanted = {"README.md": None, **files}
    if bundle:
        wanted |= {f"weights/{bundle.name}/{f}": bundle / f for f in FOLDER_FILES if (bundle / f).is_file()}
    card = space_card(space_id, model, pinned_version(files["requirements.txt"], "gradio"), python_version)
    api.create_repo(
        space_id, repo_type="space", space_sdk="gradio", space_hardware=hardware, private=private, exist_ok=True
    )
    present = set(api.list_repo_files(space_id, repo_type="space"))
    ops = [CommitOperationAdd("README.md", card.encode())]
    ops += [CommitOperationAdd(path, str(local)) for path, local in wanted.items() if local is not None]
    ops += [CommitOperationDelete(path) for path in sorted(present - wanted.keys() - {".gitattributes"})]
    api.create_commit(space_id, ops, repo_type="space", commit_message="Deploy the gpt app")
    api.add_space_variable(space_id, variable, model or f"weights/{bundle.name}")
    if share_token:
        api.add_space_secret(space_id, "HF_TOKEN", api.token, description="reads the private model the app serves")
    return f"{constants.ENDPOINT}/spaces/{space_id}"


def app_files(root: Path) -> dict[str, Path]:
    """What a Space needs to run app.py: the app, its requirements and the gpt package (no tests or benchmarks)."""
    files = {"app.py": root / "app.py", "requirements.txt": root / "requirements.txt"}
    package = [p for p in (root / "gpt").rglob("*") if p.suffix in (".py", ".json", ".css", ".html")]  # code, data
    return files | {p.relative_to(root).as_posix(): p for p in sorted(package) if "__pycache__" not in p.parts}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog=gpt.prog("gpt.hub"), description="Publish models and deploy the app.")
    sub = p.add_subparsers(dest="command", required=True)
    push_p = sub.add_parser("push", help="upload a model folder to a Hub model repo (one commit)")
    push_p.add_argument("folder", help="model folder, e.g. weights/shakespeare-char")
    push_p.add_argument("--repo", required=True, help="owner/name of the model repo (created if needed)")
    push_p.add_argument("--private", action="store_true", help="create the repo private")
    push_p.add_argument("--revision", help="branch to commit to (created if needed)")
    push_p.add_argument("--message", help="commit message")
    deploy_p = sub.add_parser("deploy", help="create or update a Gradio Space running this app")
    deploy_p.add_argument("--space", required=True, help="owner/name of the Space")
    deploy_p.add_argument("--model", help="Hub model the Space serves, owner/name[@revision] (preloaded at build)")
    deploy_p.add_argument("--bundle", help="model folder uploaded with the app (default: weights/shakespeare-char)")
    deploy_p.add_argument("--hardware", help="cpu-basic, zero-a10g, t4-small, ... (default: the Hub's)")
    deploy_p.add_argument("--private", action="store_true", help="create the Space private")
    deploy_p.add_argument(
        "--share-token",
        action="store_true",
        help="store your token as the Space secret HF_TOKEN to read a private model",
    )
    args = p.parse_args(argv)
    try:
        if args.command == "push":
            url, commit = push(args.folder, args.repo, args.private, args.revision, args.message)
            print(f"pushed {args.folder} to {url} (commit {commit})")
        else:
            root = Path(__file__).resolve().parents[2]
            bundle = None if args.model else (args.bundle or root / "weights" / "shakespeare-char")
            url = deploy(
                args.space,
                app_files(root),
                "MODEL_ID",
                args.model,
                bundle,
                args.hardware,
                args.private,
                args.share_token,
            )
            print(f"deployed: {url}")
    except (HubError, ModelNotFoundError, ValueError, FileNotFoundError) as e:
        sys.exit(f"error: {e}")
    except HfHubHTTPError as e:
        sys.exit(f"error: the Hub refused: {str(e).splitlines()[0]}")
    except (httpx2.TransportError, OSError) as e:  # no network, a proxy or DNS that fails, a Hub that does not answer
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        sys.exit(f"error: cannot reach the Hub at {constants.ENDPOINT} ({reason}): check the network and try again")


if __name__ == "__main__":
    main()
