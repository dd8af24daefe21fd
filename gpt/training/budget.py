"""Fit a run to a time budget: --time-budget MINUTES picks a model shape, batch and steps for this machine.

The shapes form a ladder from a 1-minute model to the flagship and beyond. Each rung's step is timed for real (a few
steps of a throwaway copy), smallest first, and the largest rung is kept that (a) takes at least MIN_STEPS steps and
MIN_TOKENS_PER_PARAM tokens per parameter in the time left, and (b) is not far larger than the text (at most
MAX_PARAMS_PER_TOKEN parameters per training token). Steps fill the time left after the evaluations and the final
scoring; the schedule is warmup-stable-decay, so training can re-aim its last step at the deadline while the rate is
still flat (Run.fit_to_budget) and still decay fully at the end.
"""

import math
from collections.abc import Callable
from dataclasses import replace

from gpt.training.config import TrainConfig

MIN_STEPS = 500  # fewer and the warmup and the decay are most of the run
MIN_TOKENS_PER_PARAM = 2.0
MAX_PARAMS_PER_TOKEN = 5.0  # the flagship: 4.8M parameters on Tiny Shakespeare's 1M characters, with dropout
EVAL_SHARE = 0.05  # of the training time, spent estimating losses
EVALS = 8  # evaluations per run (each one a chance to re-aim at the deadline)
FORWARD_SHARE = 0.35  # a forward pass's share of a training step's time
SHAPES = [  # learning rates as measured for the rungs that are presets (shakespeare-char-cpu, shakespeare-char)
    dict(n_layer=2, n_head=2, n_embd=64, block_size=64, batch_size=16, lr=0.006, muon_lr=0.02),
    dict(n_layer=2, n_head=4, n_embd=128, block_size=64, batch_size=16, lr=0.006, muon_lr=0.02),
    dict(n_layer=4, n_head=4, n_embd=128, block_size=128, batch_size=32, lr=0.004, muon_lr=0.015),
    dict(n_layer=4, n_head=6, n_embd=192, block_size=128, batch_size=32, lr=0.003, muon_lr=0.01),
    dict(n_layer=6, n_head=8, n_embd=256, block_size=256, batch_size=32, lr=0.002, muon_lr=0.008),
    dict(n_layer=8, n_head=12, n_embd=384, block_size=256, batch_size=32, lr=0.0015, muon_lr=0.006),
]


def body_params(c: TrainConfig) -> int:
    """The blocks' parameters (attention and MLP matrices), which set both the cost and the capacity."""
    return 12 * c.n_layer * c.n_embd**2 if c.arch == "gpt" else 0


def candidates(c: TrainConfig, fixed: set[str]) -> list[TrainConfig]:
    """The ladder with the settings the user gave kept; a window model (the makemore rungs) and a fine-tune keep their
    own shape."""
    if c.arch != "gpt" or c.init_from:
        return [c]
    rungs = []
    for shape in SHAPES:
        rung = replace(c, **{k: v for k, v in shape.items() if k not in fixed})
        if rung.n_embd % rung.n_head == 0 and rung not in rungs:
            rungs.append(rung)
    return rungs or [c]


def finish_seconds(c: TrainConfig, step_s: float, val_tokens: int) -> float:
    """What the run does after its last step: score the whole validation split, write samples, plot and card."""
    per_token = step_s / (c.batch_size * c.block_size)
    return FORWARD_SHARE * per_token * val_tokens + 300 * 0.003 + 1.5  # + 300 sampled tokens, files and imports


def plan(
    c: TrainConfig,
    fixed: set[str],
    seconds: float,
    train_tokens: int,
    val_tokens: int,
    step_seconds: Callable[[TrainConfig], float],
) -> TrainConfig:
    """The run to make in `seconds`: `step_seconds` times one optimizer step of a candidate on this machine."""
    if "max_steps" in fixed:
        raise ValueError("--time-budget sets the number of steps: drop --max-steps (or drop --time-budget)")
    room = max(2, val_tokens - 1)
    best = None
    for rung in candidates(c, fixed):
        if rung.block_size > room and "block_size" not in fixed:
            rung = replace(rung, block_size=1 << int(math.log2(room)))
        if best is not None and body_params(rung) > MAX_PARAMS_PER_TOKEN * train_tokens:
            break
        step_s = step_seconds(rung)
        train_s = seconds - finish_seconds(rung, step_s, val_tokens)
        steps = int(train_s / (step_s * (1 + EVAL_SHARE)))
        enough = steps * rung.batch_size * rung.block_size >= MIN_TOKENS_PER_PARAM * body_params(rung)
        if best is not None and (steps < MIN_STEPS or not enough):
            break
        best = (rung, steps, step_s)
    rung, steps, step_s = best
    steps = max(steps, 1)
    epochs = steps * rung.batch_size * rung.block_size / max(train_tokens, 1)
    interval = max(1, math.ceil(steps / EVALS))
    eval_steps = EVAL_SHARE * steps * step_s / (EVALS * 2 * FORWARD_SHARE * step_s)
    chosen = dict(
        max_steps=steps,
        warmup_steps=min(200, max(1, steps // 10)),
        schedule="wsd",
        optimizer="muon",
        min_lr=rung.lr / 10,
        dropout=0.2 if epochs >= 10 else 0.1 if epochs >= 3 else 0.0,
        eval_interval=interval,
        eval_steps=min(50, max(4, round(eval_steps))),
        lr_decay_steps=None,
    )
    if rung.arch != "gpt" or rung.init_from:  # a makemore rung or a fine-tune keeps its own rates and optimizer
        kept = ("max_steps", "warmup_steps", "schedule", "eval_interval", "eval_steps", "lr_decay_steps")
        chosen = {k: chosen[k] for k in kept}
    return replace(rung, **{k: v for k, v in chosen.items() if k not in fixed})
