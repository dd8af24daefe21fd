"""Tokenizers, saved as tokenizer.json: characters (the default) or a byte-level BPE trained on the training text.

Characters: one token per distinct character of the training text.

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

Byte-level BPE (`--tokenizer bpe`, GPT-2's scheme, trained by `tokenizers`): the 256 bytes are tokens, so any UTF-8
text encodes and nothing is unknown; merges learnt from the training split make common pieces single tokens. A token
may end inside a character: its `token_bytes` are what a stream decodes incrementally (gpt/serving/sampling.py's
Row). In document mode the boundary is the special token `<|endoftext|>` (id 0), standing for the end of a line.

A chat-tuned tokenizer (`--sft`) has the turn tokens `<|system|>`, `<|user|>`, `<|assistant|>` and `<|end|>` after
its vocabulary: whole tokens wherever they appear in a text, special tokens in tokenizer.json, and a `chat_template`
in tokenizer_config.json that renders a conversation as exactly those tokens and the messages' text (each message
ends with a newline before its `<|end|>`: a turn ends as a speech does, at a line's end).
"""

import json
import re
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

BOUNDARY = "\n"
BPE_BOUNDARY = "<|endoftext|>"
TURNS = ("<|system|>", "<|user|>", "<|assistant|>", "<|end|>")  # a chat-tuned model's tokens, after the vocabulary
END = TURNS[-1]
CHAT_TEMPLATE = (  # transformers' apply_chat_template renders exactly what turn() below gives
    "{% for message in messages %}{{ '<|' + message['role'] + '|>' + (message['content']"
    + "".join(f" | replace('{t}', '')" for t in TURNS)
    + " | trim) + '\n<|end|>' }}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)


def turn(role: str, text: str) -> str:
    """A message as a chat model reads it: its role's turn token, its text, a newline and the end of turn. Turn tokens
    typed in the text are taken out, so a message can never end its own turn or speak as another role."""
    for token in TURNS:
        text = text.replace(token, "")
    return f"<|{role}|>{text.strip()}\n{END}"


def chat_settings(specials: list[str]) -> dict:
    """tokenizer_config.json's entries for a chat-tuned tokenizer: its template and its end of turn."""
    return {"chat_template": CHAT_TEMPLATE, "eos_token": END} if specials else {}


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
    kind = "character"

    def __init__(self, chars: list[str], documents: bool = False, specials: list[str] | tuple = ()):
        if len(set(chars)) != len(chars) or any(len(c) != 1 for c in chars):
            raise ValueError("tokenizer chars must be distinct single characters")
        if documents and chars[:1] != [BOUNDARY]:
            raise ValueError("a document-mode tokenizer has the newline boundary as token 0")
        self.chars = chars
        self.documents = documents
        self.specials = list(specials)  # whole tokens after the characters (a chat model's turns)
        self.stoi = {c: i for i, c in enumerate(chars)}
        self.special_ids = {t: len(chars) + i for i, t in enumerate(self.specials)}
        self.splitter = re.compile("(" + "|".join(map(re.escape, self.specials)) + ")") if self.specials else None

    def with_turns(self) -> "CharTokenizer":
        """This tokenizer with the chat turn tokens added (new ids after the vocabulary)."""
        return self if self.specials else CharTokenizer(self.chars, self.documents, TURNS)

    @classmethod
    def from_text(cls, text: str, documents: bool = False) -> "CharTokenizer":
        chars = sorted(set(text) - {BOUNDARY}) if documents else sorted(set(text))
        return cls([BOUNDARY] + chars if documents else chars, documents)

    @property
    def vocab_size(self) -> int:
        return len(self.chars) + len(self.specials)

    @property
    def boundary_id(self) -> int | None:
        """The token that starts and ends an item in document mode; None for running text."""
        return 0 if self.documents else None

    @property
    def end_id(self) -> int | None:
        """Where a generation ends in any engine: a chat model's end of turn, else the boundary (document mode)."""
        return self.special_ids[END] if self.specials else self.boundary_id

    def unknown(self, text: str) -> list[str]:
        return sorted(set(self.splitter.sub("", text) if self.splitter else text) - self.stoi.keys())

    def encode(self, text: str) -> list[int]:
        pieces = self.splitter.split(text) if self.splitter else [text]
        try:
            return [
                i
                for p in pieces
                for i in ([self.special_ids[p]] if p in self.special_ids else map(self.stoi.__getitem__, p))
            ]
        except KeyError:
            raise UnknownCharactersError(self.unknown(text), self.chars) from None

    def decode(self, ids) -> str:
        n = len(self.chars)
        return "".join(self.chars[i] if i < n else self.specials[i - n] for i in ids)

    def token_bytes(self, i: int) -> bytes:
        return self.decode([i]).encode()

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
        tok.add_special_tokens(self.specials)
        settings.update(chat_settings(self.specials))
        folder = Path(folder)
        (folder / "tokenizer.json").write_text(tok.to_str(pretty=True), encoding="utf-8")
        (folder / "tokenizer_config.json").write_text(
            json.dumps({k: v for k, v in settings.items() if v is not None}, indent=1)
        )

    @classmethod
    def load(cls, path: str | Path) -> "CharTokenizer":
        """From a folder's tokenizer.json (or the file itself)."""
        path, data = read_tokenizer_json(path)
        try:
            if data.get("type") == "char":  # the first format
                return cls(data["chars"], bool(data.get("documents", False)))
            if data["model"]["type"] != "BPE" or data["model"]["merges"]:
                raise ValueError("not a character vocabulary (a BPE model with no merges)")
            vocab = data["model"]["vocab"]
            chars = sorted(vocab, key=vocab.get)
            added = sorted(
                (t for t in data.get("added_tokens") or [] if t["content"] not in vocab), key=lambda t: t["id"]
            )
            if [vocab[c] for c in chars] + [t["id"] for t in added] != list(range(len(chars) + len(added))):
                raise ValueError("token ids are not 0..n-1")
            specials = [t["content"] for t in added]
            return cls(chars, documents=data.get("post_processor") is not None, specials=specials)
        except (KeyError, TypeError, AttributeError, ValueError) as e:
            raise ValueError(f"{path}: tokenizer.json is not a valid character tokenizer ({e})") from None


def byte_alphabet() -> list[str]:
    """GPT-2's printable stand-in for each byte value, in byte order (what byte-level tokens are spelt with)."""
    kept = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    extra = iter(range(256, 512))
    return [chr(b) if b in kept else chr(next(extra)) for b in range(256)]


class BPETokenizer:
    kind = "byte-level BPE"

    def __init__(self, tokenizer: Tokenizer, documents: bool = False):
        self.tokenizer, self.documents = tokenizer, documents
        if documents and tokenizer.token_to_id(BPE_BOUNDARY) != 0:
            raise ValueError(f"a document-mode BPE tokenizer has {BPE_BOUNDARY} as token 0")
        byte_of = {c: b for b, c in enumerate(byte_alphabet())}
        vocab = tokenizer.get_vocab()
        added = {t.content for t in tokenizer.get_added_tokens_decoder().values()}
        self.specials = sorted(added - {BPE_BOUNDARY}, key=vocab.get)
        self._bytes = [b""] * len(vocab)
        for token, i in vocab.items():
            if i >= len(vocab):
                raise ValueError("token ids are not 0..n-1")
            whole = BOUNDARY if token == BPE_BOUNDARY else token if token in added else None
            self._bytes[i] = whole.encode() if whole else bytes(byte_of[c] for c in token)

    def with_turns(self) -> "BPETokenizer":
        """This tokenizer with the chat turn tokens added (new ids after the vocabulary)."""
        if self.specials:
            return self
        tokenizer = Tokenizer.from_str(self.tokenizer.to_str())
        tokenizer.add_special_tokens(list(TURNS))
        return BPETokenizer(tokenizer, self.documents)

    @classmethod
    def train(cls, texts: list[str], vocab_size: int, documents: bool = False) -> "BPETokenizer":
        """Merges learnt from the texts (the training split) up to vocab_size tokens, the 256 bytes included."""
        least = 256 + documents
        if vocab_size < least:
            raise ValueError(f"--vocab-size {vocab_size} is too small: a byte-level BPE needs at least {least}")
        tokenizer = Tokenizer(models.BPE())
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            special_tokens=[BPE_BOUNDARY] if documents else [],
            show_progress=False,
        )
        tokenizer.train_from_iterator(texts, trainer)
        if documents:
            tokenizer.post_processor = processors.TemplateProcessing(
                single=f"{BPE_BOUNDARY} $A", special_tokens=[(BPE_BOUNDARY, 0)]
            )
        return cls(tokenizer, documents)

    @property
    def vocab_size(self) -> int:
        return len(self._bytes)

    @property
    def boundary_id(self) -> int | None:
        return 0 if self.documents else None

    @property
    def end_id(self) -> int | None:
        """Where a generation ends in any engine: a chat model's end of turn, else the boundary (document mode)."""
        return self.tokenizer.token_to_id(END) if self.specials else self.boundary_id

    def unknown(self, text: str) -> list[str]:
        return []

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, ids) -> str:
        return b"".join(self._bytes[i] for i in ids).decode("utf-8", errors="replace")

    def token_bytes(self, i: int) -> bytes:
        return self._bytes[i]

    def save(self, folder: str | Path) -> None:
        folder = Path(folder)
        (folder / "tokenizer.json").write_text(self.tokenizer.to_str(pretty=True), encoding="utf-8")
        settings = {"tokenizer_class": "PreTrainedTokenizerFast", "clean_up_tokenization_spaces": False}
        if self.documents:
            settings.update(bos_token=BPE_BOUNDARY, eos_token=BPE_BOUNDARY)
        settings.update(chat_settings(self.specials))
        (folder / "tokenizer_config.json").write_text(json.dumps(settings, indent=1))


