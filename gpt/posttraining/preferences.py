"""Preference pairs (`--dpo FILE`, `--reward-model FILE`), and rankings of a chat model's own replies by a rule set.

A pair is one line in TRL's conversational preference format, which `datasets` reads:
{"prompt": [messages ending with the user's], "chosen": [{"role": "assistant", "content": ...}], "rejected": [...]}.
A reply the token limit cut before it ended its turn may say so with "ended": false in its message; it is then
rendered without the end of turn, so that what is learnt can see the difference (TRL and `datasets` ignore the key).
Every 10th pair (i % 10 == 9) is held out, as every 10th conversation is.

python -m gpt.preferences CHAT_MODEL CONVERSATIONS.jsonl --out PAIRS.jsonl: two replies to each conversation's last
user message sampled at the app's settings, ranked by RULES (what a user's thumbs stand for here); a pair wherever
one reply meets more of the rules than the other.
"""

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from gpt.models.tokenizer import END, AnyTokenizer, UnknownCharactersError
from gpt.serving.generate import LM, load
from gpt.storage.atomic import write_atomic
from gpt.training.conversations import ROLES, jsonl_lines, openings, prompt_ids, read_conversations, render
from gpt.training.data import SPEAKER, DataError

APP_SAMPLING = dict(temperature=0.8, top_k=40, top_p=0.95)  # the app's defaults: how users meet the replies


@dataclass
class Pair:
    prompt: list[dict]
    chosen: dict
    rejected: dict


def read_messages(value, path, n: int, key: str) -> list[dict]:
    if not isinstance(value, list) or not value:
        raise DataError(f'{path}, line {n}: "{key}" must be a non-empty list of messages')
    for m in value:
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            raise DataError(f"{path}, line {n}: each message needs a role ({', '.join(ROLES)}) and a text content")
    return value


def read_pairs(path: str | Path, tokenizer: AnyTokenizer | None = None) -> list[Pair]:
    """The file's pairs; a line that is not one is an error naming the line and what is wrong."""
    pairs = []
    for n, line in jsonl_lines(path):
        try:
            record = json.loads(line)
            prompt, chosen, rejected = record["prompt"], record["chosen"], record["rejected"]
        except (json.JSONDecodeError, TypeError, KeyError):
            raise DataError(f'{path}, line {n}: not a JSON object with "prompt", "chosen" and "rejected"') from None
        prompt = read_messages(prompt, path, n, "prompt")
        if prompt[-1]["role"] != "user":
            raise DataError(f"{path}, line {n}: the prompt ends with the user's message, which the replies answer")
        replies = [read_messages(r, path, n, k) for r, k in ((chosen, "chosen"), (rejected, "rejected"))]
        if any(len(r) != 1 or r[0]["role"] != "assistant" for r in replies):
            raise DataError(f'{path}, line {n}: "chosen" and "rejected" each hold one assistant message')
        text = "".join(m["content"] for m in [*prompt, *replies[0], *replies[1]])
        unknown = tokenizer.unknown(text) if tokenizer else []
        if unknown:
            raise DataError(f"{path}, line {n}: {UnknownCharactersError(unknown, getattr(tokenizer, 'chars', None))}")
        pairs.append(Pair(prompt, replies[0][0], replies[1][0]))
    if len(pairs) < 10:
        raise DataError(f"{path}: at least 10 pairs are needed (every 10th is held out)")
    return pairs


def reply_ids(tokenizer: AnyTokenizer, message: dict) -> list[int]:
    """A reply's tokens after the prompt's <|assistant|>: its text, then the newline and end of turn unless it was
    cut ("ended": false)."""
    head = len(tokenizer.encode("<|assistant|>"))
    ids = render(tokenizer, [{"role": "assistant", "content": message["content"]}])[0][head:]
    return ids if message.get("ended", True) else ids[: -len(tokenizer.encode("\n" + END))]


