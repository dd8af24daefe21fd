"""A chat-tuned model against its base on conversations it never saw, each prompted as the app prompts it.

python bench/chat.py [--base weights/shakespeare-char] [--chat weights/shakespeare-chat] [--data tinyshakespeare.txt]
                     [--max-new-tokens 200] [--write]

The conversations are made as the chat model's were (gpt.conversations with its defaults: a speech and the next
speaker's reply, the same two speakers for a few exchanges) but from the validation 10% of the play. The base model
(the baseline) gets the Chat tab's scene layout (its two speakers, speeches ending in a blank line); the chat model
its chat template.
- reply loss: nats to write each of the play's replies and end it (<|end|>, or a scene's blank line), per character
  of reply, each after its conversation so far as gpt.chat lays it out;
- ended: the share of sampled replies (the app's default settings, seeded) that end by the layout's own end (the
  blank line of a scene, <|end|>) within the token limit;
- role leak: the share whose reply, up to that end, speaks another part: a `NAME:` line or the user's turn token;
- pre-training loss: each model's exact validation loss on the play itself (what the fine-tune forgot);
- five conversations side by side: the play's reply, the base's and the chat model's.
--write records the figures in the chat model's metrics.json and its card.
"""

import argparse
import os
import platform
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import gpt  # noqa: E402
from gpt.chat import chat_prompt, layout, speakers, turns_of  # noqa: E402
from gpt.conversations import play_conversations  # noqa: E402
from gpt.data import SPEAKER, read_text, split_text  # noqa: E402
from gpt.eval import scored, validation_loss  # noqa: E402
from gpt.folder import read_metrics, write_card, write_metrics  # noqa: E402
from gpt.tokenizer import END  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "tinyshakespeare.txt"
SETTINGS = dict(temperature=0.8, top_k=40, top_p=0.95)  # the app's defaults


def replies(messages: list[dict]) -> list[tuple[list[tuple[str, str]], str, str]]:
    """(the turns before, the user's message, the reply) for each assistant message of a conversation."""
    out = []
    for i, m in enumerate(messages):
        if m["role"] == "assistant" and i and messages[i - 1]["role"] == "user":
            out.append((turns_of(messages[: i - 1]), messages[i - 1]["content"], m["content"]))
    return out


@torch.no_grad()
def reply_loss(lm: gpt.LM, conversations: list[list[dict]]) -> float:
    """Nats to write every reply and end it (the layout's end: <|end|>, or a scene's blank line) per character of
    reply, each after the prompt the app would build for it."""
    rows, characters = [], 0
    for messages in conversations:
        for history, message, reply in replies(messages):
            prompt = chat_prompt(lm, history, message, reply_room=len(reply) + 2)
            answer = lm.tokenizer.encode(reply) + lm.tokenizer.encode(prompt.stop[0])
            ids = (lm.tokenizer.encode(prompt.text) + answer)[-(lm.block_size + 1) :]
            rows.append((ids, len(answer)))
            characters += len(reply)
    width = max(len(ids) for ids, _ in rows) - 1
    x = torch.zeros(len(rows), width, dtype=torch.long)
    y = torch.full((len(rows), width), -1, dtype=torch.long)
    for i, (ids, n) in enumerate(rows):
        x[i, : len(ids) - 1] = torch.tensor(ids[:-1])
        y[i, len(ids) - 1 - n : len(ids) - 1] = torch.tensor(ids[-n:])
    loss, count, _ = scored(lm, [(x[i : i + 64], y[i : i + 64]) for i in range(0, len(rows), 64)])
    return loss * count / characters


def shown_reply(lm: gpt.LM, text: str) -> tuple[str, bool, bool]:
    """The reply as the Chat tab shows it, whether it ended by the layout's end, and whether it speaks another part."""
    ends = [END, "<|user|>"] if layout(lm) == "template" else ["\n\n"]
    found = [(text.find(e), e) for e in ends if e in text]
    at, end = min(found) if found else (len(text), None)
    reply = text[:at]
    leak = end == "<|user|>" or any(SPEAKER.fullmatch(line.strip()) for line in reply.split("\n"))
    return reply.strip(), end is not None and end != "<|user|>", leak


