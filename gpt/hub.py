"""`python -m gpt.hub`: push to the Hub and deploy the app as a Space.

The command lives in gpt/storage/hub.py; this name is the one users type and recorded commands keep."""

from gpt.storage.hub import main

__all__ = ["main"]

if __name__ == "__main__":
    main()
