"""The speedrun: validation loss at equal wall time on this CPU, GPT-2's block against the modern one, each switch
ablated, over several seeds.

python bench/speedrun.py [--data PATH] [--minutes 30] [--seeds 3] [--first-seed 1337] [--variants gpt2 modern ...]
                         [--flags="..."] [--log speedrun.jsonl]
Each cell is a whole `python -m gpt.train --time-budget M --seed S` process with the variant's switches: the trainer
plans the shape, batch and steps for the budget on this machine, timing that very block, so every variant gets the
same wall time (`--flags="--n-layer 4 --n-embd 128 ..."` fixes a shape for all of them instead; from 10 minutes
the trainer compiles a block it pays to compile, and `--flags=--no-compile` keeps them all eager). The figure is the
run's exact validation loss (nats per character on Tiny Shakespeare's last 10%). A row gives the mean over the seeds,
the spread (lowest to highest), the planned shape and the wall time, and its difference from the first variant's
mean. Every finished cell is appended to --log as a JSON line, so a long sweep keeps what it has measured.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from engines import cpu_name  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "tinyshakespeare.txt"
MODERN = ["--rotary", "--rms-norm", "--qk-norm", "--mlp", "swiglu"]  # Qwen3's block, tied head
VARIANTS = {  # the modern block, then each switch taken back to GPT-2's (or another MLP, or an untied head)
    "gpt2": [],
    "modern": MODERN,
    "no-rotary": [f for f in MODERN if f != "--rotary"],
    "layernorm": [f for f in MODERN if f != "--rms-norm"],
    "no-qk-norm": [f for f in MODERN if f != "--qk-norm"],
    "mlp-gelu": [*MODERN[:-1], "gelu"],
    "mlp-relu2": [*MODERN[:-1], "relu2"],
    "untied-head": [*MODERN, "--untied-head"],
}


def cell(data: Path, minutes: float, variant: str, seed: int, flags: list[str]) -> dict:
    """Train one budgeted model of a variant and seed: its figures."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "model"
        cmd = [sys.executable, "-m", "gpt.train", "--data", str(data), "--out", str(out)]
        cmd += ["--time-budget", f"{minutes:g}", "--seed", str(seed), *VARIANTS[variant], *flags]
        start = time.perf_counter()
        subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wall = time.perf_counter() - start
        run = json.loads((out / "metrics.json").read_text())["run"]
    s = run["settings"]
    return {
        "variant": variant,
        "seed": seed,
        "minutes": minutes,
        "wall_s": round(wall, 1),
        "shape": f"{s['n_layer']}x{s['n_embd']} ctx {s['block_size']} b{s['batch_size']}"
        + " compiled" * bool(s.get("compile")),
        "steps": s["max_steps"],
        "parameters": run["parameters"],
        "val_loss": run["exact_val_loss"],
    }


def row(variant: str, cells: list[dict], base: float | None) -> str:
    losses = [c["val_loss"] for c in cells]
    mean = statistics.mean(losses)
    against = "" if base is None else f"{mean - base:+.4f}"
    shapes = sorted({c["shape"] for c in cells})
    walls = statistics.mean(c["wall_s"] for c in cells)
    steps = ", ".join(f"{c['steps']:,}" for c in cells)
    return (
        f"| {variant} | {mean:.4f} | {min(losses):.4f}-{max(losses):.4f} | {against} | {len(losses)} | "
        f"{'; '.join(shapes)} | {steps} | {walls:.0f} s |"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the text to train on (default: Tiny Shakespeare)")
    p.add_argument("--minutes", type=float, default=30.0, help="each run's --time-budget")
    p.add_argument("--seeds", type=int, default=3, help="seeds per variant (--first-seed, the next, ...)")
    p.add_argument("--first-seed", type=int, default=1337, help="the first seed (a later sweep adds seeds to a cell)")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument(
        "--flags", default="", help='more gpt.train flags for every cell, as one argument: --flags="--no-compile"'
    )
    p.add_argument("--log", type=Path, default=Path("speedrun.jsonl"), help="where each finished cell is appended")
    args = p.parse_args()
    if not args.data.is_file():
        sys.exit(f"error: {args.data} not found: give --data a UTF-8 text file")
    import torch

    print(
        f"machine: {cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}, device cpu; data {args.data.name}"
    )
    print(f"budget {args.minutes:g} min a run, {args.seeds} seeds, flags: {args.flags or '(none)'}", flush=True)
    jobs = [(v, args.first_seed + i) for v in args.variants for i in range(args.seeds)]
    results: dict[str, list[dict]] = {v: [] for v in args.variants}
    bar = tqdm(jobs, desc="speedrun", unit="run")
    for variant, seed in bar:
        bar.set_postfix_str(f"{variant} seed {seed}")
        c = cell(args.data, args.minutes, variant, seed, args.flags.split())
        results[variant].append(c)
        with args.log.open("a") as f:
            f.write(json.dumps({**c, "cpu": cpu_name(), "flags": args.flags}) + "\n")
        tqdm.write(
            f"{variant} seed {seed}: {c['val_loss']:.4f} ({c['shape']}, {c['steps']:,} steps, {c['wall_s']:.0f} s)"
        )
    base = statistics.mean(c["val_loss"] for c in results[args.variants[0]])
    print(f"\n| variant | val loss (mean) | spread | vs {args.variants[0]} | seeds | shape planned | steps | wall |")
    print("|---|---|---|---|---|---|---|---|")
    for variant in args.variants:
        print(row(variant, results[variant], None if variant == args.variants[0] else base))


if __name__ == "__main__":
    main()
