"""Training data: a UTF-8 text file (or a Hub dataset's text column) read, split deterministically, and sampled into
batches.

Splits (fixed, so reported numbers compare with nanoGPT's and makemore's):
- running text: the first 90% of characters train, the last 10% validate;
- document mode (one item per line): line i (0-based, counting every line of the file) validates when i % 10 == 9.
"""

import re
from collections import Counter
from pathlib import Path

import torch

from gpt.models.tokenizer import AnyTokenizer, BPETokenizer, CharTokenizer


class DataError(ValueError):
    """The training file cannot be used; the message says why and what to do."""


HUB_DATASET = re.compile(r"[\w.-]+/[\w.-]+(@[\w./-]+)?")  # owner/name[@revision]


def hub_dataset(path: str | Path) -> str | None:
    """The Hub dataset id `path` names (owner/name[@revision]), when it is not a file here."""
    return str(path) if not Path(path).exists() and HUB_DATASET.fullmatch(str(path)) else None


def read_text(path: str | Path, column: str = "text") -> str:
    """A UTF-8 file's text, or a Hub dataset's (hub_text)."""
    if hub_dataset(path):
        return hub_text(str(path), column)
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file (give --data a UTF-8 text file or a Hub dataset id, owner/name)")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text (byte {e.start} is invalid); convert it to UTF-8 first") from None
    if not text:
        raise DataError(f"{path}: the file is empty")
    return text


def hub_text(spec: str, column: str = "text") -> str:
    """A Hub dataset's text (owner/name[@revision]), read through `datasets` (and its cache): the column's values one
    a line, every split in the dataset's order, so that the fixed split applies to it as to the file it came from."""
    try:
        import datasets
    except ImportError:
        raise DataError(f"{spec} names a Hub dataset, read through `datasets`: pip install datasets") from None
    repo, _, revision = spec.partition("@")
    datasets.utils.logging.disable_progress_bar()
    try:
        splits = datasets.load_dataset(repo, revision=revision or None)
    except Exception as e:  # no such repo or revision, offline and not cached, no data files: datasets says which
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(f"{spec}: no such file, nor a Hub dataset that can be read ({reason})") from None
    lines = []
    for name, split in splits.items():
        if column not in split.column_names:
            have = ", ".join(split.column_names)
            raise DataError(f"{spec}: its {name} split has no column {column!r} (it has {have}): give --text-column")
        values = split[column]
        if not all(isinstance(v, str) for v in values):
            raise DataError(f"{spec}: column {column!r} holds other values than text: give --text-column")
        lines += values
    if not lines:
        raise DataError(f"{spec}: the dataset has no rows")
    return "\n".join(lines)


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


SPEAKER = re.compile(r"([A-Z][A-Za-z'.]*(?: [A-Za-z'.]+){0,4}):")  # a line that names who speaks, as a play prints it


def speeches(text: str) -> list[tuple[str, str]]:
    """(speaker, first line spoken) of every blank-line-separated paragraph that is a speech in a play's form."""
    out = []
    for paragraph in text.split("\n\n"):
        lines = paragraph.strip("\n").split("\n")
        if len(lines) > 1 and SPEAKER.fullmatch(lines[0].rstrip()):
            out.append((lines[0].rstrip()[:-1], lines[1].strip()))
    return out


