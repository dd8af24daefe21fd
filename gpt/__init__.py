"""A compact character-level GPT: train it, save it as safetensors, share it on the Hub, and sample from it."""

import time

__all__ = ["GPT", "GPTConfig", "LM", "CharTokenizer", "SamplingParams", "load"]
LAUNCHED = time.time()  # before torch is imported: a command's time budget counts the start-up a user waits through

WHERE = {
    "GPT": "gpt.model",
    "GPTConfig": "gpt.model",
    "LM": "gpt.generate",
    "load": "gpt.generate",
    "CharTokenizer": "gpt.tokenizer",
    "SamplingParams": "gpt.sampling",
}


def __getattr__(name: str):
    # imported on first use, so that `python -m gpt.hub` (which gpt.generate imports) runs its module only once
    if name in WHERE:
        import importlib

        return getattr(importlib.import_module(WHERE[name]), name)
    raise AttributeError(f"module 'gpt' has no attribute {name!r}")
