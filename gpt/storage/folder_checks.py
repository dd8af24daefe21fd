"""The checks a model folder passes before anything big is allocated: config.json's types, ranges and size against
stated limits, its claim against the numbers model.safetensors' header holds, and the weights' dtypes and values.

A folder (or Hub repo) may come from anyone: a config that claims a thousand wide layers is an error, never an attempt
to allocate them.
"""

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from gpt.models.model import MLPS
from gpt.models.window import ModelConfig, WindowConfig


class ModelFileError(ValueError):
    """A model folder file is missing, unreadable or does not match the others."""


@dataclass(frozen=True)
class ModelLimits:
    """The largest model a loader accepts; an operator may lower or raise them."""

    max_parameters: int = 1_000_000_000
    max_vocab_size: int = 1 << 20
    max_block_size: int = 1 << 16
    max_layers: int = 1024


def check_config(config: ModelConfig, source: str, limits: ModelLimits = ModelLimits()) -> None:
    """Types, ranges and size of a config read from a file; a ModelFileError names the field."""
    window = isinstance(config, WindowConfig)
    names = (
        ("vocab_size", "block_size", "n_embd", "n_hidden")
        if window
        else ("vocab_size", "block_size", "n_layer", "n_head", "n_embd")
    )
    for name in names:
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ModelFileError(f"{source}: config.json's {name} must be a whole number, got {value!r}")
    if window:
        bounds = [
            ("vocab_size", limits.max_vocab_size),
            ("block_size", 1 << 10),
            ("n_embd", 1 << 16),
            ("n_hidden", 1 << 16),
        ]
        check_bounds(config, bounds, source)
        if config.arch == "wavenet" and config.block_size & (config.block_size - 1):
            raise ModelFileError(
                f"{source}: config.json's block_size must be a power of two for wavenet, got {config.block_size}"
            )
        check_size(config, source, limits)
        return
    if isinstance(config.dropout, bool) or not isinstance(config.dropout, (int, float)) or not 0 <= config.dropout < 1:
        raise ModelFileError(f"{source}: config.json's dropout must be a number in [0, 1), got {config.dropout!r}")
    switches = ("bias", "tie_embeddings", "rotary", "rms_norm", "qk_norm")
    for key, value in ((k.replace("tie_embeddings", "tie_word_embeddings"), getattr(config, k)) for k in switches):
        if not isinstance(value, bool):
            raise ModelFileError(f"{source}: config.json's {key} must be true or false, got {value!r}")
    if config.mlp not in MLPS:
        raise ModelFileError(f"{source}: config.json's mlp must be one of {', '.join(MLPS)}, got {config.mlp!r}")
    bounds = [
        ("vocab_size", limits.max_vocab_size),
        ("block_size", limits.max_block_size),
        ("n_layer", limits.max_layers),
        ("n_head", 1 << 12),
        ("n_embd", 1 << 16),
    ]
    check_bounds(config, bounds, source)
    if config.n_embd % config.n_head:
        raise ModelFileError(
            f"{source}: config.json's n_embd {config.n_embd} is not divisible by n_head {config.n_head}"
        )
    if config.rotary and config.head_size % 2:
        raise ModelFileError(f"{source}: rotary positions need an even head size, got {config.head_size}")
    check_size(config, source, limits)


def check_bounds(config: ModelConfig, bounds: list[tuple[str, int]], source: str) -> None:
    for name, high in bounds:
        if not 1 <= getattr(config, name) <= high:
            raise ModelFileError(
                f"{source}: config.json's {name} must be from 1 to {high:,}, got {getattr(config, name)}"
            )


def check_size(config: ModelConfig, source: str, limits: ModelLimits) -> None:
    if config.num_params() > limits.max_parameters:
        raise ModelFileError(
            f"{source}: config.json describes {config.num_params():,} parameters, over this loader's limit of "
            f"{limits.max_parameters:,}"
        )


def check_stored(config: ModelConfig, weights: Path, source: str) -> None:
    """Before anything is built: config.json may not describe a model far larger than the numbers the weights' header
    holds, so a crafted config beside small weights allocates nothing big (check_weights then compares every shape)."""
    try:
        with safe_open(str(weights), "pt") as f:
            stored = sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())
    except (SafetensorError, OSError) as e:
        raise ModelFileError(f"{source}: model.safetensors is unreadable or truncated ({e})") from None
    if config.num_params() > 2 * stored + 1_000_000:  # past a mismatch that costs nothing to build (checked next)
        raise ModelFileError(
            f"{source}: model.safetensors holds {stored:,} numbers but config.json describes {config.num_params():,} "
            "parameters: the two files are from different models"
        )


COUNTERS = "num_batches_tracked"  # BatchNorm's step counters: whole numbers by design
FLOATS = (torch.float32, torch.bfloat16, torch.float16)


def check_values(tensors: dict[str, torch.Tensor], source: str) -> None:
    """Weights are float32, bfloat16 or float16 and finite: anything else is a broken or foreign file, refused rather
    than cast (a NaN would reach every reply as garbage and every log-probability as invalid JSON)."""
    for name, value in tensors.items():
        if name.endswith(COUNTERS):
            continue
        if value.dtype not in FLOATS:
            raise ModelFileError(
                f"{source}: model.safetensors stores {name} as {str(value.dtype).removeprefix('torch.')}; weights must "
                "be float32, bfloat16 or float16"
            )
        if not torch.isfinite(value).all():
            raise ModelFileError(
                f"{source}: model.safetensors has NaN or infinite values in {name} (a run that diverged?): train it "
                "again or use an earlier folder"
            )
