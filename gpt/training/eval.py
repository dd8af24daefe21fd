"""Exact validation loss of a model folder on a data file: python -m gpt.eval PATH_OR_REPO --data FILE [--docs].

Uses the training split (running text: last 10% of characters; documents: lines with i % 10 == 9) and scores every
validation target once, so the figure is exact rather than an estimate from random batches. Beside nats per token it
gives bits per byte (the same sum over the targets' UTF-8 bytes), which compares character and BPE models:
- running text: consecutive rows of block_size targets (a window model: ROW_LENGTH), each with the context it would
  have in training;
- documents: each item from a boundary with no earlier context, its end boundary included (as makemore scores).
"""

import argparse
import math
import sys
from pathlib import Path

import torch
from torch.nn import functional as F

import gpt
from gpt.models.tokenizer import UnknownCharactersError
from gpt.serving.generate import LM, load
from gpt.storage.folder import read_metrics, write_card, write_metrics
from gpt.training.conversations import ConversationBatches, read_conversations, split_conversations
from gpt.training.data import DataError, DocumentBatches, describe_text, read_text, split_documents, split_text


@torch.no_grad()
def validation_loss(lm: LM, text: str, batch_size: int = 64) -> tuple[float, int, float]:
    """Mean cross-entropy (nats per token) over the validation split of `text`, the number of targets, and bits per
    byte (a document model's boundary counts as the newline it stands for)."""
    tok, T = lm.tokenizer, lm.row_length
    if tok.documents:
        _, val = split_documents(text)
        batches = DocumentBatches([tok.encode(d) for d in val], T, tok.boundary_id).all(batch_size)
    else:
        _, val = split_text(text)
        ids = torch.tensor(tok.encode(val), dtype=torch.long)
        n = (len(ids) - 1) // T
        x, y = ids[: n * T].view(n, T), ids[1 : n * T + 1].view(n, T)
        batches = [(x[i : i + batch_size], y[i : i + batch_size]) for i in range(0, n, batch_size)]
        rest = len(ids) - 1 - n * T
        if rest:
            batches.append((ids[n * T : -1][None], ids[n * T + 1 :][None]))
    return scored(lm, batches)


@torch.no_grad()
def conversation_loss(lm: LM, path: str | Path, batch_size: int = 64) -> tuple[float, int, float]:
    """The same figures over the assistant's tokens of the validation conversations (every 10th) of a JSONL file."""
    _, val = split_conversations(read_conversations(path))
    return scored(lm, ConversationBatches(val, lm.tokenizer, lm.block_size).all(batch_size))


def scored(lm: LM, batches) -> tuple[float, int, float]:
    """Nats per target, the number of targets and bits per byte over (x, y) batches whose ignored targets are -1."""
    tok, device = lm.tokenizer, lm.device
    token_bytes = torch.tensor([len(tok.token_bytes(i)) for i in range(tok.vocab_size)], device=device)
    total, count, size = 0.0, 0, 0
    for x, y in batches:
        logits, _ = lm.model(x.to(device))
        y = y.to(device)
        total += F.cross_entropy(logits.flatten(0, 1).float(), y.flatten(), ignore_index=-1, reduction="sum").item()
        count += int((y != -1).sum())
        size += int(token_bytes[y[y != -1]].sum())
    return total / count, count, total / (math.log(2) * size)


def record_validation_loss(folder: str | Path, path: str | Path) -> float:
    """Score a model folder exactly on the text file it was trained on and put the figures, and the record of the text
    (for a folder made before records), in its metrics.json and model card."""
    folder, text = Path(folder), read_text(path)
    lm = load(folder, device="cpu")
    loss, _, bits = validation_loss(lm, text)
    metrics = read_metrics(folder)
    about = describe_text(path, text, lm.tokenizer.documents)
    metrics.setdefault("run", {}).update(exact_val_loss=loss, val_bits_per_byte=bits, text=about)
    write_metrics(folder, metrics)
    write_card(folder, lm.model.config, lm.tokenizer)
    return loss


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog=gpt.prog("gpt.eval"), description=__doc__.splitlines()[0])
    p.add_argument("model", help="model folder or Hub repo id")
    p.add_argument("--data", required=True, help="the UTF-8 text file (or, for a chat model, JSONL) it was trained on")
    p.add_argument("--docs", action="store_true", help="document mode (must match the model's tokenizer)")
    p.add_argument("--device", default=None, help="cpu, cuda or mps (default: the best available)")
    p.add_argument("--write", action="store_true", help="also record the figure in the folder's metrics and card")
    args = p.parse_args(argv)
    try:
        lm = load(args.model, device=args.device)
        if args.docs != lm.tokenizer.documents:
            mode = "document mode: add --docs" if lm.tokenizer.documents else "running text: drop --docs"
            raise ValueError(f"{args.model} was trained on {mode}")
        if lm.tokenizer.specials:  # a chat-tuned model: its data is conversations, scored on the assistant's tokens
            loss, count, bits = conversation_loss(lm, args.data)
        else:
            loss, count, bits = validation_loss(lm, read_text(args.data))
        if args.write and lm.tokenizer.specials:
            raise ValueError("--write records a text model's figures; a chat model's come from its --sft run")
        if args.write:
            record_validation_loss(args.model, args.data)
    except (DataError, UnknownCharactersError, ValueError, FileNotFoundError) as e:
        sys.exit(f"error: {e}")
    print(f"val loss {loss:.4f} nats per token, {bits:.4f} bits per byte ({count:,} targets, {args.data})")


if __name__ == "__main__":
    main()