MB = 1 << 20


class TooLargeError(ValueError):
    """A folder's file is past its size limit."""


def read_capped(path: Path, limit: int) -> str:
    """A folder's text file, refused past `limit` bytes before it is read: a crafted folder cannot fill the memory."""
    size = path.stat().st_size
    if size > limit:
        raise TooLargeError(f"{path.name} is {size / MB:,.1f} MB, more than its {limit / MB:g} MB limit")
    return path.read_text(encoding="utf-8")


def read_tokenizer_json(path: str | Path) -> tuple[Path, dict]:
    path = Path(path)
    path = path / "tokenizer.json" if path.is_dir() else path
    try:
        return path, json.loads(read_capped(path, 64 * MB))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: tokenizer.json is missing") from None
    except TooLargeError as e:
        raise ValueError(f"{path}: {e}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: tokenizer.json is not valid JSON ({e})") from None


def load_tokenizer(path: str | Path) -> CharTokenizer | BPETokenizer:
    """A folder's tokenizer (or the file's), whichever kind it is."""
    path, data = read_tokenizer_json(path)
    if not isinstance(data, dict) or (data.get("pre_tokenizer") or {}).get("type") != "ByteLevel":
        return CharTokenizer.load(path)
    try:
        return BPETokenizer(Tokenizer.from_str(json.dumps(data)), documents=data.get("post_processor") is not None)
    except Exception as e:  # tokenizers raises its own exception types for a malformed file
        raise ValueError(f"{path}: tokenizer.json is not a valid byte-level BPE tokenizer ({e})") from None


AnyTokenizer = CharTokenizer | BPETokenizer
