"""Reinforcement learning of a chat model with a reward a program computes (`--rl REWARD --prompts FILE`).

Group-relative policy gradient, as nanochat's chat_rl: each step takes --batch-size prompts, samples --group-size
replies to each from the current model at temperature 1, scores every reply with the reward, and raises the
log-probability of each reply's tokens in proportion to its advantage: its reward minus its group's mean. A group
whose replies all score the same has no advantage to follow and is skipped (a tiny model sees many such groups).

What keeps the model near where it started is a KL penalty to the frozen starting model (--kl, GRPO's per-token
estimator exp(r) - r - 1 with r = log p_start - log p), not replay of the fine-tuning data: the penalty acts on the
model's own replies, where drift shows, and costs one forward pass of the frozen model; replay would need the
fine-tuning file and would pull towards its answers rather than towards what the model already did. The reward checks
what it checks (a constraint, say); the penalty keeps everything else as it was (an answer that reads as a name).
The penalty sees replies only: what the model knew of its pre-training text drifts where no reply goes. --replay TEXT
adds that text's loss on --batch-size windows, weighted by --replay-share (InstructGPT's PPO-ptx), and the card gives
its validation loss before and after.

REWARD is `module:function`, called as function(conversation, reply) -> number, where conversation is the prompt's
messages and reply the model's text: gpt.names_task:reward, or any checker of one's own on the Python path. A function
with the attribute `batched = True` is called once a step as function(conversations, replies) -> list of numbers, as
TRL calls its reward functions (gpt.names_task:namelike_reward scores every reply in one forward pass). Or it is
a reward model's folder or Hub repo id (gpt/posttraining/reward.py), which scores a step's replies in one batch and
sees whether each ended its turn.
"""

import importlib
import math
from collections.abc import Callable
from pathlib import Path

import torch
from torch.nn import functional as F

from gpt.models.tokenizer import AnyTokenizer
from gpt.posttraining.reward import reward_scorer
from gpt.serving.decode import DecodeBatch
from gpt.serving.generate import LM
from gpt.serving.sampling import SamplingParams
from gpt.storage.folder import load_model
from gpt.training.config import TrainConfig, recorded_settings
from gpt.training.conversations import Prompts, describe_conversations, replay_windows
from gpt.training.data import read_text
from gpt.training.eval import validation_loss
from gpt.training.loss_plot import write_loss_plot
from gpt.training.optim import apply_gradients, learning_rate
from gpt.training.run import Run

Reward = Callable[[list[dict], str], float]
Scorer = Callable[[list[list[dict]], list[str], list[bool]], list[float]]  # (conversations, replies, ended) -> rewards
APP_SAMPLING = dict(temperature=0.8, top_k=40, top_p=0.95)  # the app's defaults: how held-out replies are judged
EVAL_PROMPTS = 256  # held-out prompts scored at each evaluation (the same ones, with the same seeds, every time)
FINAL_PROMPTS = 1000  # held-out prompts the card's before-and-after figures are measured on (four passes of each)


def load_reward(spec: str) -> Reward:
    """The reward function a `module:function` names; a ValueError says what is wrong in one line."""
    module_name, _, name = spec.partition(":")
    if not module_name or not name:
        raise ValueError(f"--rl {spec}: give the reward as module:function, e.g. gpt.names_task:reward")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ValueError(f"--rl {spec}: cannot import {module_name} ({e})") from None
    function = getattr(module, name, None)
    if not callable(function):
        raise ValueError(f"--rl {spec}: {module_name} has no function {name}")
    return function


def function_scorer(reward: Reward) -> Scorer:
    """A reward function as a Scorer: one reply at a time, or all at once when it says it is batched (it has no use
    for whether the reply ended)."""
    if getattr(reward, "batched", False):
        return lambda conversations, replies, ended: list(reward(conversations, replies))
    return lambda conversations, replies, ended: [reward(c, r) for c, r in zip(conversations, replies)]


