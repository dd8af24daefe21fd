"""Conversations for supervised fine-tuning (`--sft --data FILE.jsonl`), in OpenAI's chat fine-tuning format.

python -m gpt.conversations PLAY.txt --out chats.jsonl [--split train|val]: conversations made from a play (a speech
is the user's message, the next speaker's speech the reply, a few exchanges between the same two speakers), from the
training 90% or the validation 10% of the text as training splits it.

One conversation per line: {"messages": [{"role": "system" | "user" | "assistant", "content": "..."}, ...]}. A
conversation becomes tokens as the tokenizer's chat template renders it: each message is its role's turn token, its
text, a newline and the end-of-turn token. The loss counts the assistant's tokens only (its text, newline and end), as
nanochat masks them: the model learns to answer and to stop, not to write the user's lines. Every 10th conversation
(i % 10 == 9) validates, as every 10th line does in document mode.
"""

import argparse
import json
import sys
from pathlib import Path

import torch

from gpt.models.tokenizer import AnyTokenizer, UnknownCharactersError, turn
from gpt.storage.atomic import write_atomic
from gpt.training.data import SPEAKER, DataError, PaddedRows, TextBatches, read_text, split_text

ROLES = ("system", "user", "assistant")


def jsonl_lines(path: str | Path) -> list[tuple[int, str]]:
    """The non-blank lines of a UTF-8 JSONL file with their line numbers; a missing or non-UTF-8 file is a DataError."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    return [(n, line) for n, line in enumerate(lines, 1) if line.strip()]


def read_conversations(
    path: str | Path, prompts: bool = False, tokenizer: AnyTokenizer | None = None
) -> list[list[dict]]:
    """The file's conversations; a line that is not one is an error naming the line and what is wrong with it (with
    a tokenizer: characters it cannot read too). `prompts`: each ends with the user's message, which the model is to
    answer (--rl)."""
    conversations = []
    for n, line in jsonl_lines(path):
        try:
            messages = json.loads(line)["messages"]
        except (json.JSONDecodeError, TypeError, KeyError):
            raise DataError(f'{path}, line {n}: not a JSON object with "messages"') from None
        if not isinstance(messages, list) or not messages:
            raise DataError(f'{path}, line {n}: "messages" must be a non-empty list')
        for m in messages:
            if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
                raise DataError(f"{path}, line {n}: each message needs a role ({', '.join(ROLES)}) and a text content")
        if prompts and messages[-1]["role"] != "user":
            raise DataError(f"{path}, line {n}: a prompt ends with the user's message, which the model answers")
        if not prompts and not any(m["role"] == "assistant" for m in messages):
            raise DataError(f"{path}, line {n}: no assistant message, so nothing to learn from")
        unknown = tokenizer.unknown("".join(m["content"] for m in messages)) if tokenizer else []
        if unknown:
            raise DataError(f"{path}, line {n}: {UnknownCharactersError(unknown, getattr(tokenizer, 'chars', None))}")
        conversations.append([{"role": m["role"], "content": m["content"]} for m in messages])
    if len(conversations) < 10:
        raise DataError(f"{path}: at least 10 conversations are needed (every 10th validates)")
    return conversations


def split_conversations(conversations: list) -> tuple[list, list]:
    return [c for i, c in enumerate(conversations) if i % 10 != 9], conversations[9::10]


def render(tokenizer: AnyTokenizer, messages: list[dict]) -> tuple[list[int], list[bool]]:
    """The conversation's tokens and, for each, whether the model is taught to write it (the assistant's)."""
    ids, taught = [], []
    for m in messages:
        head = tokenizer.encode(f"<|{m['role']}|>")
        body = tokenizer.encode(turn(m["role"], m["content"]))[len(head) :]  # its text, a newline and the end of turn
        ids += head + body
        taught += [False] * len(head) + [m["role"] == "assistant"] * len(body)
    return ids, taught


def prompt_ids(tokenizer: AnyTokenizer, messages: list[dict]) -> list[int]:
    """What the model continues to write the next reply: the conversation, then the assistant's turn token."""
    return render(tokenizer, messages)[0] + tokenizer.encode("<|assistant|>")


