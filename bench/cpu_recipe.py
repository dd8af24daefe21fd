"""The laptop recipe end to end: train --preset shakespeare-char-cpu on Tiny Shakespeare, time it, score it exactly.

python bench/cpu_recipe.py [--data PATH] [--with-nanogpt-recipe]
Wall time is the whole `python -m gpt.train` process, start-up and final scoring included; the loss is gpt.eval's exact
validation loss (every target of the last 10% once). --with-nanogpt-recipe also runs nanoGPT's CPU settings (4x128,
AdamW, 2,000 steps: nanoGPT's own run ends at 1.88) with this trainer in the same run, and prints the ratio of the two
wall times: the preset should reach 1.88 in at most a third of that time.
"""

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET = 1.88
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "tinyshakespeare.txt"
NANOGPT_CPU = [
    *"--n-layer 4 --n-head 4 --n-embd 128 --block-size 64 --batch-size 12 --max-steps 2000 --lr 1e-3".split(),
    *"--min-lr 1e-4 --warmup-steps 100 --dropout 0 --eval-interval 2000 --eval-steps 20".split(),
]


def run(name: str, data: Path, extra: list[str]) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "model"
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        cmd = [sys.executable, "-m", "gpt.train", "--data", str(data), "--out", str(out), *extra]
        start = time.perf_counter()
        subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wall = time.perf_counter() - start
        score = subprocess.run(
            [sys.executable, "-m", "gpt.eval", str(out), "--data", str(data), "--device", "cpu"],
            check=True,
            env=env,
            capture_output=True,
            text=True,
        ).stdout.strip()
    loss = float(score.split()[2])
    print(f"{name:<34} wall {wall:6.1f} s   {score}   {'reached' if loss <= TARGET else 'did not reach'} {TARGET}")
    return wall, loss


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="Tiny Shakespeare (input.txt)")
    p.add_argument("--with-nanogpt-recipe", action="store_true", help="also train with nanoGPT's CPU settings")
    args = p.parse_args()
    if not args.data.is_file():
        sys.exit(f"error: {args.data} not found: give --data the Tiny Shakespeare file")
    import torch

    threads = torch.get_num_threads()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} ({threads} threads)")
    print(
        f"target: val loss <= {TARGET} in at most 1/3 of the time nanoGPT's CPU settings take (nanoGPT itself: 1.886 "
        "in 136-150 s on the 2-vCPU AMD reference)"
    )
    ours, loss = run("--preset shakespeare-char-cpu", args.data, ["--preset", "shakespeare-char-cpu"])
    if args.with_nanogpt_recipe:
        theirs, _ = run("nanoGPT CPU settings, this trainer", args.data, NANOGPT_CPU)
        verdict = "met" if ours <= theirs / 3 and loss <= TARGET else "NOT met"
        print(
            f"time to {TARGET}: preset {ours:.1f} s vs nanoGPT settings {theirs:.1f} s (their whole run) = "
            f"{ours / theirs:.2f} of it; target <= 0.33: {verdict}"
        )


if __name__ == "__main__":
    main()