def checked(values: list, replies: list[str]) -> list[float]:
    """The rewards, one finite number per reply."""
    if len(values) != len(replies):
        raise ValueError(f"the reward must return one number per reply: got {len(values)} for {len(replies)} replies")
    for value, reply in zip(values, replies):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"the reward must return a finite number, got {value!r} for the reply {reply!r}")
    return [float(v) for v in values]


def stop_ids(tokenizer: AnyTokenizer) -> set[int]:
    """The turn tokens: a reply ends at the first one it writes."""
    return {tokenizer.encode(t)[0] for t in tokenizer.specials}


def reply_text(tokenizer: AnyTokenizer, ids: list[int], stops: set[int]) -> tuple[str, bool]:
    """A sampled reply as the chat shows it (up to its first turn token, without the newline that ends the turn),
    and whether it ended its turn (that token is the end of turn)."""
    end = next((i for i, t in enumerate(ids) if t in stops), len(ids))
    return tokenizer.decode(ids[:end]).removesuffix("\n"), end < len(ids) and ids[end] == tokenizer.end_id


@torch.no_grad()
def sample_replies(
    model: torch.nn.Module,
    prompts: list[list[int]],
    seeds: list[int],
    max_tokens: int,
    stop_ids: set[int],
    **sampling,
) -> list[list[int]]:
    """Each prompt's reply tokens, its ending turn token included (when it wrote one within max_tokens)."""
    was_training = model.training
    model.eval()
    batch = DecodeBatch(model, len(prompts))
    batch.add(prompts, [SamplingParams(seed=s, **sampling) for s in seeds])
    replies: list[list[int]] = [[] for _ in prompts]
    writing = list(range(len(prompts)))  # the reply each row of the batch writes: a finished row leaves the batch
    for _ in range(max_tokens):
        tokens = batch.step()[0].tolist()
        for row in reversed(range(len(writing))):  # from the end: a removed row takes the batch's last one
            replies[writing[row]].append(tokens[row])
            if tokens[row] in stop_ids:
                batch.remove(row)
                writing[row] = writing[-1]
                writing.pop()
        if not writing:
            break
    model.train(was_training)
    return replies


