"""`python -m gpt.conversations`: conversations made from a play.

The command lives in gpt/training/conversations.py; this name is the one users type and recorded commands keep."""

from gpt.training.conversations import main

__all__ = ["main"]

if __name__ == "__main__":
    main()
