"""The model folder on disk: its files, read and written (the checks: gpt/storage/folder_checks.py; a GPT's layout:
gpt/storage/layout.py; writes: gpt/storage/atomic.py).

A GPT's folder is what `transformers` reads as one of its own architectures (GPT-2, Llama or Qwen3, by the block), so
the same files serve this library, transformers, the Hub and the engines that run them:
- config.json and model.safetensors: that architecture's (gpt/storage/layout.py);
- tokenizer.json + tokenizer_config.json (gpt/models/tokenizer.py), README.md (the card, gpt/storage/card.py),
  metrics.json, loss.png.
The fixed-window rungs of the makemore ladder (gpt/models/window.py) are for this library only: config.json has
model_type "gpt-window" and names the arch; model.safetensors is their state dict, BatchNorm's running statistics
included. Folders of the first format (flat GPTConfig JSON, nn.Linear layout) still load; `python -m gpt.folder
upgrade DIR` rewrites one in this format.

A folder (or Hub repo) may come from anyone, so config.json is checked against stated limits and against the shapes in
model.safetensors' header (a few KB that say every tensor's shape) before the model is built.
"""

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

import gpt
from gpt.models.bigram import Bigram
from gpt.models.mlp import MLP
from gpt.models.model import GPT, GPTConfig
from gpt.models.tokenizer import MB, AnyTokenizer, TooLargeError, load_tokenizer, read_capped
from gpt.models.wavenet import WaveNet
from gpt.models.window import ARCHS, Model, ModelConfig, WindowConfig
from gpt.storage.atomic import file_mode, fresh_dir, save_tensors, write_atomic
from gpt.storage.card import model_card
from gpt.storage.folder_checks import ModelFileError, ModelLimits, check_config, check_stored, check_values
from gpt.storage.layout import (
    HF_BUFFERS,
    REWARD_ARCHITECTURES,
    family,
    from_stored,
    gpt_config_json,
    parse_gpt_config,
    stored_tensors,
)

REQUIRED_FILES = ["config.json", "model.safetensors", "tokenizer.json"]
MODEL_FILES = [*REQUIRED_FILES, "tokenizer_config.json", "README.md", "metrics.json", "loss.png"]
FOLDER_FILES = [*MODEL_FILES, "generation_config.json"]  # every file a folder may hold (the last: where one ends)
WINDOW_TYPE = "gpt-window"
WINDOW_CLASSES = {"bigram": Bigram, "mlp": MLP, "wavenet": WaveNet}


def build_model(config: ModelConfig) -> Model:
    """The model a config describes, freshly initialised."""
    return GPT(config) if isinstance(config, GPTConfig) else WINDOW_CLASSES[config.arch](config)


# config.json


def config_json(
    config: ModelConfig, boundary_id: int | None = None, dtype: str = "float32", end_id: int | None = None
) -> dict:
    """config.json for transformers (a GPT: gpt/storage/layout.py; dtype: what transformers should compute in), or a
    window model's. end_id (default: the boundary): where generation ends, a chat model's end of turn."""
    end_id = boundary_id if end_id is None else end_id
    if isinstance(config, WindowConfig):
        return {
            "architectures": [WINDOW_CLASSES[config.arch].__name__],
            "model_type": WINDOW_TYPE,
            "arch": config.arch,
            "vocab_size": config.vocab_size,
            "block_size": config.block_size,
            "n_embd": config.n_embd,
            "n_hidden": config.n_hidden,
            "bos_token_id": boundary_id,
            "eos_token_id": boundary_id,
            "dtype": dtype,
        }
    return gpt_config_json(config, boundary_id, end_id, dtype)


def parse_config(data, source: str) -> tuple[ModelConfig, str | None]:
    """The config in config.json's content, and the folder's layout: a transformers family (gpt2, llama, qwen3),
    the window models' (gpt-window), or None for this library's own GPT layout (the first format's too)."""
    if not isinstance(data, dict):
        raise ModelFileError(f"{source}: config.json must be a JSON object")
    if data.get("model_type") == WINDOW_TYPE:
        fields = {k: data.get(k) for k in WindowConfig.__dataclass_fields__}
        missing = [k for k, v in fields.items() if v is None]
        if missing:
            raise ModelFileError(f"{source}: config.json lacks {', '.join(missing)}")
        if fields["arch"] not in ARCHS:
            raise ModelFileError(
                f"{source}: config.json's arch must be one of {', '.join(ARCHS)}, got {fields['arch']!r}"
            )
        return WindowConfig(**fields), WINDOW_TYPE
    if is_reward_config(data):
        raise ModelFileError(
            f"{source}: a reward model, which scores replies and writes no text: use it as a reward "
            "(python -m gpt.train --rl FOLDER) or load it with gpt.posttraining.reward.load_reward_model"
        )
    return parse_gpt_config(data, source)


# model.safetensors