class ConversationBatches(PaddedRows):
    """Whole conversations from their start (the first block_size tokens of a longer one), padded; targets that are
    not the assistant's are -1, which the loss ignores."""

    def __init__(self, conversations: list[list[dict]], tokenizer: AnyTokenizer, block_size: int):
        rendered = [render(tokenizer, c) for c in conversations]
        longest = min(max(len(ids) for ids, _ in rendered) - 1, block_size)
        x = torch.zeros(len(rendered), longest, dtype=torch.long)
        y = torch.full((len(rendered), longest), -1, dtype=torch.long)
        for i, (ids, taught) in enumerate(rendered):
            ids, taught = torch.tensor(ids[: longest + 1]), torch.tensor(taught[: longest + 1])
            x[i, : len(ids) - 1] = ids[:-1]
            y[i, : len(ids) - 1] = torch.where(taught[1:], ids[1:], -1)
        super().__init__(x, y)


class WithReplay:
    """Conversations with windows of running text among them, a `share` of each batch, learnt as text (every token a
    target): replay of what the base model knew, so that chat-tuning on a little data does not wear it away."""

    def __init__(self, conversations: ConversationBatches, text: TextBatches, share: float):
        self.conversations, self.text, self.share = conversations, text, share
        self.row_length, self.tokens = conversations.row_length, conversations.tokens

    def sample(self, batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        n = round(batch_size * self.share)
        x, y = self.conversations.sample(batch_size - n, generator)
        if not n:
            return x, y
        tx, ty = self.text.sample(n, generator)
        return torch.cat([x, tx]), torch.cat([y, ty])


def load_conversations(
    path: str | Path, block_size: int, tokenizer: AnyTokenizer, replay: str | Path | None = None, share: float = 0.0
) -> tuple[AnyTokenizer, ConversationBatches | WithReplay, ConversationBatches]:
    """The tokenizer with its turn tokens, and train/validation samplers of the file's conversations (training with
    the replay text's training split in a share of each batch, when given)."""
    tokenizer = tokenizer.with_turns()
    train, val = split_conversations(read_conversations(path, tokenizer=tokenizer))
    train_rows = ConversationBatches(train, tokenizer, block_size)
    if replay:
        windows = replay_windows(read_text(replay), replay, tokenizer, train_rows.row_length)
        train_rows = WithReplay(train_rows, windows, share)
    return tokenizer, train_rows, ConversationBatches(val, tokenizer, block_size)


def replay_windows(text: str, path: str | Path, tokenizer: AnyTokenizer, block_size: int) -> TextBatches:
    """Windows of the training split of the base model's text (--replay): --sft's batches hold some, --rl's mix."""
    ids = torch.tensor(tokenizer.encode(split_text(text)[0]), dtype=torch.long)
    if len(ids) <= block_size:
        raise DataError(f"{path}: too short to replay: give the text the base model was trained on")
    return TextBatches(ids, block_size)


class Prompts:
    """Conversations for the model to answer (--rl): their messages and their prompt tokens (the last block_size)."""

    def __init__(self, conversations: list[list[dict]], tokenizer: AnyTokenizer, block_size: int):
        self.conversations = conversations
        self.ids = [prompt_ids(tokenizer, c)[-block_size:] for c in conversations]
        self.row_length, self.tokens = block_size, sum(map(len, self.ids))


def load_prompts(path: str | Path, block_size: int, tokenizer: AnyTokenizer) -> tuple[AnyTokenizer, Prompts, Prompts]:
    """A chat model's tokenizer and the file's prompts, every 10th held out."""
    if not tokenizer.specials:
        raise DataError("--rl tunes a chat model: --init-from a model chat-tuned with --sft (it has turn tokens)")
    train, val = split_conversations(read_conversations(path, prompts=True, tokenizer=tokenizer))
    return tokenizer, Prompts(train, tokenizer, block_size), Prompts(val, tokenizer, block_size)


def describe_conversations(path: str | Path, prompts: bool = False) -> dict:
    """The folder's record of its chat data: the file, how many conversations, real first messages as examples."""
    conversations = read_conversations(path, prompts)
    return {
        "file": Path(path).name,
        "conversations": len(conversations),
        "form": "conversations",
        "chat": "template",
        "openings": openings(conversations),
    }


def openings(conversations: list[list[dict]]) -> list[str]:
    """Up to four first messages of the conversations, one line each and short enough for a card's example."""
    firsts = [next((m["content"] for m in c if m["role"] == "user"), "") for c in conversations]
    one_line = [f for f in dict.fromkeys(firsts) if f and len(f) <= 60 and "\n" not in f]
    short = [f for f in one_line if len(f) >= 4] or one_line
    return [short[i * len(short) // 4] for i in range(4)] if len(short) > 4 else short


def whole_speeches(text: str) -> list[tuple[str, str]]:
    """(speaker, what they say) of every blank-line-separated paragraph in a play's `NAME:` form."""
    out = []
    for paragraph in text.split("\n\n"):
        lines = paragraph.strip("\n").split("\n")
        if len(lines) > 1 and SPEAKER.fullmatch(lines[0].rstrip()):
            out.append((lines[0].rstrip()[:-1], "\n".join(line.strip() for line in lines[1:])))
    return out


def play_conversations(text: str, turns: int = 2, max_chars: int = 240) -> list[dict]:
    """Exchanges between two speakers who answer each other: the first one's speeches are the user's, the second's
    the assistant's, up to `turns` exchanges and `max_chars` of text (240 fits the flagship's context of 256 with the
    turn tokens)."""
    spoken, out, i = whole_speeches(text), [], 0
    while i + 1 < len(spoken):
        user, model = spoken[i][0], spoken[i + 1][0]
        messages, size, j = [], 0, i
        while j + 1 < len(spoken) and len(messages) < 2 * turns and (spoken[j][0], spoken[j + 1][0]) == (user, model):
            said, reply = spoken[j][1], spoken[j + 1][1]
            if user == model or size + len(said) + len(reply) > max_chars:
                break
            messages += [{"role": "user", "content": said}, {"role": "assistant", "content": reply}]
            size, j = size + len(said) + len(reply), j + 2
        out += [{"messages": messages}] if messages else []
        i = j if messages else i + 1
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m gpt.conversations", description=__doc__.splitlines()[2])
    p.add_argument("play", help="a UTF-8 play in Tiny Shakespeare's form (NAME: lines, blank lines between speeches)")
    p.add_argument("--out", required=True, help="the JSONL file to write")
    p.add_argument("--split", choices=["train", "val"], default="train", help="the training 90%% or the last 10%%")
    p.add_argument("--turns", type=int, default=2, help="exchanges per conversation at most")
    p.add_argument("--max-chars", type=int, default=240, help="characters of text per conversation at most")
    p.add_argument(
        "--prompts", action="store_true", help="end each at its last user message: prompts for --rl to answer"
    )
    args = p.parse_args(argv)
    try:
        train, val = split_text(read_text(args.play))
    except DataError as e:
        sys.exit(f"error: {e}")
    conversations = play_conversations(train if args.split == "train" else val, args.turns, args.max_chars)
    if not conversations:
        sys.exit(f"error: {args.play}: no speeches in a play's form (NAME: on its own line, then the speech)")
    if args.prompts:
        conversations = [{"messages": c["messages"][:-1]} for c in conversations]  # each ends with the reply
    lines = "".join(json.dumps(c) + "\n" for c in conversations)
    write_atomic(Path(args.out), lambda f: f.write_text(lines, encoding="utf-8"))
    print(f"{len(conversations):,} conversations from the {args.split} split of {args.play} in {args.out}")


if __name__ == "__main__":
    main()
