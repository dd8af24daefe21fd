"""The model folder on disk: which files it holds, checks that run before anything big is allocated, atomic writes.

A folder (or a Hub repo: the same files) may come from anyone, so config.json is checked against stated limits and
against the shapes in model.safetensors' header (a few KB that say every tensor's shape) before the model is built:
a config that claims a billion layers is an error, never an attempt to allocate them.
"""

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from gpt.model import GPT, GPTConfig, ModelFileError

REQUIRED_FILES = ["config.json", "model.safetensors", "tokenizer.json"]


@dataclass(frozen=True)
class ModelLimits:
    """The largest model a loader accepts; an operator may lower or raise them."""

    max_parameters: int = 1_000_000_000
    max_vocab_size: int = 1 << 20
    max_block_size: int = 1 << 16
    max_layers: int = 1024


def parameter_count(c: GPTConfig) -> int:
    """Parameters of a GPT with this config, computed without building it (the head is tied to the embedding)."""
    b = 1 if c.bias else 0
    block = 12 * c.n_embd * c.n_embd + (2 + 2 * b + 3 * b + b + 4 * b + b) * c.n_embd
    return c.vocab_size * c.n_embd + c.block_size * c.n_embd + c.n_layer * block + (1 + b) * c.n_embd


def check_config(config: GPTConfig, source: str, limits: ModelLimits = ModelLimits()) -> None:
    """Types, ranges and size of a config read from a file; a ModelFileError names the field."""
    for f in fields(GPTConfig):
        value = getattr(config, f.name)
        if f.type in (int, "int") and (isinstance(value, bool) or not isinstance(value, int)):
            raise ModelFileError(f"{source}: config.json's {f.name} must be a whole number, got {value!r}")
    if isinstance(config.dropout, bool) or not isinstance(config.dropout, (int, float)) or not 0 <= config.dropout < 1:
        raise ModelFileError(f"{source}: config.json's dropout must be a number in [0, 1), got {config.dropout!r}")
    if not isinstance(config.bias, bool):
        raise ModelFileError(f"{source}: config.json's bias must be true or false, got {config.bias!r}")
    bounds = [("vocab_size", limits.max_vocab_size), ("block_size", limits.max_block_size),
              ("n_layer", limits.max_layers), ("n_head", 1 << 12), ("n_embd", 1 << 16)]  # fmt: skip
    for name, high in bounds:
        if not 1 <= getattr(config, name) <= high:
            raise ModelFileError(
                f"{source}: config.json's {name} must be from 1 to {high:,}, got {getattr(config, name)}"
            )
    if config.n_embd % config.n_head:
        raise ModelFileError(
            f"{source}: config.json's n_embd {config.n_embd} is not divisible by n_head {config.n_head}"
        )
    if parameter_count(config) > limits.max_parameters:
        raise ModelFileError(
            f"{source}: config.json describes {parameter_count(config):,} parameters, over this loader's limit of "
            f"{limits.max_parameters:,}"
        )


def check_weights(config: GPTConfig, weights: str | Path) -> None:
    """The safetensors header names exactly the tensors this config needs, with their shapes (nothing is loaded)."""
    with torch.device("meta"):
        expected = {k: list(v.shape) for k, v in GPT(config).state_dict().items()}
    try:
        with safe_open(str(weights), "pt") as f:
            found = {k: f.get_slice(k).get_shape() for k in f.keys()}
            aliases = f.metadata() or {}
    except (SafetensorError, OSError) as e:
        raise ModelFileError(f"{weights}: model.safetensors is unreadable or truncated ({e})") from None
    found.update({alias: found[kept] for alias, kept in aliases.items() if kept in found and alias in expected})
    missing = sorted(expected.keys() - found.keys())
    extra = sorted(found.keys() - expected.keys())
    wrong = sorted(k for k in expected.keys() & found.keys() if expected[k] != found[k])
    if missing or extra or wrong:
        detail = "; ".join(
            part
            for part in (
                f"missing {', '.join(missing[:3])}" if missing else "",
                f"unexpected {', '.join(extra[:3])}" if extra else "",
                f"{wrong[0]} is {found[wrong[0]]}, config.json needs {expected[wrong[0]]}" if wrong else "",
            )
            if part
        )
        raise ModelFileError(f"{weights}: model.safetensors does not match config.json ({detail})")


def missing_files(folder: Path) -> list[str]:
    return [f for f in REQUIRED_FILES if not (folder / f).is_file()]


def file_mode() -> int:
    """Permissions a plain open() would give (temporary files are private by default)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def temp_path(path: Path) -> Path:
    """The one temporary name used for writing `path`: a run killed mid-write leaves at most this, reused next time."""
    return path.with_name(f".{path.name}.tmp")


def write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    """write(tmp_path) beside the target, flushed to disk, then renamed over it: a reader never sees half a file."""
    tmp = temp_path(path)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def fresh_dir(path: Path) -> Path:
    """An empty folder at path, replacing whatever an interrupted run left there."""
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path
