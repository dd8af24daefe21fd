"""Character-level tokenizer: one token per distinct character of the training text, saved as tokenizer.json.

Unknown characters are an error (`UnknownCharactersError`, naming them): a character the model never saw has no
trained embedding, so silently mapping it to something would only hide the problem.

Document mode (one item per line, as names.txt): the newline is the boundary token (id 0). An item is fed as
boundary + characters and ends when the model emits the boundary, so a model starts fresh items and says when one is
finished.
"""

import json
from pathlib import Path

BOUNDARY = "\n"


class UnknownCharactersError(ValueError):
    def __init__(self, chars: list[str]):
        self.chars = chars
        shown = ", ".join(repr(c) for c in chars)
        super().__init__(f"the model's vocabulary has no {shown}: remove or replace these characters")


class CharTokenizer:
    def __init__(self, chars: list[str], documents: bool = False):
        if len(set(chars)) != len(chars) or any(len(c) != 1 for c in chars):
            raise ValueError("tokenizer chars must be distinct single characters")
        if documents and chars[:1] != [BOUNDARY]:
            raise ValueError("a document-mode tokenizer has the newline boundary as token 0")
        self.chars = chars
        self.documents = documents
        self.stoi = {c: i for i, c in enumerate(chars)}

    @classmethod
    def from_text(cls, text: str, documents: bool = False) -> "CharTokenizer":
        chars = sorted(set(text) - {BOUNDARY}) if documents else sorted(set(text))
        return cls([BOUNDARY] + chars if documents else chars, documents)

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    @property
    def boundary_id(self) -> int | None:
        """The token that starts and ends an item in document mode; None for running text."""
        return 0 if self.documents else None

    def unknown(self, text: str) -> list[str]:
        return sorted(set(text) - self.stoi.keys())

    def encode(self, text: str) -> list[int]:
        try:
            return [self.stoi[c] for c in text]
        except KeyError:
            raise UnknownCharactersError(self.unknown(text)) from None

    def decode(self, ids) -> str:
        return "".join(self.chars[i] for i in ids)

    def save(self, path: str | Path) -> None:
        data = {"type": "char", "version": 1, "documents": self.documents, "chars": self.chars}
        Path(path).write_text(json.dumps(data, ensure_ascii=False, indent=1), encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> "CharTokenizer":
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
            return cls(data["chars"], bool(data.get("documents", False)))
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: tokenizer.json is missing") from None
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{path}: tokenizer.json is not a valid character tokenizer ({e})") from None