def fitted(prompt: list[int], reply: list[int], block_size: int) -> tuple[list[int], list[int]]:
    """A prompt and reply that fit the context together: the reply keeps its first 3/4 of it, the prompt its end."""
    reply = reply[: block_size * 3 // 4]
    return prompt[-(block_size - len(reply)) :], reply


class PairRows:
    """A file's pairs as token rows: for each pair, (prompt, chosen reply) and (prompt, rejected reply)."""

    def __init__(self, pairs: list[Pair], tokenizer: AnyTokenizer, block_size: int):
        self.pairs = pairs
        self.rows = []
        for pair in pairs:
            asked = prompt_ids(tokenizer, pair.prompt)
            chosen = fitted(asked, reply_ids(tokenizer, pair.chosen), block_size)
            rejected = fitted(asked, reply_ids(tokenizer, pair.rejected), block_size)
            self.rows.append((chosen, rejected))
        self.row_length = block_size
        self.tokens = sum(len(p) + len(r) for both in self.rows for p, r in both)

    def __len__(self) -> int:
        return len(self.rows)

    def batch(self, picks: list[int]) -> tuple[list[list[int]], list[list[int]]]:
        """Prompts and replies of the picked pairs: the chosen ones first, then the rejected in the same order."""
        chosen, rejected = [self.rows[i][0] for i in picks], [self.rows[i][1] for i in picks]
        return [p for p, _ in chosen + rejected], [r for _, r in chosen + rejected]


def load_pairs(path: str | Path, block_size: int, tokenizer: AnyTokenizer) -> tuple[AnyTokenizer, PairRows, PairRows]:
    """A chat model's tokenizer and the file's pairs, every 10th held out."""
    if not tokenizer.specials:
        raise DataError("preference tuning is for a chat model: --init-from a model chat-tuned with --sft")
    pairs = read_pairs(path, tokenizer)
    train = [p for i, p in enumerate(pairs) if i % 10 != 9]
    return tokenizer, PairRows(train, tokenizer, block_size), PairRows(pairs[9::10], tokenizer, block_size)


def describe_pairs(path: str | Path) -> dict:
    """The folder's record of its preference data (its openings are real first messages, for the card's snippets)."""
    pairs = read_pairs(path)
    shown = openings([p.prompt for p in pairs])
    return {
        "file": Path(path).name,
        "pairs": len(pairs),
        "form": "preference pairs",
        "chat": "template",
        "openings": shown,
    }


# The rule set that stands for users' thumbs on the Shakespeare chat model (the defects bench/chat.py measures).
RULES = {
    "ends": "ends its turn within the token limit",
    "one part": "speaks no other part (no NAME: line, no user turn)",
    "no blank line": "holds no blank line",
    "takes up": "takes up a word of the message (one of four or more letters)",
}


def shown_reply(text: str) -> tuple[str, bool, bool]:
    """A chat model's raw continuation (sampled with no stop) as the Chat tab shows it, whether it ended its turn
    and whether it speaks another part."""
    found = [(text.find(e), e) for e in (END, "<|user|>") if e in text]
    at, end = min(found) if found else (len(text), None)
    reply = text[:at]
    leak = end == "<|user|>" or any(SPEAKER.fullmatch(line.strip()) for line in reply.split("\n"))
    return reply.strip(), end == END, leak


def words(text: str) -> set[str]:
    return {w.lower() for w in re.findall(r"[^\W\d_]{4,}", text)}


def judge(message: str, text: str) -> dict[str, bool]:
    """Which of RULES a raw continuation meets as the reply to `message`."""
    reply, ended, leak = shown_reply(text)
    said = bool(reply.strip())  # an empty reply meets no rule: else it meets three, and RL learns to say nothing
    return {
        "ends": said and ended,
        "one part": said and not leak,
        "no blank line": said and "\n\n" not in reply,
        "takes up": bool(words(message) & words(reply)),
    }


def ranked_pairs(lm: LM, conversations: list[list[dict]], max_new_tokens: int, seed: int) -> tuple[list, list]:
    """Two replies to each conversation's last user message; the pairs (TRL's format) where the rules rank one
    above the other, and every reply's rule results."""
    from gpt.serving.chat import chat_prompt, turns_of

    asked = [c[: max(i for i, m in enumerate(c) if m["role"] == "user") + 1] for c in conversations]
    prompts = [chat_prompt(lm, turns_of(a[:-1]), a[-1]["content"], reply_room=max_new_tokens).text for a in asked]
    pairs, judged = [], []
    bar = tqdm(total=len(prompts), unit="prompt", desc="ranking", dynamic_ncols=True)
    for start in range(0, len(prompts), 32):
        chunk = [p for p in prompts[start : start + 32] for _ in range(2)]
        texts = lm.generate_batch(chunk, max_new_tokens=max_new_tokens, seed=seed + 2 * start, **APP_SAMPLING)
        for i in range(0, len(texts), 2):
            prompt = asked[start + i // 2]
            results = [judge(prompt[-1]["content"], t) for t in texts[i : i + 2]]
            judged += results
            scores = [sum(r.values()) for r in results]
            if scores[0] == scores[1]:
                continue
            better = 0 if scores[0] > scores[1] else 1
            messages = []
            for j in (better, 1 - better):
                reply, ended, _ = shown_reply(texts[i + j])
                messages.append([{"role": "assistant", "content": reply} | ({} if ended else {"ended": False})])
            pairs.append({"prompt": prompt, "chosen": messages[0], "rejected": messages[1]})
        bar.update(len(chunk) // 2)
        tokens = 2 * bar.n * max_new_tokens  # every reply is sampled to the limit, so that its end can be judged
        bar.set_postfix(pairs=len(pairs), tok_s=f"{tokens / max(bar.format_dict['elapsed'], 1e-9):,.0f}", refresh=False)
    bar.close()
    return pairs, judged


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m gpt.preferences", description=__doc__.splitlines()[0])
    p.add_argument("model", help="the chat model whose replies are ranked (a folder or Hub repo id)")
    p.add_argument("conversations", help="conversations (JSONL, OpenAI's chat format) whose last message is answered")
    p.add_argument("--out", required=True, help="the JSONL file of pairs to write")
    p.add_argument("--max-new-tokens", type=int, default=200, help="the token limit of a reply (the app's default)")
    p.add_argument("--seed", type=int, default=1337)
    args = p.parse_args(argv)
    try:
        lm = load(args.model, device="cpu")
        if not lm.tokenizer.specials:
            raise DataError(f"{args.model} is not chat-tuned (no turn tokens): rank a model made with --sft")
        conversations = read_conversations(args.conversations, tokenizer=lm.tokenizer)
    except (DataError, ValueError, FileNotFoundError) as e:
        sys.exit(f"error: {e}")
    torch.manual_seed(args.seed)
    pairs, judged = ranked_pairs(lm, conversations, args.max_new_tokens, args.seed)
    lines = "".join(json.dumps(pair) + "\n" for pair in pairs)
    write_atomic(Path(args.out), lambda f: f.write_text(lines, encoding="utf-8"))
    met = ", ".join(f"{name} {sum(j[name] for j in judged) / len(judged):.1%}" for name in RULES)
    print(f"{len(pairs):,} pairs from {len(conversations):,} conversations in {args.out}; replies meeting: {met}")


if __name__ == "__main__":
    main()
