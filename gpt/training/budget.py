"""Fit a run to a time budget: --time-budget MINUTES picks a model shape, batch and steps for this machine.

The shapes form a ladder from a 1-minute model to the flagship and beyond. Each rung's step is timed for real (a few
steps of a throwaway copy), smallest first, and the largest rung is kept that (a) takes at least MIN_STEPS steps and
MIN_TOKENS_PER_PARAM tokens per parameter in the time left, and (b) is not far larger than the text (at most
MAX_PARAMS_PER_TOKEN parameters per training token). Steps fill the time left after the evaluations and the final
scoring; the schedule is warmup-stable-decay, and a budget that repays compiling compiles the model (compiles()).
While it trains, the run re-plans from its measured pace whenever its projected end strays from the deadline
(Run.fit_to_budget): the steps left move (`reaimed`, a decay under way finishes over them), and a shape that can no
longer train for enough steps gives way to a smaller one planned afresh.
"""

import math
from collections.abc import Callable
from dataclasses import replace

import torch
from tqdm import tqdm

from gpt.training.config import TrainConfig
from gpt.training.optim import learning_rate

MIN_STEPS = 500  # fewer and the warmup and the decay are most of the run
MIN_TOKENS_PER_PARAM = 2.0
MAX_PARAMS_PER_TOKEN = 5.0  # the flagship: 4.8M parameters on Tiny Shakespeare's 1M characters, with dropout
EVAL_SHARE = 0.05  # of the training time, spent estimating losses
EVALS = 8  # evaluations per run (each one a chance to re-aim at the deadline)
FORWARD_SHARE = 0.35  # a forward pass's share of a training step's time
REPLAN_TOLERANCE = 0.05  # of the time left: a projected end further than this from the deadline re-plans the steps
DECAY_FLOOR = 10  # steps a run out of time still takes to bring its rate down (a re-plan comes every 10 steps)
PACE_WINDOW = 0.1  # of the budget: the recent time whose pace a re-plan trusts (steady, yet quick to see a slowdown)
COMPILE_SECONDS = 600  # time left from which a faster step repays compiling training's graph and evaluation's
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


def as_trained(rung: TrainConfig, fixed: set[str]) -> TrainConfig:
    """A fresh GPT rung timed as plan() will train it: with Muon, and with dropout (whose cost is alike at any rate)
    unless the user chose otherwise."""
    if rung.arch != "gpt" or rung.init_from:
        return rung
    chosen = dict(optimizer="muon", dropout=max(rung.dropout, 0.1))
    return replace(rung, **{k: v for k, v in chosen.items() if k not in fixed})


def compiles(c: TrainConfig, seconds: float, cuda: bool) -> bool:
    """Whether a budgeted run compiles its model: with COMPILE_SECONDS or more left, a fresh GPT trained on text, on
    CUDA any block, on a CPU a block with something to fuse (RMS norms, rotation, SwiGLU: eagerly each is several
    passes over memory; GPT-2's LayerNorm and GELU have fused kernels already, and compiled it gains nothing there).
    Conversations and post-training change shapes from batch to batch, and a static graph compiles again at each."""
    on_text = c.arch == "gpt" and not (c.init_from or c.sft or c.rl or c.dpo or c.reward_model)
    fusable = c.rms_norm or c.rotary or c.qk_norm or c.mlp != "gelu"
    return on_text and seconds >= COMPILE_SECONDS and (cuda or fusable and has_cpp_compiler())


def has_cpp_compiler() -> bool:
    """Whether inductor finds the C++ compiler it builds CPU kernels with (a machine without one trains eagerly)."""
    from torch._inductor.cpp_builder import get_cpp_compiler

    try:
        return bool(get_cpp_compiler())
    except Exception:
        return False


def finish_seconds(c: TrainConfig, step_s: float, val_tokens: int) -> float:
    """What the run does after its last step: score the whole validation split (at the pace of its steps), then
    sample 300 tokens and write the plot and card (about as long on a busy machine, where the run is on one thread)."""
    per_token = step_s / (c.batch_size * c.block_size)
    return FORWARD_SHARE * per_token * val_tokens + 300 * 0.003 + 1.0


def plan(
    c: TrainConfig,
    fixed: set[str],
    seconds: float,
    train_tokens: int,
    val_tokens: int,
    step_seconds: Callable[[TrainConfig], float],
    below: int | None = None,
    cuda: bool = False,
) -> TrainConfig:
    """The run to make in `seconds`: `step_seconds` times one optimizer step of a candidate on this machine (eagerly:
    a compiled run's steps are faster, and its pace re-plans them once it has compiled); `below` leaves out shapes of
    that many body parameters or more (a re-plan for a machine that slowed down)."""
    if "max_steps" in fixed:
        raise ValueError("--time-budget sets the number of steps: drop --max-steps (or drop --time-budget)")
    room = max(2, val_tokens - 1)
    best = None
    rungs = candidates(c, fixed)
    smaller = [r for r in rungs if below is None or body_params(r) < below]
    for rung in smaller or rungs[:1]:
        if rung.block_size > room and "block_size" not in fixed:
            rung = replace(rung, block_size=1 << int(math.log2(room)))
        if best is not None and body_params(rung) > MAX_PARAMS_PER_TOKEN * train_tokens:
            break
        step_s = step_seconds(as_trained(rung, fixed))
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
        compile=compiles(rung, seconds, cuda),
    )
    if rung.arch != "gpt" or rung.init_from:  # a makemore rung or a fine-tune keeps its own rates and optimizer
        kept = ("max_steps", "warmup_steps", "schedule", "eval_interval", "eval_steps", "lr_decay_steps")
        chosen = {k: chosen[k] for k in kept}
    return replace(rung, **{k: v for k, v in chosen.items() if k not in fixed})