def token_logprobs(model: torch.nn.Module, prompts: list[list[int]], replies: list[list[int]]):
    """log p of each reply token under the model, (B, R) for the longest reply R, with the mask of the real tokens.

    The replies to one prompt share a row after a single copy of it, each seeing the prompt and itself and numbered on
    from the prompt's end: a step's group of 8 short replies to a ~50-token prompt is then ~4x fewer positions to run
    forward and back than a padded row each (DPO's chosen and rejected reply share their prompt the same way)."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, prompt in enumerate(prompts):
        groups.setdefault(tuple(prompt), []).append(i)
    length = max(len(p) + sum(len(replies[i]) for i in rows) for p, rows in groups.items())
    B, R = len(prompts), max([1, *map(len, replies)])
    ids = torch.zeros(len(groups), length, dtype=torch.long)
    positions = torch.zeros(len(groups), length, dtype=torch.long)
    sees = torch.eye(length, dtype=torch.bool).repeat(len(groups), 1, 1)  # padding sees only itself
    group, source = torch.zeros(B, 1, dtype=torch.long), torch.zeros(B, R, dtype=torch.long)
    target, mask = torch.zeros(B, R, dtype=torch.long), torch.zeros(B, R, dtype=torch.bool)
    for g, (prompt, rows) in enumerate(groups.items()):
        P = at = len(prompt)
        ids[g, :P], positions[g, :P] = torch.tensor(prompt), torch.arange(P)
        sees[g, :P, :P] = torch.ones(P, P, dtype=torch.bool).tril()
        for i in rows:
            reply = replies[i]
            n, end = len(reply), at + len(reply)
            ids[g, at:end], positions[g, at:end] = torch.tensor(reply, dtype=torch.long), torch.arange(P, P + n)
            sees[g, at:end, :P] = True
            sees[g, at:end, at:end] = torch.ones(n, n, dtype=torch.bool).tril()
            group[i], target[i, :n], mask[i, :n] = g, torch.tensor(reply, dtype=torch.long), True
            source[i, :n] = torch.tensor([P - 1, *range(at, end - 1)])[:n]  # the position that predicts each token
            at = end
    device = next(model.parameters()).device
    logits = model(ids.to(device), packed=(positions.to(device), sees.to(device)))[0].float()
    group, source, target, mask = group.to(device), source.to(device), target.to(device), mask.to(device)
    return F.log_softmax(logits, dim=-1)[group, source, target], mask


def group_advantages(rewards: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """rewards (P, G) -> each reply's reward minus its group's mean, and which groups teach something (not all the
    same score)."""
    advantages = rewards - rewards.mean(dim=1, keepdim=True)
    return advantages, (rewards.max(dim=1).values > rewards.min(dim=1).values)


def policy_loss(logp: torch.Tensor, ref_logp: torch.Tensor, mask: torch.Tensor, advantages: torch.Tensor, kl: float):
    """The policy-gradient loss over reply tokens (each token weighted by its reply's advantage, mean over tokens)
    plus kl times the mean per-token KL estimate to the starting model; returns (loss, that KL estimate)."""
    tokens = mask.sum().clamp(min=1)
    gradient = -(advantages[:, None] * logp * mask).sum() / tokens
    r = (ref_logp - logp).clamp(-20, 20)
    divergence = ((r.exp() - r - 1) * mask).sum() / tokens
    return gradient + kl * divergence, divergence.detach()


class RLRun(Run):
    """A training run whose step samples groups of replies and follows their rewards (see the module's docstring).

    Its validation figure is the mean reward on held-out prompts at the app's sampling, and the best model is the one
    with the highest; best_val keeps the lower-is-better convention of Run as minus that reward."""

    def __init__(self, c: TrainConfig, out: Path, resume: bool, command: str, given: set, started: float):
        if c.time_budget:
            raise ValueError("--time-budget sizes pre-training; give --rl a number of steps (--max-steps)")
        if c.reply_tokens >= c.block_size:
            raise ValueError(f"--reply-tokens {c.reply_tokens} leaves no room for a prompt in {c.block_size} tokens")
        self.scorer = function_scorer(load_reward(c.rl)) if ":" in c.rl else None
        super().__init__(c, out, resume, command, given, started)
        self.scorer = self.scorer or reward_scorer(c.rl, self.tokenizer, self.device)
        reference = load_model(self.base, name=c.init_from).to(self.device).eval()
        self.reference = reference.requires_grad_(False)
        self.stops = stop_ids(self.tokenizer)
        self.replay_text = read_text(c.replay) if c.replay else None
        if c.replay:
            self.replay = replay_windows(self.replay_text, c.replay, self.tokenizer, c.block_size)

    def describe_data(self) -> dict:
        return {**describe_conversations(self.c.prompts, prompts=True), "reward": self.c.rl}

    def rewards(self, conversations: list[list[dict]], replies: list[list[int]]) -> list[float]:
        """The reward of each sampled reply (its tokens) to its conversation."""
        texts, ended = zip(*[reply_text(self.tokenizer, r, self.stops) for r in replies]) if replies else ((), ())
        return checked(self.scorer(conversations, list(texts), list(ended)), list(texts))

    def mean_reward(self, model, prompts: Prompts, n: int, **sampling) -> float:
        """The mean reward of replies to the first n prompts, prompt i sampled with seed i: the same draws at every
        evaluation."""
        ids = prompts.ids[:n]
        replies = sample_replies(model, ids, list(range(len(ids))), self.c.reply_tokens, self.stops, **sampling)
        return sum(self.rewards(prompts.conversations[:n], replies)) / max(len(replies), 1)

    def step(self, step: int) -> tuple[dict, float, int]:
        """Sample --group-size replies to each of --batch-size prompts, score them, and step towards the better."""
        c, data = self.c, self.train_data
        lr = self.set_rate(step)
        picks = self.draw(c.batch_size, len(data.ids))
        seeds = self.draw(c.batch_size * c.group_size, 1 << 62)
        prompts = [data.ids[i] for i in picks for _ in range(c.group_size)]
        replies = sample_replies(self.model, prompts, seeds, c.reply_tokens, self.stops, temperature=1.0)
        asked = [data.conversations[i] for i in picks for _ in range(c.group_size)]
        rewards = torch.tensor(self.rewards(asked, replies)).view(c.batch_size, -1)
        advantages, useful = group_advantages(rewards)
        loss, kl = None, 0.0
        if useful.any():
            rows = useful.repeat_interleave(c.group_size).nonzero()[:, 0].tolist()
            kept_prompts, kept_replies = [prompts[i] for i in rows], [replies[i] for i in rows]
            with self.ctx:
                logp, mask = token_logprobs(self.trained, kept_prompts, kept_replies)
                with torch.no_grad():
                    ref_logp, _ = token_logprobs(self.reference, kept_prompts, kept_replies)
            weights = advantages.flatten()[rows].to(self.device)
            loss, divergence = policy_loss(logp, ref_logp, mask, weights, c.kl)
            kl = divergence.item()
        figures = {"reward": rewards.mean().item(), "skipped": 1 - useful.float().mean().item(), "kl": kl}
        if c.replay:
            x, y = (t.to(self.device) for t in self.replay.sample(c.batch_size, self.data_rng))
            with self.ctx:
                _, text_loss = self.trained(x, y)
            loss = c.replay_share * text_loss + (0 if loss is None else loss)
            figures["text_loss"] = text_loss.item()
        if loss is not None:
            apply_gradients(self.trained, self.optimizers, self.scaler, loss, c.grad_clip)
        self.pending.append(figures)
        tokens = sum(map(len, replies))
        self.tokens_seen += tokens
        return figures, lr, tokens

    def evaluate(self, step: int, tokens_per_s: float) -> dict:
        """The held-out reward; a better one saves the model folder. Then the resume state."""
        val = self.mean_reward(self.model, self.val_data, EVAL_PROMPTS, **APP_SAMPLING)
        recent, self.pending = self.pending, []
        entry = {"step": step, "val_reward": val}
        for key in ("reward", "skipped", "kl") + ("text_loss",) * bool(self.c.replay):
            entry[key] = sum(f[key] for f in recent) / len(recent) if recent else None
        entry.update(lr=learning_rate(max(step - 1, 0), self.c), tokens_per_s=round(tokens_per_s))
        entry["time_s"] = round(self.wall_time(), 1)
        self.curve.append(entry)
        if -val < self.best_val:
            self.best_val = -val
            if self.master:
                self.save()
        self.checkpoint(step)
        return entry

    def eval_line(self, entry: dict) -> str:
        trained = "" if entry["reward"] is None else f"reward {entry['reward']:.3f}, skipped {entry['skipped']:.0%}, "
        return f"step {entry['step']}: {trained}held-out reward {entry['val_reward']:.3f}"

    def metrics(self) -> dict:
        best = max(self.curve, key=lambda e: e["val_reward"]) if self.curve else {}
        summary = {
            "best_val_reward": -self.best_val,
            "best_step": best.get("step"),
            "tokens_seen": self.tokens_seen,
            "wall_time_s": self.wall_time(),
            "settings": recorded_settings(self.c),
        }
        return {"run": {**self.record, **summary}, "curve": self.curve}

    def final_figures(self, lm: LM) -> dict:
        """The mean reward on the first FINAL_PROMPTS held-out prompts, at the app's sampling and at greedy, for the
        starting model and this one."""
        n = min(len(self.val_data.ids), FINAL_PROMPTS)
        figures = {"val_prompts": n}
        for prefix, model in (("start_", self.reference), ("", lm.model)):
            figures[f"{prefix}val_reward"] = self.mean_reward(model, self.val_data, n, **APP_SAMPLING)
            figures[f"{prefix}greedy_val_reward"] = self.mean_reward(model, self.val_data, n, temperature=0)
            if self.replay_text:
                scored = LM(model.cpu(), lm.tokenizer)
                figures[f"{prefix}pretraining_val_loss"] = validation_loss(scored, self.replay_text)[0]
        return figures

    def plot(self) -> None:
        series = (("reward", "training replies (temperature 1)"), ("val_reward", "held-out prompts (app sampling)"))
        write_loss_plot(self.curve, self.out / "loss.png", series=series, label="mean reward")
