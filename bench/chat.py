"""A chat-tuned model against its base, and the models preference-tuned from it, on conversations they never saw,
each prompted as the app prompts it.

python bench/chat.py [--base weights/shakespeare-char] [--chat weights/shakespeare-chat] [--data tinyshakespeare.txt]
                     [--tuned NAME=FOLDER ...] [--reward-model FOLDER] [--max-new-tokens 200] [--write [FOLDER]]

The conversations are made as the chat model's were (gpt.training.conversations with its defaults: a speech and the next
speaker's reply, the same two speakers for a few exchanges) but from the validation 10% of the play. The base model
(the baseline) gets the Chat tab's scene layout (its two speakers, speeches ending in a blank line); the chat model
and each --tuned one (DPO, RL) their chat template.
- reply loss: nats to write each of the play's replies and end it (<|end|>, or a scene's blank line), per character
  of reply, each after its conversation so far as gpt.serving.chat lays it out;
- ended: the share of sampled replies (the app's default settings, seeded) that end by the layout's own end (the
  blank line of a scene, <|end|>) within the token limit;
- role leak: the share whose reply, up to that end, speaks another part: a `NAME:` line or the user's turn token;
- blank line: the share whose reply holds a blank line;
- pre-training loss: each model's exact validation loss on the play itself (what the fine-tune forgot);
- against the chat model (tuned models): the share of conversations where the model's reply beats the chat model's
  (same seeds) under the rule set of gpt/posttraining/preferences.py (more rules met; a tie counts half) and under
  the reward model (a higher score);
- the reward model's accuracy on pairs made from these conversations: the chat model's two replies to each, ranked by
  the rule set (the pairs it never saw);
- five conversations side by side: the play's reply, the base's and the chat model's.
--write records the figures in the chat model's metrics.json and card, or in the named folder's.
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
from gpt.posttraining.preferences import Pair, PairRows, judge, ranked_pairs  # noqa: E402
from gpt.posttraining.preferences import shown_reply as template_reply  # noqa: E402
from gpt.posttraining.reward import load_reward_model, pad_id, pair_figures, reward_scorer  # noqa: E402
from gpt.serving.chat import chat_prompt, layout, speakers, turns_of  # noqa: E402
from gpt.storage.folder import read_metrics, write_card, write_metrics  # noqa: E402
from gpt.training.conversations import play_conversations  # noqa: E402
from gpt.training.data import SPEAKER, read_text, split_text  # noqa: E402
from gpt.training.eval import scored, validation_loss  # noqa: E402

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
    if layout(lm) == "template":
        return template_reply(text)
    at = text.find("\n\n")
    reply = text if at < 0 else text[:at]
    return reply.strip(), at >= 0, any(SPEAKER.fullmatch(line.strip()) for line in reply.split("\n"))


def sampled(lm: gpt.LM, conversations: list[list[dict]], max_new_tokens: int, seed: int) -> list[str]:
    """Each conversation's last reply as sampled, with no stop so that what follows its end can be judged."""
    prompts = []
    for messages in conversations:
        history, message, _ = replies(messages)[-1]
        prompts.append(chat_prompt(lm, history, message).text)
    texts = []
    for i in range(0, len(prompts), 64):
        texts += lm.generate_batch(prompts[i : i + 64], max_new_tokens=max_new_tokens, seed=seed + i, **SETTINGS)
    return texts


def figures(lm: gpt.LM, conversations: list, text: str, max_new_tokens: int, seed: int) -> dict:
    raw = sampled(lm, conversations, max_new_tokens, seed)
    out = [shown_reply(lm, t) for t in raw]
    return {
        "layout": layout(lm) + (" ({} / {})".format(*speakers(lm)) if layout(lm) == "scene" else ""),
        "reply_loss": reply_loss(lm, conversations),
        "ended": sum(e for _, e, _ in out) / len(out),
        "role_leak": sum(leak for _, _, leak in out) / len(out),
        "blank_line": sum("\n\n" in r for r, _, _ in out) / len(out),
        "pretraining_val_loss": validation_loss(lm, text)[0],
        "replies": [r for r, _, _ in out],
        "raw": raw,
    }


def win_rate(mine: list[float], theirs: list[float]) -> float:
    """The share of conversations where mine is higher, a tie counting half."""
    return sum(1.0 if a > b else 0.5 if a == b else 0.0 for a, b in zip(mine, theirs)) / len(mine)


def against_chat(rows: dict, conversations: list, scorer) -> None:
    """Each tuned model's win rate over the chat model's replies: under the rule set, and under the reward model."""
    asked = [m[: max(i for i, x in enumerate(m) if x["role"] == "user") + 1] for m in conversations]

    def rules(raw: list[str]) -> list[float]:
        return [sum(judge(a[-1]["content"], t).values()) for a, t in zip(asked, raw)]

    def rewards(raw: list[str]) -> list[float]:
        shown = [template_reply(t) for t in raw]
        return scorer(asked, [r for r, _, _ in shown], [e for _, e, _ in shown])

    chat_rules, chat_rewards = rules(rows["chat"]["raw"]), rewards(rows["chat"]["raw"]) if scorer else None
    for name, r in rows.items():
        if name in ("base", "chat"):
            continue
        r["rules_win_rate"] = win_rate(rules(r["raw"]), chat_rules)
        if scorer:
            r["reward_win_rate"] = win_rate(rewards(r["raw"]), chat_rewards)