def stored(model: Model, layout: str | None) -> dict[str, torch.Tensor]:
    """The model's tensors as a folder of this layout stores them."""
    return model.state_dict() if isinstance(model.config, WindowConfig) else stored_tensors(model, layout)


def check_weights(model: Model, weights: Path, layout: str | None) -> None:
    """The safetensors header names exactly the tensors the model (built from config.json) needs, with their shapes
    (nothing is loaded)."""
    expected = {k: list(v.shape) for k, v in stored(model, layout).items()}
    try:
        with safe_open(str(weights), "pt") as f:
            found = {k: f.get_slice(k).get_shape() for k in f.keys()}
            aliases = f.metadata() or {}
    except (SafetensorError, OSError) as e:
        raise ModelFileError(f"{weights}: model.safetensors is unreadable or truncated ({e})") from None
    found.update({alias: found[kept] for alias, kept in aliases.items() if kept in found and alias in expected})
    tied = getattr(model.config, "tie_embeddings", False)
    ignored = [k for k in found if k.endswith(HF_BUFFERS) or (tied and k == "lm_head.weight")]
    missing = sorted(expected.keys() - found.keys())
    extra = sorted(found.keys() - expected.keys() - set(ignored))
    wrong = sorted(k for k in expected.keys() & found.keys() if expected[k] != found[k])
    problems = ([f"missing {', '.join(missing[:3])}"] if missing else []) + (
        [f"unexpected {', '.join(extra[:3])}"] if extra else []
    )
    if wrong:
        problems.append(f"{wrong[0]} is {found[wrong[0]]}, config.json needs {expected[wrong[0]]}")
    if problems:
        raise ModelFileError(f"{weights}: model.safetensors does not match config.json ({'; '.join(problems)})")


# Loading and saving.


def missing_files(folder: Path) -> list[str]:
    return [f for f in REQUIRED_FILES if not (folder / f).is_file()]


def is_reward_folder(folder: str | Path) -> bool:
    """Whether a folder holds a reward model (gpt/posttraining/reward.py) rather than one that writes."""
    try:
        data = json.loads(read_capped(Path(folder) / "config.json", MB))
    except (OSError, ValueError, TooLargeError):
        return False
    return is_reward_config(data)


def is_reward_config(data) -> bool:
    return isinstance(data, dict) and data.get("architectures") in [[a] for a in REWARD_ARCHITECTURES.values()]


def read_config(folder: Path, name: str | None = None) -> tuple[ModelConfig, str | None]:
    source = name or str(folder)
    try:
        data = json.loads(read_capped(folder / "config.json", MB))
    except FileNotFoundError:
        raise ModelFileError(f"{source}: config.json is missing") from None
    except TooLargeError as e:
        raise ModelFileError(f"{source}: {e}") from None
    except (ValueError, RecursionError) as e:
        raise ModelFileError(f"{source}: config.json is not valid JSON ({e})") from None
    return parse_config(data, source)


def load_model(folder: str | Path, limits: ModelLimits | None = None, name: str | None = None) -> Model:
    """The model in a folder (eval mode, float32 on the CPU), checked file by file before it is built."""
    folder = Path(folder)
    source = name or str(folder)
    config, layout = read_config(folder, source)
    check_config(config, source, limits or ModelLimits())
    weights = folder / "model.safetensors"
    if not weights.is_file():
        raise ModelFileError(f"{source}: model.safetensors is missing")
    check_stored(config, weights, source)
    model = build_model(config)  # within the limits just checked, and no larger than the weights
    check_weights(model, weights, layout)
    try:
        tensors = load_file(str(weights))
    except (SafetensorError, OSError) as e:
        raise ModelFileError(f"{source}: model.safetensors is unreadable or truncated ({e})") from None
    check_values(tensors, source)
    state = tensors if isinstance(config, WindowConfig) else from_stored(tensors, config, layout, source)
    model.load_state_dict(state, strict=True)
    return model.eval()


def read_folder(
    folder: str | Path, limits: ModelLimits | None = None, name: str | None = None
) -> tuple[Model, AnyTokenizer]:
    """Model and tokenizer of a folder (name: how errors should call it, e.g. the repo id)."""
    folder = Path(folder)
    missing = missing_files(folder)
    if missing:
        raise ModelFileError(
            f"{name or folder}: {', '.join(missing)} missing (a model folder needs {', '.join(REQUIRED_FILES)})"
        )
    return load_model(folder, limits, name), load_tokenizer(folder)


def write_weights(
    model: Model,
    folder: Path,
    boundary_id: int | None = None,
    dtype: torch.dtype = torch.float32,
    end_id: int | None = None,
) -> None:
    """model.safetensors, config.json and, when generation has an end token, generation_config.json (a GPT in its
    family's layout; weights in `dtype`, counters kept whole)."""
    state = stored_tensors(model, family(model.config)) if isinstance(model, GPT) else model.state_dict()
    tensors = {k: v.detach().to("cpu", dtype if v.is_floating_point() else v.dtype) for k, v in state.items()}
    save_tensors(tensors, folder / "model.safetensors", {"format": "pt"})
    config = config_json(model.config, boundary_id, end_id=end_id)
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    if isinstance(model, GPT) and config["eos_token_id"] is not None:  # what transformers' generate stops at
        ends = {k: config[k] for k in ("bos_token_id", "eos_token_id") if config[k] is not None}
        generation = {**ends, "pad_token_id": config["eos_token_id"]}
        (folder / "generation_config.json").write_text(json.dumps(generation, indent=2))


