"""A reward model: the chat model's transformer with a one-score head, learnt from preference pairs.

python -m gpt.train --init-from CHAT --reward-model PAIRS.jsonl --out DIR trains it (Bradley-Terry: the loss is
-log sigmoid(score(chosen) - score(rejected)), as TRL's RewardTrainer); `--rl DIR` then tunes a chat model towards
what it scores highly. The score is read at a row's last token, which is the reply's end of turn when it ended.

The folder is transformers' GPT2ForSequenceClassification (num_labels 1, `score.weight`, no lm_head), which reads
the score at the last token that is not pad_token_id; the pad is the system turn token, which never ends a row here.
"""

import json
import shutil
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn as nn
from safetensors.torch import load_file
from torch.nn import functional as F

from gpt.models.model import GPT, GPTConfig
from gpt.models.tokenizer import AnyTokenizer, load_tokenizer
from gpt.posttraining.preferences import PairRows, describe_pairs, fitted, reply_ids
from gpt.storage.atomic import fresh_dir
from gpt.storage.folder import (
    MB,
    config_json,
    is_reward_folder,
    parse_config,
    publish,
    read_capped,
    save_tensors,
    write_card,
    write_metrics,
)
from gpt.storage.folder_checks import ModelFileError, check_config, check_stored, check_values
from gpt.storage.hub import resolve
from gpt.storage.layout import REWARD_ARCHITECTURES, family, from_stored, stored_tensors
from gpt.training.config import DTYPES
from gpt.training.conversations import prompt_ids
from gpt.training.loss_plot import write_loss_plot
from gpt.training.optim import apply_gradients, learning_rate
from gpt.training.run import Run

PAD = "<|system|>"


class RewardModel(nn.Module):
    """A GPT whose head gives one number for a whole row (read at its last token)."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config = replace(config, tie_embeddings=True)  # the language head is not used
        self.gpt = GPT(config)
        self.score = nn.Linear(config.n_embd, 1, bias=False)
        nn.init.zeros_(self.score.weight)  # every reply starts level: the pairs alone move the scores apart

    def num_params(self) -> int:
        return self.config.num_params() + self.config.n_embd

    def forward(self, idx: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Each row's score (B,), read at its last token (row i's tokens are idx[i, :lengths[i]])."""
        h = self.gpt.hidden(idx)
        return self.score(h[torch.arange(len(idx), device=idx.device), lengths - 1])[:, 0]


