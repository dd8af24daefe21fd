"""A WaveNet-style hierarchical model (makemore, lecture 5): fuse neighbouring positions two at a time.

The window's block_size (a power of two) embeddings go up a tree: each layer joins pairs of neighbours (Linear,
BatchNorm, tanh), halving the positions, until one vector is left for the next character's logits. BatchNorm's
statistics are taken over the batch and the positions together, as in the lecture.
"""

import torch
import torch.nn as nn

from gpt.models.window import WindowConfig, WindowModel, calm_head


class Fuse(nn.Module):
    """One level of the tree: (N, L, C) -> (N, L / 2, n_hidden)."""

    def __init__(self, width: int, n_hidden: int):
        super().__init__()
        self.linear = nn.Linear(2 * width, n_hidden, bias=False)
        self.bn = nn.BatchNorm1d(n_hidden)
        nn.init.kaiming_normal_(self.linear.weight, nonlinearity="tanh")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        N, L, C = x.shape
        x = self.linear(x.reshape(N, L // 2, 2 * C))
        return torch.tanh(self.bn(x.flatten(0, 1)).view(N, L // 2, -1))


class WaveNet(WindowModel):
    def __init__(self, config: WindowConfig):
        super().__init__(config)
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        widths = [config.n_embd] + [config.n_hidden] * (config.n_layer - 1)
        self.layers = nn.ModuleList(Fuse(w, config.n_hidden) for w in widths)
        self.head = nn.Linear(config.n_hidden, config.vocab_size)
        calm_head(self.head)

    def predict(self, windows: torch.Tensor) -> torch.Tensor:
        x = self.wte(windows)  # (N, block_size, n_embd)
        for layer in self.layers:
            x = layer(x)
        return self.head(x[:, 0])
