"""A compact character-level GPT: train it, save it as safetensors, share it on the Hub, and sample from it."""

import sys
import time
from pathlib import Path

__all__ = ["GPT", "GPTConfig", "LM", "CharTokenizer", "SamplingParams", "load"]
LAUNCHED = time.time()  # before torch is imported: a command's time budget counts the start-up a user waits through

WHERE = {
    "GPT": "gpt.models.model",
    "GPTConfig": "gpt.models.model",
    "LM": "gpt.serving.generate",
    "load": "gpt.serving.generate",
    "CharTokenizer": "gpt.models.tokenizer",
    "SamplingParams": "gpt.serving.sampling",
}


def __getattr__(name: str):
    # imported on first use, so that `python -m gpt.hub` (which gpt.serving.generate imports) runs its module only once
    if name in WHERE:
        import importlib

        return getattr(importlib.import_module(WHERE[name]), name)
    raise AttributeError(f"module 'gpt' has no attribute {name!r}")


def prog(module: str) -> str:
    """A command's name in its usage line: as the user called it, its console script (gpt-train) or python -m."""
    script = Path(sys.argv[0]).name
    return script if script.startswith("gpt-") else f"python -m {module}"