def spread(items: list[str], k: int) -> list[str]:
    """k items evenly spaced through the list (the text's start, middle and end, not only its first page)."""
    items = list(dict.fromkeys(items))
    return [items[i * len(items) // k] for i in range(k)] if len(items) > k else items


def openings(lines: list[str], k: int = 4) -> list[str]:
    """Real first lines from the text, of a length that makes a prompt."""
    return spread([line for line in (x.strip() for x in lines) if 12 <= len(line) <= 60 and line.isprintable()], k)


def describe_text(path: str | Path, text: str, documents: bool) -> dict:
    """What the training text was, for the folder's record: its file, its form and the chat layout it suits (the scene
    layout only for a play: mostly `NAME:` speeches), with real openings from it for prompts and examples."""
    hub, form = hub_dataset(path), "documents" if documents else "running text"
    record = {"file": hub or Path(path).name, "characters": len(text), "form": form}
    record |= {"dataset": hub.split("@")[0]} if hub else {}
    if documents:
        items = split_documents(text)[0]
        starts = Counter(item[:2] for item in items if len(item) > 2)
        return {**record, "chat": "document", "openings": [start for start, _ in starts.most_common(3)]}
    paragraphs = [p for p in text.split("\n\n") if p.strip()]
    spoken = speeches(text)
    if paragraphs and len(spoken) > 0.5 * len(paragraphs):
        pairs = Counter((a, b) for (a, _), (b, _) in zip(spoken, spoken[1:]) if a != b)
        (user, model), _ = pairs.most_common(1)[0] if pairs else ((spoken[0][0], spoken[0][0]), 0)
        lines = [line for who, line in spoken if who == user] or [line for _, line in spoken]
        return {**record, "chat": "scene", "speakers": [user, model], "openings": openings(lines)}
    firsts = [p.strip("\n").split("\n")[0] for p in paragraphs]
    found = openings(firsts) or openings(text.split("\n"))
    return {**record, "chat": "plain", "openings": found or [text.strip()[:40]]}


class TextBatches:
    """Random windows of running text: x is block_size tokens, y the same shifted by one."""

    def __init__(self, ids: torch.Tensor, block_size: int):
        self.ids, self.block_size = ids, block_size
        self.row_length = block_size
        self.tokens = len(ids)

    def sample(self, batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        starts = torch.randint(len(self.ids) - self.block_size, (batch_size,), generator=generator)
        offsets = starts[:, None] + torch.arange(self.block_size + 1)
        window = self.ids[offsets]
        return window[:, :-1], window[:, 1:]


class PaddedRows:
    """Whole rows of x and y whose padding has targets of -1, which the loss ignores: sampled, or all in order."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        self.x, self.y = x, y
        self.row_length = x.size(1)
        self.tokens = int((y != -1).sum())

    def sample(self, batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        pick = torch.randint(len(self.x), (batch_size,), generator=generator)
        return self.x[pick], self.y[pick]

    def all(self, batch_size: int):
        """Every row once, in order: for an exact validation loss."""
        for i in range(0, len(self.x), batch_size):
            yield self.x[i : i + batch_size], self.y[i : i + batch_size]


class DocumentBatches(PaddedRows):
    """Whole items, each from a boundary with no earlier context: x = boundary + item, y = item + boundary.

    Positions after an item's end are padded with targets of -1, which the loss ignores (as makemore does).
    """

    def __init__(self, docs: list[list[int]], block_size: int, boundary: int):
        longest = min(max(len(d) for d in docs) + 1, block_size)
        rows = torch.full((len(docs), longest + 1), -1, dtype=torch.long)
        for i, d in enumerate(docs):
            seq = [boundary] + d[: longest - 1] + [boundary]
            rows[i, : len(seq)] = torch.tensor(seq)
        super().__init__(rows[:, :-1].clamp(min=0), rows[:, 1:])


def make_tokenizer(text: str, documents: bool, bpe_vocab: int | None = None, chars: str = "") -> AnyTokenizer:
    """Characters of the whole file (and `chars`), or a byte-level BPE of bpe_vocab tokens learnt from the training
    split only."""
    if not bpe_vocab:
        return CharTokenizer.from_text(text + chars, documents)
    train = split_documents(text)[0] if documents else [split_text(text)[0]]
    return BPETokenizer.train(train, bpe_vocab, documents)


def load_dataset(
    path: str | Path,
    block_size: int,
    documents: bool,
    tokenizer: AnyTokenizer | None = None,
    bpe_vocab: int | None = None,
    chars: str = "",
    text: str | None = None,
) -> tuple[AnyTokenizer, TextBatches | DocumentBatches, TextBatches | DocumentBatches]:
    """Tokenizer (made from the file unless given: see make_tokenizer) and train/validation batch samplers; `text`:
    the file's text when the caller has read it already (a run reads its file once)."""
    text = read_text(path) if text is None else text
    if documents:
        train, val = split_documents(text)
        if not train or not val:
            raise DataError(
                f"{path}: document mode needs at least 10 non-empty lines (line i validates when i % 10 == 9)"
            )
        tokenizer = tokenizer or make_tokenizer(text, documents, bpe_vocab, chars)
        train_ids, val_ids = ([tokenizer.encode(d) for d in docs] for docs in (train, val))
        b = tokenizer.boundary_id
        return tokenizer, DocumentBatches(train_ids, block_size, b), DocumentBatches(val_ids, block_size, b)
    train, val = split_text(text)
    tokenizer = tokenizer or make_tokenizer(text, documents, bpe_vocab, chars)
    train_ids, val_ids = (torch.tensor(tokenizer.encode(s), dtype=torch.long) for s in (train, val))
    if len(val_ids) < block_size + 1:
        need = (block_size + 1) * 10 * max(1, len(val) // max(len(val_ids), 1))
        raise DataError(
            f"{path}: too short: the validation tenth is {len(val_ids)} tokens and needs block_size + 1 = "
            f"{block_size + 1}, so give at least {need:,} characters or a smaller --block-size"
        )
    return tokenizer, TextBatches(train_ids, block_size), TextBatches(val_ids, block_size)
