"""A compact character-level GPT: train it, save it as safetensors, share it on the Hub, and sample from it."""

from gpt.generate import LM, SamplingParams
from gpt.hub import load
from gpt.model import GPT, GPTConfig
from gpt.tokenizer import CharTokenizer

__all__ = ["GPT", "GPTConfig", "LM", "CharTokenizer", "SamplingParams", "load"]
