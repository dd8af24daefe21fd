"""The bigram model (makemore, lecture 2): a table of logits, one row per character, read by the character before.

Trained by gradient descent it learns what counting pairs gives (the log of each pair's smoothed frequency); weight
decay on the table plays the part of the lecture's smoothing.
"""

import torch
import torch.nn as nn

from gpt.models.window import WindowConfig, WindowModel


class Bigram(WindowModel):
    def __init__(self, config: WindowConfig):
        super().__init__(config)
        self.logits = nn.Embedding(config.vocab_size, config.vocab_size)
        nn.init.zeros_(self.logits.weight)  # every next character equally likely at first

    def predict(self, windows: torch.Tensor) -> torch.Tensor:
        return self.logits(windows[:, -1])
