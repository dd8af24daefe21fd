"""`python -m gpt.micrograd`: lecture 1's autograd engine and network.

The command lives in gpt/models/micrograd.py; this name is the one users type and recorded commands keep."""

from gpt.models.micrograd import main

__all__ = ["main"]

if __name__ == "__main__":
    main()
