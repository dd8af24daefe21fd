"""Sample from a model folder or Hub repo: python -m gpt.sample PATH_OR_REPO --prompt TEXT [controls]."""

import argparse
import sys

import gpt
from gpt.models.tokenizer import UnknownCharactersError
from gpt.serving.generate import load


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=gpt.prog("gpt.sample"),
        description="Generate text from a trained model (a folder, or a Hub repo id like owner/name).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    a = p.add_argument
    a("model", help="model folder or Hub repo id")
    a("--revision", help="Hub branch, tag or commit id")
    a("--prompt", default="", help="text to continue (document models: the start of an item)")
    a("--max-new-tokens", type=int, default=500, help="characters to generate at most")
    a("--temperature", type=float, default=0.8, help="0 is greedy; higher is more varied")
    a("--top-k", type=int, default=0, help="sample among the k most likely tokens (0: off)")
    a("--top-p", type=float, default=1.0, help="sample within this probability mass (1: off)")
    a("--repetition-penalty", type=float, default=1.0, help="above 1 discourages repeating characters")
    a("--stop", action="append", default=[], help="stop before this string (repeatable)")
    a("--seed", type=int, help="same seed and settings give the same text")
    a("--num-samples", type=int, default=1, help="samples to draw, decoded together as one batch")
    a("--stream", action="store_true", help="print text as it is generated")
    a("--device", default=None, help="cpu, cuda or mps (default: the best available)")
    a("--compile", action="store_true", help="decode through torch.compile: faster after some seconds of compiling")
    return p


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    controls = dict(
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        repetition_penalty=args.repetition_penalty,
        stop=args.stop,
        seed=args.seed,
    )
    try:
        if args.num_samples < 1:
            raise ValueError("--num-samples must be at least 1")
        lm = load(args.model, device=args.device, revision=args.revision, compile=args.compile)
        if args.stream and args.num_samples == 1:
            print(args.prompt, end="", flush=True)
            for piece in lm.stream(args.prompt, **controls):
                print(piece, end="", flush=True)
            print()
            return
        texts = lm.generate_batch([args.prompt] * args.num_samples, **controls)
    except (ValueError, UnknownCharactersError, FileNotFoundError) as e:
        sys.exit(f"error: {e}")
    print("\n---\n".join(args.prompt + t for t in texts))


if __name__ == "__main__":
    main()