def sampled(lm: gpt.LM, conversations: list[list[dict]], max_new_tokens: int, seed: int) -> list[tuple]:
    """Each conversation's last reply, sampled with no stop so that what follows its end can be judged."""
    prompts = []
    for messages in conversations:
        history, message, _ = replies(messages)[-1]
        prompts.append(chat_prompt(lm, history, message).text)
    texts = []
    for i in range(0, len(prompts), 64):
        texts += lm.generate_batch(prompts[i : i + 64], max_new_tokens=max_new_tokens, seed=seed + i, **SETTINGS)
    return [shown_reply(lm, t) for t in texts]


def figures(lm: gpt.LM, conversations: list, text: str, max_new_tokens: int, seed: int) -> dict:
    out = sampled(lm, conversations, max_new_tokens, seed)
    return {
        "layout": layout(lm) + (" ({} / {})".format(*speakers(lm)) if layout(lm) == "scene" else ""),
        "reply_loss": reply_loss(lm, conversations),
        "ended": sum(e for _, e, _ in out) / len(out),
        "role_leak": sum(leak for _, _, leak in out) / len(out),
        "pretraining_val_loss": validation_loss(lm, text)[0],
        "replies": [r for r, _, _ in out],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", default=str(ROOT / "weights" / "shakespeare-char"), help="the base model (baseline)")
    p.add_argument("--chat", default=str(ROOT / "weights" / "shakespeare-chat"), help="the chat-tuned model")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the play both were trained on")
    p.add_argument("--max-new-tokens", type=int, default=200, help="the token limit of a sampled reply")
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--write", action="store_true", help="record the figures in the chat model's metrics and card")
    args = p.parse_args()
    if not args.data.is_file():
        sys.exit(f"error: {args.data} not found: give --data the play the models were trained on")
    torch.manual_seed(args.seed)
    text = read_text(args.data)
    conversations = [c["messages"] for c in play_conversations(split_text(text)[1])]
    base, chat = gpt.load(args.base, device="cpu"), gpt.load(args.chat, device="cpu")
    info = Path("/proc/cpuinfo")
    lines = info.read_text().splitlines() if info.exists() else []
    cpu = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), platform.machine())
    machine = f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}"
    print(f"machine: {machine}; {len(conversations)} conversations from the last 10% of {args.data.name}")
    rows = {}
    for name, lm in (("base", base), ("chat", chat)):
        rows[name] = figures(lm, conversations, text, args.max_new_tokens, args.seed)
    print(f"{'':<6} {'layout':<32} {'reply nats/char':>15} {'ended':>7} {'role leak':>9} {'pre-training loss':>17}")
    for name, r in rows.items():
        print(
            f"{name:<6} {r['layout']:<32} {r['reply_loss']:>15.4f} {r['ended']:>7.1%} {r['role_leak']:>9.1%} "
            f"{r['pretraining_val_loss']:>17.4f}"
        )
    side = []
    for i, messages in enumerate(conversations[:5]):
        *before, (history, message, reply) = replies(messages)
        said = [t for pair in history for t in pair] + [message]
        side.append(
            {"said": said, "play": reply, "base": rows["base"]["replies"][i], "chat": rows["chat"]["replies"][i]}
        )
        print(f"\n--- conversation {i + 1}")
        for j, line in enumerate(said):
            print(f"{'user' if j % 2 == 0 else 'reply'}: {line!r}")
        for who in ("play", "base", "chat"):
            print(f"  {who}: {side[-1][who]!r}")
    if args.write:
        metrics = read_metrics(args.chat)
        metrics["chat_bench"] = {
            "command": "python bench/chat.py",
            "machine": machine,
            "conversations": len(conversations),
            "max_new_tokens": args.max_new_tokens,
            "base_name": Path(args.base).name,
            **{name: {k: v for k, v in r.items() if k != "replies"} for name, r in rows.items()},
            "side_by_side": side,
        }
        write_metrics(Path(args.chat), metrics)
        write_card(Path(args.chat), chat.model.config, chat.tokenizer)
        print(f"\nrecorded in {args.chat}/metrics.json and its card")


if __name__ == "__main__":
    main()
