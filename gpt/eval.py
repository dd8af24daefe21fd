"""`python -m gpt.eval`: the exact validation loss of a model.

The command lives in gpt/training/eval.py; this name is the one users type and recorded commands keep."""

from gpt.training.eval import main

__all__ = ["main"]

if __name__ == "__main__":
    main()