def reward_accuracy(chat: gpt.LM, folder: str, conversations: list, max_new_tokens: int, seed: int) -> dict:
    """The reward model on pairs it never saw: the chat model's two replies to each conversation, ranked by the
    rule set."""
    pairs, _ = ranked_pairs(chat, conversations, max_new_tokens, seed)
    model, tokenizer = load_reward_model(folder)
    pairs = [Pair(p["prompt"], p["chosen"][0], p["rejected"][0]) for p in pairs]
    rows = PairRows(pairs, tokenizer, model.config.block_size)
    return {"pairs": len(rows), **pair_figures(model, rows, pad_id(tokenizer))}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", default=str(ROOT / "weights" / "shakespeare-char"), help="the base model (baseline)")
    p.add_argument("--chat", default=str(ROOT / "weights" / "shakespeare-chat"), help="the chat-tuned model")
    p.add_argument("--tuned", action="append", default=[], metavar="NAME=FOLDER", help="a model tuned from --chat")
    p.add_argument("--reward-model", help="a reward model: its accuracy, and the win rates it gives")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the play both were trained on")
    p.add_argument("--max-new-tokens", type=int, default=200, help="the token limit of a sampled reply")
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--limit", type=int, help="the first N conversations only (a quick check; never with --write)")
    p.add_argument(
        "--write", nargs="?", const="", metavar="FOLDER", help="record the figures in this folder (default: --chat)"
    )
    args = p.parse_args()
    if not args.data.is_file():
        sys.exit(f"error: {args.data} not found: give --data the play the models were trained on")
    torch.manual_seed(args.seed)
    text = read_text(args.data)
    conversations = [c["messages"] for c in play_conversations(split_text(text)[1])][: args.limit]
    if args.limit and args.write is not None:
        sys.exit("error: --limit is for a quick check; the figures --write records are on every conversation")
    models = {"base": args.base, "chat": args.chat, **dict(t.split("=", 1) for t in args.tuned)}
    lms = {name: gpt.load(folder, device="cpu") for name, folder in models.items()}
    info = Path("/proc/cpuinfo")
    lines = info.read_text().splitlines() if info.exists() else []
    cpu = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), platform.machine())
    machine = f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}"
    print(f"machine: {machine}; {len(conversations)} conversations from the last 10% of {args.data.name}")
    rows = {name: figures(lm, conversations, text, args.max_new_tokens, args.seed) for name, lm in lms.items()}
    scorer = reward_scorer(args.reward_model, lms["chat"].tokenizer, "cpu") if args.reward_model else None
    against_chat(rows, conversations, scorer)
    heads = ("reply nats/char", "ended", "role leak", "blank line", "pre-training", "wins (rules)", "wins (reward)")
    print(f"{'':<6} {'layout':<28} " + " ".join(f"{h:>15}" for h in heads))
    for name, r in rows.items():
        cells = [f"{r['reply_loss']:.4f}", f"{r['ended']:.1%}", f"{r['role_leak']:.1%}", f"{r['blank_line']:.1%}"]
        cells += [f"{r['pretraining_val_loss']:.4f}"]
        cells += [f"{r[k]:.1%}" if k in r else "" for k in ("rules_win_rate", "reward_win_rate")]
        print(f"{name:<6} {r['layout']:<28} " + " ".join(f"{c:>15}" for c in cells))
    bench = {
        "command": "python bench/chat.py" + "".join(f" --tuned {t}" for t in args.tuned),
        "machine": machine,
        "conversations": len(conversations),
        "max_new_tokens": args.max_new_tokens,
        "base_name": Path(args.base).name,
        "models": {name: Path(folder).name for name, folder in models.items()},
    }
    if args.reward_model:
        bench["reward_model"] = {"name": Path(args.reward_model).name}
        bench["reward_model"] |= reward_accuracy(
            lms["chat"], args.reward_model, conversations, args.max_new_tokens, args.seed + 1
        )
        held = bench["reward_model"]
        print(f"reward model on {held['pairs']} pairs of held-out conversations: accuracy {held['accuracy']:.1%}")
    side = []
    for i, messages in enumerate(conversations[:5]):
        *before, (history, message, reply) = replies(messages)
        said = [t for pair in history for t in pair] + [message]
        side.append({"said": said, "play": reply, **{name: r["replies"][i] for name, r in rows.items()}})
        print(f"\n--- conversation {i + 1}")
        for j, line in enumerate(said):
            print(f"{'user' if j % 2 == 0 else 'reply'}: {line!r}")
        for who in ("play", *rows):
            print(f"  {who}: {side[-1][who]!r}")
    if args.write is not None:
        folder = Path(args.write or args.chat)
        metrics = read_metrics(folder)
        this = next((name for name, f in models.items() if Path(f).resolve() == folder.resolve()), "chat")
        skipped = ("replies", "raw")
        rows_kept = {name: {k: v for k, v in r.items() if k not in skipped} for name, r in rows.items()}
        metrics["chat_bench"] = {**bench, "this": this, **rows_kept, "side_by_side": side}
        write_metrics(folder, metrics)
        write_card(folder, lms[this].model.config, lms[this].tokenizer)
        print(f"\nrecorded in {folder}/metrics.json and its card")


if __name__ == "__main__":
    main()
