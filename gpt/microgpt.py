"""`python -m gpt.microgpt`: microgpt, trained by micrograd.

The command lives in gpt/models/microgpt.py; this name is the one users type and recorded commands keep."""

from gpt.models.microgpt import main

__all__ = ["main"]

if __name__ == "__main__":
    main()