def reaimed(c: TrainConfig, step: int, end: int) -> TrainConfig:
    """c ending at step `end` instead, with the rate at `step` unchanged: a flat phase (or a warmup) with room stretches
    or shrinks; otherwise the decay runs from the rate at `step` to the lowest at `end`, so the run ends decayed (a run
    already at its lowest rate stays there, never back to the peak)."""
    end = max(end, step)
    if c.schedule != "wsd":
        return replace(c, max_steps=end)
    flat = step <= c.max_steps - max(1, round(c.decay_fraction * c.max_steps))
    if end == step or flat and end - max(1, round(c.decay_fraction * end)) >= max(step, min(c.warmup_steps, end)):
        return replace(c, max_steps=end)
    done = (c.lr - learning_rate(step, c)) / (c.lr - c.min_lr) if c.lr > c.min_lr else 0.0
    if done >= 1:  # decayed already and time is left: the steps it gains stay at the lowest rate
        return replace(c, max_steps=end, lr_decay_steps=c.lr_decay_steps or c.max_steps)
    start = min(step, max(0, round((step - done * end) / (1 - done))))
    return replace(c, max_steps=end, decay_fraction=(end - start) / end)


class Pacer:
    """A time budget's run keeping to its deadline as it trains: the pace of its steps (evaluations apart), its
    re-plans, and its torch threads on a machine that another job keeps busy."""

    def __init__(self, budget_s: float, shapes: list[TrainConfig], share_threads: bool, speaks: bool):
        self.budget_s, self.shapes, self.speaks = budget_s, shapes, speaks
        self.eval_seconds, self.last_eval_s = 0.0, 0.0
        self.paces: list[tuple[int, float]] = []  # (step, wall time outside evaluations) every 10 steps
        self.first_pace = 0.0  # seconds a step as the run began: how a busy machine shows
        self.steps_end = budget_s  # when the last step is due (the bar's ETA), set by each re-plan
        self.threads, self.trial, self.threads_settled = torch.get_num_threads(), None, not share_threads

    def say(self, line: str) -> None:
        if self.speaks:
            tqdm.write(line)

    def evaluated(self, seconds: float) -> None:
        self.last_eval_s = seconds
        self.eval_seconds += seconds

    def pick_threads(self, step_seconds: Callable[[TrainConfig], float], smallest: TrainConfig) -> None:
        """Start on one torch thread if the threads clearly wait on one another (another job holds a core: 1.5x
        slower than one thread on the smallest shape), else on the ones there are (see share_the_machine)."""
        if self.threads_settled or self.threads == 1:
            return
        many = step_seconds(smallest)
        torch.set_num_threads(1)
        if many < 1.5 * step_seconds(smallest):
            torch.set_num_threads(self.threads)
        else:
            self.threads_settled = True

    def share_the_machine(self, step: int, first: int, pace: float) -> None:
        """One torch thread once the steps run 1.5x slower than they began (another job took a core): threads that
        wait on one another at every operation lose most of their time on a busy machine (2x a small model's step
        and 20x a sampled token, beside two busy loops on 2 cores). Back to its threads if one turns out slower."""
        if self.threads_settled or self.threads == 1:
            return
        if self.trial is None and pace > 1.5 * self.first_pace:
            (before, then), (_, now) = self.paces[-min(3, len(self.paces))], self.paces[-1]  # two threads' pace now
            self.trial = (step, max(pace, (now - then) / (step - before)))
            torch.set_num_threads(1)
            self.say(f"step {step}: the machine is busy ({pace / self.first_pace:.1f}x slower); on one thread")
        elif self.trial and first >= self.trial[0]:  # a whole pace window on one thread
            self.threads_settled = True
            if pace > self.trial[1]:
                torch.set_num_threads(self.threads)
                self.say(f"step {step}: one thread was slower; back on {self.threads}")

    def fit(
        self, c: TrainConfig, step: int, now: float, val_tokens: int, agreed: Callable[[int], int]
    ) -> TrainConfig | None:
        """c re-planned when its projected end strays from the deadline by more than REPLAN_TOLERANCE of the time
        left, from the pace of the latest PACE_WINDOW of the budget (each evaluation costed as the last one took);
        None when the shape can no longer train for enough steps and a smaller one is on the ladder. `now`: the
        run's wall time; `agreed`: the step every process stops at."""
        self.paces.append((step, now - self.eval_seconds))
        behind = [(s, t) for s, t in self.paces if s <= step - 20]  # the first steps are slow (allocation, caches)
        if not behind:
            return c
        start = self.paces[-1][1] - PACE_WINDOW * self.budget_s
        spanning = [i for i, (s, t) in enumerate(self.paces) if s <= step - 20 and t <= start]
        if spanning:  # the marks before the window's start are never needed again
            del self.paces[: spanning[-1]]
        first, then = self.paces[0] if spanning else behind[0]
        pace = (self.paces[-1][1] - then) / (step - first)
        per_step = pace + self.last_eval_s / c.eval_interval
        self.first_pace = self.first_pace or pace
        self.share_the_machine(step, first, pace)
        left = self.budget_s - finish_seconds(c, pace, val_tokens) - self.last_eval_s - now
        decaying = learning_rate(step, c) > 1.01 * c.min_lr  # out of time, it still takes a few steps to decay
        last = agreed(step + max(DECAY_FLOOR if decaying else 0, int(left / per_step)))
        self.steps_end = now + (last - step) * per_step
        if abs(last - c.max_steps) * per_step <= REPLAN_TOLERANCE * max(left, self.budget_s / 10) and left > 0:
            return c
        if last < MIN_STEPS // 2 and now < self.budget_s / 2:
            if any(body_params(r) < body_params(c) for r in self.shapes):
                return None
        return reaimed(c, step, last)
