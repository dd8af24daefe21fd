"""Bengio et al.'s MLP language model with BatchNorm (makemore, lectures 3 and 4).

Each of the last block_size characters is embedded, the embeddings are concatenated, and one hidden layer
(Linear, BatchNorm, tanh) maps them to the next character's logits. BatchNorm normalises with the batch's statistics
while training and with its running averages in eval mode, so evaluation and sampling are deterministic.
"""

import torch
import torch.nn as nn

from gpt.models.window import WindowConfig, WindowModel, calm_head


class MLP(WindowModel):
    def __init__(self, config: WindowConfig):
        super().__init__(config)
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.hidden = nn.Linear(config.block_size * config.n_embd, config.n_hidden, bias=False)  # BatchNorm adds one
        self.bn = nn.BatchNorm1d(config.n_hidden)
        self.head = nn.Linear(config.n_hidden, config.vocab_size)
        nn.init.kaiming_normal_(self.hidden.weight, nonlinearity="tanh")
        calm_head(self.head)

    def predict(self, windows: torch.Tensor) -> torch.Tensor:
        x = self.wte(windows).flatten(1)  # (N, block_size * n_embd): the window's embeddings side by side
        return self.head(torch.tanh(self.bn(self.hidden(x))))
