"""`python -m gpt.train`: the trainer.

The command lives in gpt/training/train.py; this name is the one users type and recorded commands keep."""

from gpt.training.train import main

__all__ = ["main"]

if __name__ == "__main__":
    main()
