"""What the fixed-window models of the makemore ladder (bigram, MLP, WaveNet) share: config, windows, decode state.

A window model predicts the next character from the `block_size` characters before it and nothing earlier. Positions
near the start of a sequence see token 0 in place of the characters they lack, as makemore pads its contexts with '.'
(for a document model token 0 is the boundary). Such a model has no KV cache: to continue a sequence it keeps the
sequence's last `block_size` tokens (WindowCache) and runs its window again.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.nn import functional as F

from gpt.models.model import GPT, GPTConfig

ARCHS = ("bigram", "mlp", "wavenet")
ROW_LENGTH = 256  # characters per row when training or scoring: every position of a row is one window


@dataclass
class WindowConfig:
    arch: str = "mlp"  # bigram, mlp or wavenet
    vocab_size: int = 27
    block_size: int = 3  # characters the model sees (the bigram 1; WaveNet a power of two)
    n_embd: int = 10  # width of a character's embedding
    n_hidden: int = 200  # width of the hidden layers

    def __post_init__(self):
        if self.arch == "bigram":
            self.block_size = 1

    @property
    def n_layer(self) -> int:
        """Hidden layers: WaveNet fuses pairs of positions until one is left; the MLP has one; the bigram none."""
        return {"bigram": 0, "mlp": 1}.get(self.arch) or max(1, round(math.log2(self.block_size)))

    def num_params(self) -> int:
        V, W, E, H = self.vocab_size, self.block_size, self.n_embd, self.n_hidden
        if self.arch == "bigram":
            return V * V
        head = H * V + V
        if self.arch == "mlp":
            return V * E + W * E * H + 2 * H + head
        return V * E + 2 * E * H + 2 * H + (self.n_layer - 1) * (2 * H * H + 2 * H) + head


class WindowCache:
    """Each row's last `block_size` tokens (B, block_size) and its length: a window model's stand-in for a KV cache.

    It never fills up: the oldest token falls out as a new one comes in (`slides`), so decoding needs no context shift.
    """

    slides = True

    def __init__(self, tokens: torch.Tensor, pos: torch.Tensor):
        self.tokens, self.pos = tokens, pos

    @classmethod
    def empty(cls, config: WindowConfig, batch_size: int, device=None) -> "WindowCache":
        tokens = torch.zeros(batch_size, config.block_size, dtype=torch.long, device=device)
        return cls(tokens, torch.zeros(batch_size, dtype=torch.long, device=device))

    def rows(self, start: int, stop: int) -> "WindowCache":
        return WindowCache(self.tokens[start:stop], self.pos[start:stop])

    def reset(self) -> None:
        self.tokens.zero_()
        self.pos.zero_()

    def move(self, src: int, dst: int) -> None:
        self.tokens[dst], self.pos[dst] = self.tokens[src], self.pos[src]

    def take(self, rows: list[int], filled: "WindowCache", which: list[int]) -> None:
        """Row rows[i] becomes filled's row which[i] (as KVCache.take)."""
        self.tokens[rows], self.pos[rows] = filled.tokens[which], filled.pos[which]


class WindowModel(nn.Module):
    """The part every rung shares: cut sequences into windows, score the windows (`predict`), keep the decode state."""

    def __init__(self, config: WindowConfig):
        super().__init__()
        self.config = config

    def predict(self, windows: torch.Tensor) -> torch.Tensor:
        """Next-token logits (N, vocab) for N windows of block_size tokens each."""
        raise NotImplementedError

    def num_params(self) -> int:
        return self.config.num_params()

    def empty_cache(self, batch_size: int, device=None, dtype=None, length: int | None = None) -> WindowCache:
        """A cache of batch_size rows; dtype and length are a KV cache's, which a window of tokens has no use for."""
        return WindowCache.empty(self.config, batch_size, device)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, cache: WindowCache | None = None):
        """Logits (B, T, vocab) for every position and, with targets, the mean cross-entropy.

        With targets, only positions whose target is not -1 are scored (padding after a document's end is neither
        scored nor counted in BatchNorm's statistics) and the logits returned are those positions' (N, vocab).
        With a cache, idx continues each row after the tokens the cache holds, and the cache moves on.
        """
        B, T = idx.size()
        W = self.config.block_size
        past = cache.tokens if cache is not None else idx.new_zeros(B, W)
        seq = torch.cat([past, idx], dim=1)
        windows = seq.unfold(1, W, 1)[:, 1:].reshape(B * T, W)  # the window ending at each new position
        if cache is not None:
            cache.tokens.copy_(seq[:, -W:])
            cache.pos += T
        if targets is None:
            return self.predict(windows).view(B, T, -1), None
        scored = targets.reshape(-1) != -1
        logits = self.predict(windows[scored])
        return logits, F.cross_entropy(logits, targets.reshape(-1)[scored])


Model = GPT | WindowModel  # what a model folder holds
ModelConfig = GPTConfig | WindowConfig


def row_length(config: ModelConfig) -> int:
    """Tokens per training or scoring row: the GPT's context; a window model scores every position of a longer row."""
    return ROW_LENGTH if isinstance(config, WindowConfig) else config.block_size


def calm_head(head: nn.Linear) -> None:
    """Start the output layer near zero, so the first predictions are near uniform (lecture 4's fix for a hockey-stick
    loss)."""
    with torch.no_grad():
        head.weight.mul_(0.1)
        head.bias.zero_()
