"""Quality of a names model: exact validation loss per character and how many of 200 samples are new names.

python bench/names_quality.py [--model weights/names] [--data ../shared/data/names.txt]
Reference: makemore's transformer reaches a test loss of 2.085 after 2000 steps, about 1.92 after long training.
"""

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import gpt  # noqa: E402
from gpt.training.data import read_text, split_documents  # noqa: E402
from gpt.training.eval import validation_loss  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=str(ROOT / "weights" / "names"))
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "names.txt")
    p.add_argument("--samples", type=int, default=200)
    args = p.parse_args()
    lm = gpt.load(args.model, device="cpu")
    text = read_text(args.data)
    loss, count, _ = validation_loss(lm, text)
    train, _ = split_documents(text)
    names = lm.generate_batch([""] * args.samples, max_new_tokens=lm.block_size, temperature=1.0, seed=0)
    finished = [n for n in names if n and len(n) < lm.block_size]
    novel = [n for n in finished if n not in set(train)]
    print(f"model: {args.model} ({lm.model.num_params():,} parameters)")
    reference = "makemore: 2.085 (2000 steps), ~1.92 (long)"
    print(f"validation loss per character (exact, {count:,} targets): {loss:.4f}   {reference}")
    print(
        f"samples (temperature 1.0, seed 0): {len(finished)}/{args.samples} finished, "
        f"{len(novel)} ({len(novel) / max(1, len(finished)):.0%}) not in the training set"
    )
    print("examples:", " ".join(novel[:15]))


if __name__ == "__main__":
    main()
