"""Character-level tokenizer: one token per distinct character of the training text, saved as tokenizer.json.

Unknown characters are an error (`UnknownCharactersError`, naming them): a character the model never saw has no
trained embedding, so silently mapping it to something would only hide the problem.

Document mode (one item per line, as names.txt): the newline is the boundary token (id 0). An item is fed as
boundary + characters and ends when the model emits the boundary, so a model starts fresh items and says when one is
finished.

On disk it is a Hugging Face `tokenizers` file that transformers' AutoTokenizer reads: a BPE model whose vocabulary is
the characters, with no merges, and a Fuse decoder, so encoding and decoding are exactly ours. In document mode the
boundary is a special token that a post-processor puts before every text, and it is the BOS and EOS token.
tokenizer_config.json beside it names those tokens for transformers. The first format (`{"type": "char", ...}`) still
loads.
"""

import json
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, processors

BOUNDARY = "\n"


class UnknownCharactersError(ValueError):
    def __init__(self, chars: list[str], known: list[str] | None = None):
        self.chars = chars
        shown = ", ".join(repr(c) for c in chars)
        hint = "remove or replace these characters"
        if known is not None:
            if all(c.lower() in known for c in chars):
                hint = "this model knows only lowercase letters: write in lowercase"
            else:
                printable = "".join(c for c in known if c.isprintable() and c != " ")
                hint += (
                    f"; it knows {printable!r}"
                    + (", space" if " " in known else "")
                    + (" and newline" if "\n" in known else "")
                )
        super().__init__(f"the model's vocabulary has no {shown}: {hint}")


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
            raise UnknownCharactersError(self.unknown(text), self.chars) from None

    def decode(self, ids) -> str:
        return "".join(self.chars[i] for i in ids)

    def save(self, folder: str | Path) -> None:
        """tokenizer.json and tokenizer_config.json in a folder."""
        tok = Tokenizer(models.BPE(vocab=dict(self.stoi), merges=[], ignore_merges=True))
        tok.decoder = decoders.Fuse()
        settings = {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "clean_up_tokenization_spaces": False,
            "model_max_length": None,
        }
        if self.documents:
            tok.add_special_tokens([BOUNDARY])
            tok.post_processor = processors.TemplateProcessing(
                single=f"{BOUNDARY} $A", special_tokens=[(BOUNDARY, self.boundary_id)]
            )
            settings.update(bos_token=BOUNDARY, eos_token=BOUNDARY)
        folder = Path(folder)
        (folder / "tokenizer.json").write_text(tok.to_str(pretty=True), encoding="utf-8")
        (folder / "tokenizer_config.json").write_text(
            json.dumps({k: v for k, v in settings.items() if v is not None}, indent=1)
        )

    @classmethod
    def load(cls, path: str | Path) -> "CharTokenizer":
        """From a folder's tokenizer.json (or the file itself)."""
        path = Path(path)
        path = path / "tokenizer.json" if path.is_dir() else path
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("type") == "char":  # the first format
                return cls(data["chars"], bool(data.get("documents", False)))
            if data["model"]["type"] != "BPE" or data["model"]["merges"]:
                raise ValueError("not a character vocabulary (a BPE model with no merges)")
            vocab = data["model"]["vocab"]
            chars = sorted(vocab, key=vocab.get)
            if [vocab[c] for c in chars] != list(range(len(chars))):
                raise ValueError("token ids are not 0..n-1")
            return cls(chars, documents=data.get("post_processor") is not None)
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: tokenizer.json is missing") from None
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError, ValueError) as e:
            raise ValueError(f"{path}: tokenizer.json is not a valid character tokenizer ({e})") from None