def read_metrics(folder: str | Path) -> dict:
    """metrics.json's content; {} when there is none or it is not a JSON object (the model loads without it)."""
    path = Path(folder) / "metrics.json"
    try:
        data = json.loads(read_capped(path, 32 * MB)) if path.is_file() else {}
    except (ValueError, RecursionError):
        return {}
    return data if isinstance(data, dict) else {}


def write_metrics(folder: Path, metrics: dict) -> None:
    """The one writer of metrics.json."""
    write_atomic(folder / "metrics.json", lambda p: p.write_text(json.dumps(metrics, indent=1)))


def write_card(folder: Path, config: ModelConfig, tokenizer: AnyTokenizer) -> None:
    """The one writer of a folder's README.md: the card made from its config, tokenizer and metrics.json."""
    card = model_card(config, tokenizer, read_metrics(folder))
    write_atomic(folder / "README.md", lambda p: p.write_text(card, encoding="utf-8"))


def save_folder(
    model: Model,
    tokenizer: AnyTokenizer,
    out: str | Path,
    metrics: dict | None = None,
    dtype: torch.dtype = torch.float32,
) -> None:
    """Write a whole model folder: every file is written aside, then moved into place, the weights first."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = fresh_dir(out / ".saving")
    try:
        write_weights(model, tmp, tokenizer.boundary_id, dtype, tokenizer.end_id)
        tokenizer.save(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    publish(tmp, out)
    if metrics is not None:
        write_metrics(out, metrics)
    write_card(out, model.config, tokenizer)


def publish(tmp: Path, out: Path) -> None:
    """Move a folder's files written aside in tmp into out, the weights first, then remove tmp."""
    try:
        for f in sorted(tmp.iterdir(), key=lambda f: f.name != "model.safetensors"):
            os.chmod(f, file_mode())
            os.replace(f, out / f.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def upgrade(folder: str | Path) -> bool:
    """Rewrite a folder of the first format in the transformers-readable one; False if it already is."""
    folder = Path(folder)
    model, tokenizer = read_folder(folder)
    config, layout = read_config(folder)
    tokenizer_data = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
    if (layout or isinstance(config, WindowConfig) or not family(config)) and tokenizer_data.get("type") != "char":
        return False
    dtype = next(iter(load_file(str(folder / "model.safetensors")).values())).dtype
    save_folder(model, tokenizer, folder, dtype=dtype)
    return True


def to_ctranslate2(folder: str | Path, out: str | Path) -> None:
    """The folder converted by CTranslate2's own converter (ctranslate2 installed separately), then given the
    bos/eos/unk token strings its Generator requires: a running-text folder has none, so they name the first character
    (generate with end_token=[] and the folder's token ids, and none of them is ever used)."""
    import ctranslate2

    if not isinstance(read_config(Path(folder))[0], GPTConfig):
        raise ModelFileError(f"{folder}: not a GPT model folder (only GPTs convert)")
    ctranslate2.converters.TransformersConverter(str(folder)).convert(str(out), force=True)
    path = Path(out) / "config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    first = json.loads((Path(out) / "vocabulary.json").read_text(encoding="utf-8"))[0]
    tokens = {k: config.get(k) or first for k in ("bos_token", "eos_token", "unk_token")}
    write_atomic(path, lambda tmp: tmp.write_text(json.dumps({**config, **tokens}), encoding="utf-8"))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog=gpt.prog("gpt.folder"), description="Model folder tools.")
    sub = p.add_subparsers(dest="command", required=True)
    up = sub.add_parser("upgrade", help="rewrite folders of the first format so transformers reads them too")
    up.add_argument("folders", nargs="+")
    ct2 = sub.add_parser("ctranslate2", help="convert a GPT folder for CTranslate2 (pip install ctranslate2)")
    ct2.add_argument("folder")
    ct2.add_argument("out", help="the CTranslate2 model folder to write")
    args = p.parse_args(argv)
    try:
        if args.command == "ctranslate2":
            to_ctranslate2(args.folder, args.out)
            print(f"{args.out}: a CTranslate2 model (ctranslate2.Generator({args.out!r}))")
        for folder in args.folders if args.command == "upgrade" else []:
            print(f"{folder}: {'upgraded' if upgrade(folder) else 'already in the current format'}")
    except ImportError:
        sys.exit("error: CTranslate2 is not installed: pip install ctranslate2")
    except (ModelFileError, ValueError, FileNotFoundError) as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
