"""`python -m gpt.folder`: check or upgrade a model folder.

The command lives in gpt/storage/folder.py; this name is the one users type and recorded commands keep."""

from gpt.storage.folder import main

__all__ = ["main"]

if __name__ == "__main__":
    main()
