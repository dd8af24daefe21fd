"""Training data: a UTF-8 text file read, split deterministically, and sampled into batches.

Splits (fixed, so reported numbers compare with nanoGPT's and makemore's):
- running text: the first 90% of characters train, the last 10% validate;
- document mode (one item per line): line i (0-based, counting every line of the file) validates when i % 10 == 9.
"""

from pathlib import Path

import torch

from gpt.tokenizer import CharTokenizer


class DataError(ValueError):
    """The training file cannot be used; the message says why and what to do."""


def read_text(path: str | Path) -> str:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file (give --data a UTF-8 text file)")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text (byte {e.start} is invalid); convert it to UTF-8 first") from None
    if not text:
        raise DataError(f"{path}: the file is empty")
    return text


def split_text(text: str) -> tuple[str, str]:
    n = int(len(text) * 0.9)
    return text[:n], text[n:]


def split_documents(text: str) -> tuple[list[str], list[str]]:
    train, val = [], []
    for i, line in enumerate(text.split("\n")):
        line = line.strip()
        if line:
            (val if i % 10 == 9 else train).append(line)
    return train, val


class TextBatches:
    """Random windows of running text: x is block_size tokens, y the same shifted by one."""

    def __init__(self, ids: torch.Tensor, block_size: int):
        self.ids, self.block_size = ids, block_size
        self.row_length = block_size

    def sample(self, batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        starts = torch.randint(len(self.ids) - self.block_size, (batch_size,), generator=generator)
        offsets = starts[:, None] + torch.arange(self.block_size + 1)
        window = self.ids[offsets]
        return window[:, :-1], window[:, 1:]


class DocumentBatches:
    """Whole items, each from a boundary with no earlier context: x = boundary + item, y = item + boundary.

    Positions after an item's end are padded with targets of -1, which the loss ignores (as makemore does).
    """

    def __init__(self, docs: list[list[int]], block_size: int, boundary: int):
        longest = min(max(len(d) for d in docs) + 1, block_size)
        rows = torch.full((len(docs), longest + 1), -1, dtype=torch.long)
        for i, d in enumerate(docs):
            seq = [boundary] + d[: longest - 1] + [boundary]
            rows[i, : len(seq)] = torch.tensor(seq)
        self.x = rows[:, :-1].clamp(min=0)
        self.y = rows[:, 1:]
        self.row_length = longest

    def sample(self, batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        pick = torch.randint(len(self.x), (batch_size,), generator=generator)
        return self.x[pick], self.y[pick]

    def all(self, batch_size: int):
        """Every item once, in order: for an exact validation loss."""
        for i in range(0, len(self.x), batch_size):
            yield self.x[i : i + batch_size], self.y[i : i + batch_size]


def load_dataset(
    path: str | Path, block_size: int, documents: bool, tokenizer: CharTokenizer | None = None
) -> tuple[CharTokenizer, TextBatches | DocumentBatches, TextBatches | DocumentBatches]:
    """Tokenizer (built from the whole file unless given) and train/validation batch samplers."""
    text = read_text(path)
    tokenizer = tokenizer or CharTokenizer.from_text(text, documents)
    if documents:
        train, val = split_documents(text)
        if not train or not val:
            raise DataError(
                f"{path}: document mode needs at least 10 non-empty lines (line i validates when i % 10 == 9)"
            )
        train_ids, val_ids = ([tokenizer.encode(d) for d in docs] for docs in (train, val))
        b = tokenizer.boundary_id
        return tokenizer, DocumentBatches(train_ids, block_size, b), DocumentBatches(val_ids, block_size, b)
    train, val = split_text(text)
    if len(val) < block_size + 1:
        need = (block_size + 1) * 10
        raise DataError(
            f"{path}: too short: {len(text)} characters; the validation tenth needs block_size + 1 = "
            f"{block_size + 1}, so give at least {need} characters or a smaller --block-size"
        )
    train_ids, val_ids = (torch.tensor(tokenizer.encode(s), dtype=torch.long) for s in (train, val))
    return tokenizer, TextBatches(train_ids, block_size), TextBatches(val_ids, block_size)
