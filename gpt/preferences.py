"""`python -m gpt.preferences`: a chat model's replies ranked into pairs.

The command lives in gpt/posttraining/preferences.py; this name is the one users type and recorded commands keep."""

from gpt.posttraining.preferences import main

__all__ = ["main"]

if __name__ == "__main__":
    main()
