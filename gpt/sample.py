"""`python -m gpt.sample`: sampling from a model folder or repo.

The command lives in gpt/serving/sample.py; this name is the one users type and recorded commands keep."""

from gpt.serving.sample import main

__all__ = ["main"]

if __name__ == "__main__":
    main()
