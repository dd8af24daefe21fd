"""A compact character-level GPT: train it, save it as safetensors, share it on the Hub, and sample from it."""

from gpt.generate import LM, SamplingParams
from gpt.model import GPT, GPTConfig
from gpt.tokenizer import CharTokenizer

__all__ = ["GPT", "GPTConfig", "LM", "CharTokenizer", "SamplingParams", "load"]


def __getattr__(name: str):
    # gpt.load lives in gpt.hub, imported on first use so that `python -m gpt.hub` runs it only once.
    if name == "load":
        from gpt.hub import load

        return load
    raise AttributeError(f"module 'gpt' has no attribute {name!r}")
