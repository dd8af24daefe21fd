"""Character vs byte-level BPE tokenizing at equal wall time, and what each --time-budget buys, on one text file.

python bench/tokenizing.py [--data PATH] [--minutes 3] [--tokenizers char bpe:512 bpe:1024 bpe:2048]
Each cell is a whole `python -m gpt.train --time-budget M` process (the trainer sizes the model for the budget on this
machine), scored by gpt.eval on the last 10% of the text. Bits per byte is the comparable figure: nats per token
depend on what a token is, bits per byte do not. The character tokenizer is the baseline beside each BPE row.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "tinyshakespeare.txt"


def cell(data: Path, minutes: float, tokenizer: str) -> dict:
    """Train one budgeted model and score it: the row's figures."""
    flags = ["--time-budget", f"{minutes:g}"]
    if tokenizer != "char":
        flags += ["--tokenizer", "bpe", "--vocab-size", tokenizer.split(":")[1]]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "model"
        start = time.perf_counter()
        cmd = [sys.executable, "-m", "gpt.train", "--data", str(data), "--out", str(out), *flags]
        subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wall = time.perf_counter() - start
        run = json.loads((out / "metrics.json").read_text())["run"]
    s = run["settings"]
    return {
        "tokenizer": tokenizer,
        "minutes": minutes,
        "wall_s": wall,
        "shape": f"{s['n_layer']}x{s['n_embd']} ctx {s['block_size']} batch {s['batch_size']}, {s['max_steps']} steps",
        "parameters": run["parameters"],
        "nats_per_token": run["exact_val_loss"],
        "bits_per_byte": run["val_bits_per_byte"],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the text to train on (default: Tiny Shakespeare)")
    p.add_argument("--minutes", type=float, nargs="+", default=[3.0], help="time budgets, one row group each")
    p.add_argument("--tokenizers", nargs="+", default=["char", "bpe:512", "bpe:1024", "bpe:2048"])
    args = p.parse_args()
    if not args.data.is_file():
        sys.exit(f"error: {args.data} not found: give --data a UTF-8 text file")
    import torch

    info = Path("/proc/cpuinfo")
    lines = info.read_text().splitlines() if info.exists() else []
    cpu = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), platform.machine())
    print(f"machine: {cpu}, {os.cpu_count()} cores, torch {torch.__version__}; data {args.data.name}")
    print(f"{'tokenizer':<10} {'budget':>7} {'wall':>8}  {'model':<42} {'params':>9} {'nats/tok':>9} {'bits/byte':>9}")
    for minutes in args.minutes:
        base = None
        for tokenizer in args.tokenizers:
            r = cell(args.data, minutes, tokenizer)
            base = base or r["bits_per_byte"]
            print(
                f"{r['tokenizer']:<10} {minutes:>5g} m {r['wall_s']:>6.1f} s  {r['shape']:<42} {r['parameters']:>9,} "
                f"{r['nats_per_token']:>9.4f} {r['bits_per_byte']:>9.4f}  ({r['bits_per_byte'] / base:.3f}x first row)",
                flush=True,
            )


if __name__ == "__main__":
    main()
