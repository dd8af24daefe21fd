"""The names assistant's task: requests for a name with constraints, their checker (the RL reward) and its data.

A request has one to three constraints, in this order and each at most once:

    A name that C.    A name that C and D.    A name that C, D and E.

    starts with "S"   1 to 3 lower-case letters
    ends with "E"     1 to 3 lower-case letters
    has N letters     N from 3 to 12
    contains "C"      2 lower-case letters

The answer is the name alone, in lower case. The reward is 1 when the answer is one word of lower-case letters that
meets every constraint, else 0: a program can check it, so every post-training stage is measured the same way.
`namelike_reward` adds a term for how much the answer reads as a name (its loss under a model of names): the met
reward alone is won by stringing letters together.

python -m gpt.names_task names.txt --out-dir DIR writes, from the training names (line i with i % 10 != 9, as
document mode splits names.txt), what the three stages train on: names.txt (the names alone, for pre-training),
sft.jsonl (requests with a name that meets them, for --sft) and prompts.jsonl (requests alone, for --rl).
"""

import argparse
import functools
import json
import os
import random
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.nn import functional as F

from gpt.serving.chat import message_text
from gpt.serving.generate import load
from gpt.training.data import DataError, read_text, split_documents

KINDS = ("starts", "ends", "length", "contains")
LENGTHS = range(3, 13)
ALPHABET = ' ",.0123456789A'  # what a request spells beside the lower-case letters of names
PHRASES = {
    "starts": ('starts with "{}"', r'starts with "([a-z]{1,3})"'),
    "ends": ('ends with "{}"', r'ends with "([a-z]{1,3})"'),
    "length": ("has {} letters", r"has (\d{1,2}) letters"),
    "contains": ('contains "{}"', r'contains "([a-z]{2})"'),
}
LEAD = "A name that "
NAME = re.compile(r"[a-z]+")
NAMES_MODEL = "weights/names"  # the model of names namelike_reward scores with (GPT_NAMES_MODEL overrides)
NAMELIKE_FREE = 1.5  # nats per character a name may cost under it before namelike_reward takes anything off
NAMELIKE_WEIGHT = 0.3  # reward taken off per nat per character above that (a string of letters costs 4-8)


@dataclass(frozen=True)
class Request:
    """What a name must be: each field None when the request does not ask it."""

    starts: str | None = None
    ends: str | None = None
    length: int | None = None
    contains: str | None = None

    @property
    def kinds(self) -> list[str]:
        return [k for k in KINDS if getattr(self, k) is not None]

    def __str__(self) -> str:
        parts = [PHRASES[k][0].format(getattr(self, k)) for k in self.kinds]
        said = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
        return f"{LEAD}{said}."

    def checks(self, answer: str) -> dict[str, bool]:
        """Each constraint's verdict on an answer (already stripped)."""
        verdict = {
            "starts": lambda v: answer.startswith(v),
            "ends": lambda v: answer.endswith(v),
            "length": lambda v: len(answer) == v,
            "contains": lambda v: v in answer,
        }
        return {k: verdict[k](getattr(self, k)) for k in self.kinds}

    def met(self, answer: str) -> bool:
        """One word of lower-case letters that meets every constraint."""
        answer = answer.strip()
        return bool(NAME.fullmatch(answer)) and all(self.checks(answer).values())


def parse(text: str) -> Request:
    """The request a text states; a ValueError says what the grammar is when the text is not one."""
    text = text.strip()
    wrong = ValueError(f'not a request: {text!r} (say "A name that C.", "... C and D." or "... C, D and E.")')
    if not (text.startswith(LEAD) and text.endswith(".")):
        raise wrong
    said = text[len(LEAD) : -1]
    head, _, last = said.rpartition(" and ")
    parts = head.split(", ") + [last] if head else [said]
    if len(parts) > 3:
        raise wrong
    values: dict = {}
    for phrase in parts:
        kind = next((k for k in KINDS if re.fullmatch(PHRASES[k][1], phrase)), None)
        if kind is None:
            raise wrong
        if values and KINDS.index(kind) <= max(KINDS.index(k) for k in values):
            raise ValueError(f"not a request: {text!r} (constraints come once each, in the order {', '.join(KINDS)})")
        value = re.fullmatch(PHRASES[kind][1], phrase).group(1)
        values[kind] = int(value) if kind == "length" else value
    if values.get("length") is not None and values["length"] not in LENGTHS:
        raise ValueError(f"not a request: {text!r} (a length is from {LENGTHS[0]} to {LENGTHS[-1]} letters)")
    return Request(**values)


