"""The laptop recipe end to end: train --preset shakespeare-char-cpu on Tiny Shakespeare, time it, score it exactly.

python bench/cpu_recipe.py [--data PATH] [--with-nanogpt-recipe]
Wall time is the whole `python -m gpt.train` process, start-up included; the loss is gpt.eval's exact validation
loss (every target of the last 10% once). --with-nanogpt-recipe also runs nanoGPT's CPU settings with this trainer.
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
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "tinyshakespeare.txt"
NANOGPT_CPU = ["--n-layer", "4", "--n-head", "4", "--n-embd", "128", "--block-size", "64", "--batch-size", "12",
               "--max-steps", "2000", "--lr", "1e-3", "--min-lr", "1e-4", "--warmup-steps", "100", "--dropout", "0",
               "--eval-interval", "2000", "--eval-steps", "20"]  # fmt: skip


def run(name: str, data: Path, extra: list[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "model"
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        cmd = [sys.executable, "-m", "gpt.train", "--data", str(data), "--out", str(out), *extra]
        start = time.perf_counter()
        subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wall = time.perf_counter() - start
        score = subprocess.run([sys.executable, "-m", "gpt.eval", str(out), "--data", str(data), "--device", "cpu"],
                               check=True, env=env, capture_output=True, text=True).stdout.strip()  # fmt: skip
    print(f"{name:<34} wall {wall:6.1f} s   {score}")


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
    print("target: val loss <= 1.88 within 75 s; nanoGPT's CPU recipe: 1.886 in 136-150 s on the 2-vCPU reference")
    run("--preset shakespeare-char-cpu", args.data, ["--preset", "shakespeare-char-cpu"])
    if args.with_nanogpt_recipe:
        run("nanoGPT CPU settings, this trainer", args.data, NANOGPT_CPU)


if __name__ == "__main__":
    main()
