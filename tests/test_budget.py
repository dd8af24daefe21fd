"""--time-budget: the plan grows with the time and the text, keeps what the user chose, and a run ends on time."""

import json
import os
import subprocess
import sys
import threading
import time

import pytest
import torch

from gpt.training.budget import Pacer, body_params, plan, reaimed
from gpt.training.config import TrainConfig, build_parser
from gpt.training.optim import learning_rate
from gpt.training.train import given_settings


def step_seconds(c: TrainConfig) -> float:
    """A machine that does 50 GFLOP/s of training with 5 ms of overhead per step."""
    return 5e-3 + 6 * (body_params(c) + 65 * c.n_embd) * c.batch_size * c.block_size / 5e10


def planned(minutes: float, tokens: int = 1_000_000, **given) -> TrainConfig:
    c = TrainConfig(data="text.txt", time_budget=minutes, **given)
    return plan(c, set(given), 60 * minutes, tokens, tokens // 9, step_seconds)


def test_a_longer_budget_trains_a_larger_model_for_longer():
    sizes = [planned(m) for m in (1, 10, 60)]
    assert [body_params(c) for c in sizes] == sorted(body_params(c) for c in sizes)
    assert body_params(sizes[0]) < body_params(sizes[-1])
    assert all(c.schedule == "wsd" and c.max_steps >= 500 for c in sizes)
    spent = [c.max_steps * step_seconds(c) for c in sizes]
    for c, seconds, minutes in zip(sizes, spent, (1, 10, 60)):
        assert 0.8 * 60 * minutes < seconds < 60 * minutes, c


def test_a_small_text_caps_the_model_and_many_epochs_bring_dropout():
    big, small = planned(60), planned(60, tokens=20_000)
    assert body_params(small) < body_params(big) and body_params(small) <= 5 * 20_000
    assert small.dropout > 0 and small.block_size < 20_000 // 9


def test_what_the_user_chose_is_kept():
    c = planned(10, n_layer=3, batch_size=8)
    assert c.n_layer == 3 and c.batch_size == 8
    with pytest.raises(ValueError, match="drop --max-steps"):
        planned(10, max_steps=100)


def test_a_budget_that_repays_compiling_compiles_a_block_with_something_to_fuse():
    modern = dict(rotary=True, rms_norm=True, qk_norm=True, mlp="swiglu")
    assert planned(30, **modern).compile and planned(30, mlp="relu2").compile
    assert not planned(30).compile  # GPT-2's block: as fast eagerly on a CPU
    assert not planned(5, **modern).compile  # compiling would eat what it saves
    assert not planned(30, compile=False, **modern).compile  # the user's choice is kept
    args = build_parser().parse_args(["--out", "m", "--no-compile"])
    assert args.compile is False and "compile" in given_settings(args)
    c = TrainConfig(data="text.txt", time_budget=30)
    assert plan(c, set(), 1800, 1_000_000, 100_000, step_seconds, cuda=True).compile  # any block on CUDA
    sft = TrainConfig(data="chats.jsonl", time_budget=30, sft=True, init_from="base", **modern)
    assert not plan(sft, {"init_from", "sft"}, 1800, 1_000_000, 100_000, step_seconds, cuda=True).compile


def test_a_fine_tune_on_a_budget_keeps_its_shape_and_rates():
    base = dict(lr=3e-4, optimizer="adamw", n_layer=6, n_embd=256, n_head=8)  # from the base and finetune preset
    c = TrainConfig(data="text.txt", time_budget=10, init_from="base", **base)
    c = plan(c, {"init_from", "time_budget"}, 600, 1_000_000, 100_000, step_seconds)
    assert (c.n_layer, c.n_embd, c.lr, c.optimizer) == (6, 256, 3e-4, "adamw") and c.schedule == "wsd"


def test_a_plan_is_a_new_config_and_the_checked_one_never_changes():
    import dataclasses

    asked = TrainConfig(data="text.txt", time_budget=10)
    planned = plan(asked, {"time_budget"}, 600, 1_000_000, 100_000, step_seconds)
    assert planned is not asked and asked == TrainConfig(data="text.txt", time_budget=10)
    with pytest.raises(dataclasses.FrozenInstanceError):
        planned.max_steps = 5  # a run's moving end is a new config (Run.fit_to_budget), never this one changed


def test_a_re_plan_moves_the_end_and_keeps_the_rate_where_it_is():
    c = planned(10)  # warmup-stable-decay over the last 20% of its steps
    n = c.max_steps
    stretched = reaimed(c, n // 4, 2 * n)  # the machine sped up in the flat phase: the flat phase stretches
    assert stretched.max_steps == 2 * n and learning_rate(n // 4, stretched) == learning_rate(n // 4, c) == c.lr
    assert learning_rate(int(1.5 * n), stretched) == c.lr and learning_rate(2 * n, stretched) == pytest.approx(c.min_lr)
    for step, end in ((int(0.7 * n), int(0.75 * n)), (int(0.9 * n), int(0.92 * n)), (int(0.9 * n), int(1.5 * n))):
        moved = reaimed(c, step, end)  # a decay that must start now, or one under way, finishes over the steps left
        assert learning_rate(step, moved) == pytest.approx(learning_rate(step, c), rel=0.02), (step, end)
        rates = [learning_rate(s, moved) for s in range(step, end + 1)]
        assert rates == sorted(rates, reverse=True) and rates[-1] == pytest.approx(c.min_lr), (step, end)
    assert reaimed(c, n // 2, n // 2).max_steps == n // 2  # no time left: it ends at the step it reached
    extended = reaimed(c, n, n + 40)  # decayed at its end with time left: the steps gained stay at the lowest rate
    assert extended.max_steps == n + 40 and {learning_rate(s, extended) for s in range(n, n + 41)} == {c.min_lr}
    again = reaimed(extended, n + 20, n + 60)
    assert again.max_steps == n + 60 and learning_rate(n + 59, again) == c.min_lr
    warming = reaimed(c, c.warmup_steps // 2, c.warmup_steps)  # slowed in the warmup: it ends decayed all the same
    assert learning_rate(c.warmup_steps // 2, warming) == learning_rate(c.warmup_steps // 2, c) < c.lr
    assert learning_rate(c.warmup_steps, warming) == pytest.approx(c.min_lr)


def test_a_re_plan_for_a_slower_machine_takes_a_smaller_shape():
    first = planned(10)
    again = plan(
        TrainConfig(data="text.txt", time_budget=10),
        set(),
        600,
        1_000_000,
        111_111,
        step_seconds,
        below=body_params(first),
    )
    assert body_params(again) < body_params(first)


def paced(pacer: Pacer, c: TrainConfig, legs: list[tuple[int, float]], step: int = 0, now: float = 0.0):
    """Feed a Pacer `legs` of (steps, seconds a step), re-planning every 10 steps as a run does: its last config (None
    once it asks for a smaller shape), the step and the wall time."""
    for steps, pace in legs:
        for _ in range(steps // 10):
            step, now = step + 10, now + 10 * pace
            c = pacer.fit(c, step, now, 1_000, lambda last: last)
            if c is None:
                return None, step, now
    return c, step, now


def test_a_machine_that_slows_down_puts_the_run_on_one_thread_and_back_if_that_is_slower():
    try:
        for one_thread, threads in ((0.02, 1), (0.05, 2)):  # one thread faster than two on the busy machine, or not
            torch.set_num_threads(2)
            c = planned(1)
            pacer = Pacer(10, [c], share_threads=True, speaks=False)
            c, step, now = paced(pacer, c, [(200, 0.01), (40, 0.03)])  # another job takes a core: 3x slower
            assert torch.get_num_threads() == 1
            paced(pacer, c, [(200, one_thread)], step, now)
            assert torch.get_num_threads() == threads, one_thread
    finally:
        torch.set_num_threads(1)


def test_a_shape_left_with_too_few_steps_asks_for_a_smaller_one_early_in_the_budget():
    small, large = planned(1, n_layer=2, n_head=2, n_embd=64), planned(100)
    pacer = Pacer(100, [small, large], share_threads=False, speaks=False)
    c, step, _ = paced(pacer, large, [(40, 0.05), (40, 1.0)])  # 20x slower from step 40
    assert c is None and step < 100
    again = Pacer(100, [large], share_threads=False, speaks=False)  # the smallest shape keeps going, re-planned
    c, _, _ = paced(again, large, [(40, 0.05), (40, 1.0)])
    assert c is not None and c.max_steps < large.max_steps


def test_a_short_budget_ends_on_time_decayed_when_the_machine_slows_down_mid_run(tmp_path, play_file, cli):
    """A busy loop per core starts beside a 30-second budget once it has taken its pace: the run re-plans from its
    pace and still ends within 5% of the budget (as the run counts it, from the command's start), decayed."""
    hogs = []
    hog = [sys.executable, "-c", "while True: pass"]
    timer = threading.Timer(15, lambda: hogs.extend(subprocess.Popen(hog) for _ in range(os.cpu_count() or 2)))
    timer.start()
    out = tmp_path / "busy"
    try:
        start = time.time()
        args = ("-m", "gpt.train", "--data", str(play_file), "--out", str(out), "--time-budget", "0.5")
        r = cli(*args, drop=("OMP_NUM_THREADS",))  # the machine's threads, as a user's run has them
        took = time.time() - start
    finally:
        timer.cancel()
        for h in hogs:
            h.kill()
    assert r.returncode == 0, r.stderr[-2000:]
    assert "sized for --time-budget 0.5 min" in r.stderr.split("\n")[0]
    run = json.loads((out / "metrics.json").read_text())
    timeline = [(e["step"], e["time_s"]) for e in run["curve"]], run["run"]["wall_time_s"], took, r.stderr[:300]
    # the run's clock starts at `import gpt`: Python's start and exit, seconds under the suite's load, are outside it
    assert len(hogs) > 0 and 28.5 <= run["run"]["wall_time_s"] <= 31.5 and took <= 40, timeline
    last, settings = run["curve"][-1], run["run"]["settings"]
    assert last["step"] == settings["max_steps"] and last["lr"] < 0.2 * settings["lr"], last
    assert (out / "README.md").is_file() and (out / "model.safetensors").is_file()
