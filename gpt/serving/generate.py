"""The front door: `gpt.load` gives an LM (a model with its tokenizer) that completes, streams and batches text.

Every path decodes through gpt/serving/decode.py's `step_rows` with gpt/serving/sampling.py's sampler, as the
server's engine does.
"""

import os
from collections.abc import Iterator
from pathlib import Path

import torch

from gpt.models.model import GPT, pick_device
from gpt.models.tokenizer import AnyTokenizer
from gpt.models.window import Model, WindowModel, row_length
from gpt.serving.decode import CompiledStep, decode_rows
from gpt.serving.sampling import Row, Sampler, SamplingParams, Token, row_params
from gpt.storage.folder import read_folder, read_metrics
from gpt.storage.folder_checks import ModelLimits
from gpt.storage.hub import resolve


class Completion:
    """A streaming completion: iterate for Tokens; afterwards finish_reason is "stop" or "length".

    Closing it (or breaking out of the loop) ends the decode loop at once: nothing runs on in the background.
    """

    def __init__(self, lm: "LM", prompt: str, params: SamplingParams, top_logprobs: int = 0):
        self.prompt_ids = lm.encode_prompt(prompt)
        self.lm, self.params, self.top_logprobs = lm, params, top_logprobs
        self.row = Row(params, lm.tokenizer.boundary_id)
        self._iter = self._tokens()

    @property
    def prompt_tokens(self) -> int:
        return len(self.prompt_ids)

    @property
    def completion_tokens(self) -> int:
        return self.row.generated

    @property
    def finish_reason(self) -> str | None:
        return self.row.finish_reason

    def __iter__(self) -> Iterator[Token]:
        return self._iter

    def close(self) -> None:
        self._iter.close()

    def _tokens(self) -> Iterator[Token]:
        lm = self.lm
        steps = decode_rows(lm.model, lm.tokenizer, [self.prompt_ids], [self.row], [self.top_logprobs], lm.compiled)
        try:
            for (ready,) in steps:
                yield from ready
        finally:
            steps.close()


class LM:
    """A model with its tokenizer: what `gpt.load` returns (its model is in eval mode; LM never changes the mode)."""

    def __init__(self, model: Model, tokenizer: AnyTokenizer, compile: bool = False):
        if model.config.vocab_size != tokenizer.vocab_size:
            raise ValueError(
                f"tokenizer.json has {tokenizer.vocab_size} tokens but config.json's vocab_size is "
                f"{model.config.vocab_size}"
            )
        self.model, self.tokenizer = model, tokenizer
        self.compiled = CompiledStep(model) if compile and self.compilable else None  # decoding through torch.compile
        self.folder: Path | None = None  # where it was loaded from, if anywhere
        # the folder's record of its training text (gpt/training/data.py's describe_text), if it has one
        self.about: dict = {}

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def compilable(self) -> bool:
        """Whether decoding can go through torch.compile: a GPT on a CPU or a CUDA device."""
        return isinstance(self.model, GPT) and self.device.type in ("cpu", "cuda")

    @property
    def block_size(self) -> int:
        return self.model.config.block_size

    @property
    def windowed(self) -> bool:
        """A fixed-window model: it reads prompts of any length, sees their last block_size characters, has no
        attention to show and scores rows of ROW_LENGTH at a time."""
        return isinstance(self.model, WindowModel)

    @property
    def row_length(self) -> int:
        """Tokens scored in one row: the GPT's context, or ROW_LENGTH for a window model (any length works)."""
        return row_length(self.model.config)

    def encode_prompt(self, prompt: str) -> list[int]:
        """Token ids to condition on. Document models start a fresh item; an empty prompt starts after a newline."""
        ids = self.tokenizer.encode(prompt)
        if self.tokenizer.documents:
            return [self.tokenizer.boundary_id] + ids
        if not ids:
            if self.tokenizer.unknown("\n"):
                raise ValueError("the prompt is empty: give some text to continue")
            return self.tokenizer.encode("\n")
        return ids

    @torch.no_grad()
    def next_token(self, prompt: str, **controls) -> tuple[torch.Tensor, torch.Tensor]:
        """After `prompt`: the model's own next-token distribution (temperature 1) and the one the sampler draws from
        with these controls (the repetition penalty counting the tokens in the context), both (V,): what the
        Playground's chart sets side by side."""
        ids = self.encode_prompt(prompt)[-self.block_size :]
        logits = self.model(torch.tensor([ids], device=self.device))[0][:, -1].float()
        seen = torch.zeros_like(logits, dtype=torch.bool)
        seen[0, ids] = True
        drawn = Sampler([SamplingParams(**controls)], logits.size(-1), self.device).probabilities(logits, seen)
        return logits.softmax(dim=-1)[0].cpu(), drawn[0].cpu()

    def complete(self, prompt: str, top_logprobs: int = 0, **controls) -> Completion:
        """A Completion to iterate token by token, with log-probabilities and the finish reason."""
        return Completion(self, prompt, SamplingParams(**controls), top_logprobs)

    def stream(self, prompt: str, **controls) -> Iterator[str]:
        """Text pieces as they are generated; closing the iterator stops generation."""
        completion = self.complete(prompt, **controls)
        try:
            for token in completion:
                yield token.text
        finally:
            completion.close()

    def generate(self, prompt: str, **controls) -> str:
        return "".join(self.stream(prompt, **controls))

    def generate_batch(self, prompts: list[str], **controls) -> list[str]:
        """Several prompts decoded together, one forward step for all.

        With a seed, prompt i uses seed + i, so result i equals generate(prompts[i], seed=seed + i) alone.
        """
        params = SamplingParams(**controls)
        ids = [self.encode_prompt(p) for p in prompts]
        rows = [Row(row_params(params, i), self.tokenizer.boundary_id) for i in range(len(prompts))]
        texts: list[list[str]] = [[] for _ in prompts]
        for ready in decode_rows(self.model, self.tokenizer, ids, rows, [0] * len(rows), self.compiled):
            for text, tokens in zip(texts, ready):
                text += [t.text for t in tokens]
        return ["".join(t) for t in texts]


def load(
    path_or_repo_id: str | Path,
    device: str | None = None,
    revision: str | None = None,
    token: str | None = None,
    limits: ModelLimits | None = None,
    compile: bool = False,
) -> LM:
    """A model folder or Hub repo (owner/name[@revision], private ones with a token) on a device (default: the best
    available), checked against `limits` before it is built. compile=True decodes through torch.compile on CPUs and
    CUDA (gpt.serving.decode.CompiledStep): worth its compile time in a long-lived process (the app)."""
    folder = resolve(path_or_repo_id, revision, token)
    name = None if os.path.isdir(str(path_or_repo_id)) else str(path_or_repo_id)
    model, tokenizer = read_folder(folder, limits, name)
    lm = LM(model.to(pick_device(device)), tokenizer, compile)
    lm.folder = folder
    lm.about = read_metrics(folder).get("run", {}).get("text") or {}
    return lm