def request_for(name: str, rng: random.Random) -> Request:
    """A request of one to three constraints, drawn at random, that `name` meets."""
    possible = [k for k in KINDS if k != "length" or len(name) in LENGTHS]
    if len(name) < 2:
        possible.remove("contains")
    kinds = sorted(rng.sample(possible, rng.randint(1, min(3, len(possible)))), key=KINDS.index)
    values: dict = {}
    for kind in kinds:
        if kind in ("starts", "ends"):
            k = rng.randint(1, min(3, len(name)))
            values[kind] = name[:k] if kind == "starts" else name[-k:]
        elif kind == "length":
            values[kind] = len(name)
        else:
            i = rng.randrange(len(name) - 1)
            values[kind] = name[i : i + 2]
    return Request(**values)


def base_prompt(request: Request) -> str:
    """How a model of names (never taught requests) is asked as well as it can be: a new line, then the letters the
    name must start with; its answer is those letters and what it writes up to the line's end."""
    return "\n" + (request.starts or "")


def reward(conversation: list[dict], reply: str) -> float:
    """The RL reward (`--rl gpt.names_task:reward`): 1 when the reply meets the last user message's request, else 0."""
    asked = next(m for m in reversed(conversation) if m.get("role") == "user")
    try:
        request = parse(message_text(asked.get("content")))
    except ValueError:
        return 0.0
    return float(request.met(reply))


@functools.cache
def names_model():
    """The model of names namelike_reward scores with, loaded once per process."""
    return load(os.environ.get("GPT_NAMES_MODEL", NAMES_MODEL), device="cpu")


def name_losses(words: list[str]) -> list[float]:
    """Loss per character of each word (its end included) under the model of names, from a fresh start: one forward
    pass for them all."""
    lm = names_model()
    tok, room = lm.tokenizer, lm.model.config.block_size - 1
    rows = [tok.encode(w)[:room] for w in words]
    width = max(map(len, rows), default=0) + 1
    x = torch.tensor([[tok.boundary_id] + r + [tok.boundary_id] * (width - 1 - len(r)) for r in rows])
    y = torch.tensor([r + [tok.boundary_id] + [-1] * (width - 1 - len(r)) for r in rows])
    with torch.inference_mode():
        logits, _ = lm.model(x)
        losses = F.cross_entropy(logits.transpose(1, 2), y, ignore_index=-1, reduction="none").sum(1)
    return [loss / (len(r) + 1) for loss, r in zip(losses.tolist(), rows)]


def namelike_reward(conversations: list[list[dict]], replies: list[str]) -> list[float]:
    """The met reward minus NAMELIKE_WEIGHT per nat per character an answer costs under the model of names above
    NAMELIKE_FREE (`--rl gpt.names_task:namelike_reward`): a met answer that reads as a name scores near 1."""
    met = [reward(c, r) for c, r in zip(conversations, replies)]
    words = [(i, r.strip()) for i, r in enumerate(replies) if NAME.fullmatch(r.strip())]
    for (i, _), loss in zip(words, name_losses([w for _, w in words]) if words else []):
        met[i] -= NAMELIKE_WEIGHT * max(0.0, loss - NAMELIKE_FREE)
    return met


namelike_reward.batched = True


def names_of(path: str | Path, split: str = "train") -> list[str]:
    """The names of a split of a names file (document mode's: line i validates when i % 10 == 9), lower-case words."""
    train, val = split_documents(read_text(path))
    names = [n for n in (train if split == "train" else val) if NAME.fullmatch(n)]
    if not names:
        raise DataError(f"{path}: no names (one lower-case word a line)")
    return names


def conversation(request: Request, answer: str | None = None) -> dict:
    messages = [{"role": "user", "content": str(request)}]
    return {"messages": messages + ([{"role": "assistant", "content": answer}] if answer is not None else [])}


def write_jsonl(path: Path, records: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m gpt.names_task", description=__doc__.splitlines()[0])
    p.add_argument("names", help="names.txt: one lower-case name a line")
    p.add_argument("--out-dir", required=True, help="folder for names.txt, sft.jsonl and prompts.jsonl")
    p.add_argument("--sft", type=int, default=3, help="requests per training name in sft.jsonl")
    p.add_argument("--prompts", type=int, default=20000, help="requests in prompts.jsonl")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    try:
        names = names_of(args.names)
    except DataError as e:
        sys.exit(f"error: {e}")
    rng, out = random.Random(args.seed), Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "names.txt").write_text("\n".join(names) + "\n", encoding="utf-8")
    sft = [conversation(request_for(n, rng), n) for _ in range(args.sft) for n in names]
    rng.shuffle(sft)
    write_jsonl(out / "sft.jsonl", sft)
    write_jsonl(out / "prompts.jsonl", [conversation(request_for(rng.choice(names), rng)) for _ in range(args.prompts)])
    print(
        f"{len(names):,} training names: {out}/names.txt, {len(sft):,} in sft.jsonl, {args.prompts:,} in prompts.jsonl"
    )


if __name__ == "__main__":
    main()