def padded(rows: list[list[int]], pad: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of token ids padded on the right to the longest, and their lengths."""
    ids = torch.full((len(rows), max(map(len, rows))), pad, dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
    return ids.to(device), torch.tensor(list(map(len, rows)), device=device)


def scores(model: RewardModel, rows: list[list[int]], pad: int, batch_size: int = 64) -> torch.Tensor:
    """The scores of token rows, in batches."""
    device = next(model.parameters()).device
    out = [model(*padded(rows[i : i + batch_size], pad, device)) for i in range(0, len(rows), batch_size)]
    return torch.cat(out) if out else torch.zeros(0)


def pad_id(tokenizer: AnyTokenizer) -> int:
    return tokenizer.encode(PAD)[0]


def save_reward_folder(model: RewardModel, tokenizer: AnyTokenizer, out: Path, metrics: dict, dtype) -> None:
    """The reward model's folder, written aside and moved into place (the weights first), then its card."""
    out.mkdir(parents=True, exist_ok=True)
    tmp = fresh_dir(out / ".saving")
    kind = family(model.config)
    tensors = {**stored_tensors(model.gpt, kind), "score.weight": model.score.weight}  # the head is tied: not stored
    config = config_json(model.config, end_id=tokenizer.end_id)
    config |= {"architectures": [REWARD_ARCHITECTURES[kind]], "num_labels": 1, "pad_token_id": pad_id(tokenizer)}
    try:
        weights = {k: v.detach().to("cpu", dtype) for k, v in tensors.items()}
        save_tensors(weights, tmp / "model.safetensors", {"format": "pt"})
        (tmp / "config.json").write_text(json.dumps(config, indent=2))
        tokenizer.save(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    publish(tmp, out)
    write_metrics(out, metrics)
    write_card(out, model.config, tokenizer)


def load_reward_model(folder: str | Path, name: str | None = None) -> tuple[RewardModel, AnyTokenizer]:
    """A reward model folder's model (eval mode, float32, CPU) and tokenizer, checked as a language model's is."""
    folder, source = Path(folder), name or str(folder)
    if not is_reward_folder(folder):
        names = ", ".join(REWARD_ARCHITECTURES.values())
        raise ModelFileError(f"{source}: not a reward model (its config.json names none of {names})")
    data = json.loads(read_capped(folder / "config.json", MB))
    config, kind = parse_config({k: v for k, v in data.items() if k != "architectures"}, source)  # its transformer's
    check_config(config, source)
    weights = folder / "model.safetensors"
    check_stored(config, weights, source)
    tensors = load_file(str(weights))
    check_values(tensors, source)
    model = RewardModel(config)
    score = tensors.pop("score.weight", None)
    state = {f"gpt.{k}": v for k, v in from_stored(tensors, model.config, kind, source).items()}
    try:
        model.load_state_dict({**state, "score.weight": score}, strict=True)
    except (RuntimeError, TypeError) as e:
        raise ModelFileError(f"{source}: model.safetensors does not match config.json ({str(e)[:200]})") from None
    return model.eval(), load_tokenizer(folder)


def pair_figures(model: RewardModel, rows: PairRows, pad: int) -> dict:
    """Bradley-Terry loss, accuracy (chosen scored higher) and mean margin over every pair of `rows`."""
    prompts, replies = rows.batch(list(range(len(rows))))
    with torch.no_grad():
        s = scores(model, [p + r for p, r in zip(prompts, replies)], pad)
    margin = s[: len(rows)] - s[len(rows) :]
    return {
        "loss": -F.logsigmoid(margin).mean().item(),
        "accuracy": (margin > 0).float().mean().item(),
        "margin": margin.mean().item(),
    }


class PairRun(Run):
    """A training run on preference pairs (a reward model's, DPO's): each evaluation scores every held-out pair (the
    subclass's held_out: loss, accuracy, margin), and the best model is the one with the lowest held-out loss."""

    def describe_data(self) -> dict:
        return describe_pairs(self.c.reward_model or self.c.dpo)

    def learn(self, loss: torch.Tensor, margin: torch.Tensor, tokens: int) -> dict:
        """Step on a batch's loss; the bar's figures (pairs ordered right: margin > 0)."""
        apply_gradients(self.trained, self.optimizers, self.scaler, loss, self.c.grad_clip)
        figures = {"loss": loss.item(), "accuracy": (margin > 0).float().mean().item()}
        self.pending.append(figures)
        self.tokens_seen += tokens
        return figures

    def evaluate(self, step: int, tokens_per_s: float) -> dict:
        was_training = self.model.training
        self.model.eval()
        figures = self.held_out(self.model)
        self.model.train(was_training)
        recent, self.pending = self.pending, []
        entry = {"step": step}
        for key in ("loss", "accuracy"):
            entry[f"train_{key}"] = sum(f[key] for f in recent) / len(recent) if recent else None
        entry |= {f"val_{k}": v for k, v in figures.items()}
        entry.update(lr=learning_rate(max(step - 1, 0), self.c), tokens_per_s=round(tokens_per_s))
        entry["time_s"] = round(self.wall_time(), 1)
        self.curve.append(entry)
        if figures["loss"] < self.best_val:
            self.best_val = figures["loss"]
            if self.master:
                self.save()
        self.checkpoint(step)
        return entry

    def eval_line(self, entry: dict) -> str:
        trained = "" if entry["train_loss"] is None else f"train loss {entry['train_loss']:.4f}, "
        return (
            f"step {entry['step']}: {trained}held-out loss {entry['val_loss']:.4f}, "
            f"accuracy {entry['val_accuracy']:.1%}, margin {entry['val_margin']:.3f}"
        )

    def plot(self) -> None:
        write_loss_plot(self.curve, self.out / "loss.png", label="pair loss (nats)")


class RewardRun(PairRun):
    """A reward model's training run (see the module's docstring)."""

    def make_model(self, model: GPT) -> RewardModel:
        reward = RewardModel(model.config)
        reward.gpt.load_state_dict(model.state_dict(), strict=False)  # a tied head: lm_head is the embedding
        return reward

    def step(self, step: int) -> tuple[dict, float, int]:
        c, data = self.c, self.train_data
        lr = self.set_rate(step)
        picks = self.draw(c.batch_size, len(data))
        prompts, replies = data.batch(picks)
        rows = [p + r for p, r in zip(prompts, replies)]
        with self.ctx:
            s = self.trained(*padded(rows, pad_id(self.tokenizer), self.device)).float()
        margin = s[: c.batch_size] - s[c.batch_size :]
        tokens = sum(map(len, rows))
        return self.learn(-F.logsigmoid(margin).mean(), margin, tokens), lr, tokens

    def held_out(self, model) -> dict:
        return pair_figures(model, self.val_data, pad_id(self.tokenizer))

    def save(self) -> None:
        save_reward_folder(self.model, self.tokenizer, self.out, self.metrics(), DTYPES[self.c.save_dtype])

    def best_model(self) -> RewardModel:
        return load_reward_model(self.out)[0]

    def final_figures(self, model: RewardModel) -> dict:
        return {"val_pairs": len(self.val_data), **{f"val_{k}": v for k, v in self.held_out(model).items()}}

    def samples(self, model) -> None:
        return None


def reward_scorer(spec: str, tokenizer: AnyTokenizer, device):
    """scores(conversations, replies, ended) of the reward model in folder or repo `spec`, for --rl."""
    model, own = load_reward_model(resolve(spec), name=spec)
    if own.kind != tokenizer.kind or [own.decode([i]) for i in range(own.vocab_size)] != [
        tokenizer.decode([i]) for i in range(tokenizer.vocab_size)
    ]:
        raise ValueError(f"--rl {spec}: the reward model's tokenizer differs from the chat model's")
    model.to(device).requires_grad_(False)
    pad, block = pad_id(tokenizer), model.config.block_size

    def score(conversations: list[list[dict]], replies: list[str], ended: list[bool]) -> list[float]:
        rows = []
        for conversation, text, end in zip(conversations, replies, ended):
            message = {"content": text, "ended": end}
            rows.append(sum(fitted(prompt_ids(tokenizer, conversation), reply_ids(tokenizer, message), block), []))
        with torch.no_grad():
            return scores(model, rows, pad).tolist()

    return score
