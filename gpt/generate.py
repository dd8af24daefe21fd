"""The one sampler: KV-cached, batched, streaming generation with the usual controls, used by CLI, UI and API.

Decoding keeps a KV cache per sequence. When a sequence fills the context, its last half block of tokens is
prefilled again (a context shift, as llama.cpp does): absolute position embeddings rule out sliding one token at a
time without recomputing, and this keeps decoding incremental for half a block at a time. A fixed-window model
(gpt/window.py) keeps each sequence's last block_size tokens instead and runs its window again every step.
"""

import functools
import itertools
import math
import types
import warnings
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from gpt.model import GPT, KVCache
from gpt.tokenizer import CharTokenizer
from gpt.window import Model, WindowModel, row_length

SEED_MIN, SEED_MAX = -(1 << 63), (1 << 63) - 1  # a 64-bit signed integer, as OpenAI's API documents it


@dataclass(frozen=True)
class SamplingParams:
    """Generation controls. temperature 0 is greedy; top_k 0 and top_p 1 are off; the same seed repeats a sample."""

    max_new_tokens: int = 256
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None

    def __post_init__(self):
        def check(name, value, ok, rule):
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or (isinstance(value, float) and not math.isfinite(value))
                or not ok(value)
            ):
                raise ValueError(f"{name} must be {rule}, got {value!r}")

        check("max_new_tokens", self.max_new_tokens, lambda v: v >= 0 and v == int(v), "a whole number >= 0")
        check("temperature", self.temperature, lambda v: v >= 0, "a number >= 0 (0 means greedy)")
        check("top_k", self.top_k, lambda v: v >= 0 and v == int(v), "a whole number >= 0 (0 means off)")
        check("top_p", self.top_p, lambda v: 0 < v <= 1, "in (0, 1] (1 means off)")
        check("repetition_penalty", self.repetition_penalty, lambda v: v > 0, "a number > 0 (1 means off)")
        stop = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)
        if any(not isinstance(s, str) or not s for s in stop):
            raise ValueError(f"stop must be non-empty strings, got {self.stop!r}")
        if self.seed is not None and (
            isinstance(self.seed, bool) or not isinstance(self.seed, int) or not SEED_MIN <= self.seed <= SEED_MAX
        ):
            raise ValueError(f"seed must be a whole number from {SEED_MIN} to {SEED_MAX} or None, got {self.seed!r}")
        object.__setattr__(self, "stop", stop)
        object.__setattr__(self, "max_new_tokens", int(self.max_new_tokens))
        object.__setattr__(self, "top_k", int(self.top_k))


def seeded_generator(seed: int | None) -> torch.Generator:
    """A random generator for one sequence: seeded to repeat a sample, or freshly random."""
    g = torch.Generator()
    if seed is None:
        g.seed()
    else:
        g.manual_seed(seed % (1 << 64))  # any whole number maps onto torch's 64-bit seeds; never raises
    return g


def row_params(params: SamplingParams, i: int) -> SamplingParams:
    """The settings of sequence i of a batch: with a seed, sequence i uses seed + i, so it repeats alone."""
    if params.seed is None or i == 0:
        return params
    return replace(params, seed=(params.seed + i - SEED_MIN) % (1 << 64) + SEED_MIN)  # wraps within 64 bits


class Sampler:
    """Picks the next token of every row from its logits, each row with its own settings and random generator."""

    def __init__(self, params: list[SamplingParams], vocab_size: int, device, generators=None):
        t = [p.temperature for p in params]
        self.greedy = torch.tensor([x == 0 for x in t], device=device)
        self.temperature = torch.tensor([x or 1.0 for x in t], device=device)[:, None]
        self.top_k = torch.tensor([min(p.top_k or vocab_size, vocab_size) for p in params], device=device)[:, None]
        self.top_p = torch.tensor([p.top_p for p in params], device=device)[:, None]
        self.penalty = torch.tensor([p.repetition_penalty for p in params], device=device)[:, None]
        self.use_penalty = any(p.repetition_penalty != 1 for p in params)
        self.filtered = any(0 < p.top_k < vocab_size or p.top_p < 1 for p in params)  # else no sort: nothing to cut
        self.all_greedy = all(x == 0 for x in t)
        self.generators = generators or [seeded_generator(p.seed) for p in params]

    def __call__(self, logits: torch.Tensor, seen: torch.Tensor | None) -> torch.Tensor:
        """logits (B, V) -> tokens (B,). `seen` (B, V) marks tokens already in each row, for the repetition penalty."""
        logits = logits.float()
        if self.use_penalty and seen is not None:  # CTRL's penalty: shrink the logits of tokens already present
            penalised = torch.where(logits > 0, logits / self.penalty, logits * self.penalty)
            logits = torch.where(seen, penalised, logits)
        greedy = logits.argmax(dim=-1)
        if self.all_greedy:
            return greedy
        logits = logits / self.temperature
        if self.filtered:  # top-k, then top-p (nucleus), in sorted order; the most likely token always survives
            logits, order = logits.sort(dim=-1, descending=True)
            rank = torch.arange(logits.size(-1), device=logits.device)
            logits = logits.masked_fill(rank >= self.top_k, float("-inf"))
            probs = logits.softmax(dim=-1)
            logits = logits.masked_fill(probs.cumsum(dim=-1) - probs >= self.top_p, float("-inf"))
        probs = logits.softmax(dim=-1)
        u = torch.stack([torch.rand((), generator=g) for g in self.generators]).to(probs.device)
        choice = torch.searchsorted(probs.cumsum(dim=-1), u[:, None]).clamp(max=probs.size(-1) - 1)[:, 0]
        if self.filtered:
            choice = order.gather(1, choice[:, None])[:, 0]
        return torch.where(self.greedy, greedy, choice)


@dataclass
class Token:
    """One generated token; logprob and top alternatives come from the model's own (temperature 1) distribution."""

    id: int
    text: str
    logprob: float | None = None
    top: list[tuple[str, float]] = field(default_factory=list)


def step_tokens(
    tokenizer: CharTokenizer, tokens: torch.Tensor, logprobs: torch.Tensor | None, top_logprobs: list[int]
) -> list[Token]:
    """A decode step's new tokens as Tokens; with log-probabilities, row i also lists its top_logprobs[i] best."""
    out = [Token(t, tokenizer.decode([t])) for t in tokens.tolist()]
    if logprobs is not None:
        chosen = logprobs.gather(1, tokens[:, None])[:, 0].tolist()
        for i, token in enumerate(out):
            token.logprob = chosen[i]
            if top_logprobs[i]:
                values, ids = logprobs[i].topk(min(top_logprobs[i], tokenizer.vocab_size))
                token.top = [(tokenizer.decode([k]), v) for v, k in zip(values.tolist(), ids.tolist())]
    return out


class StopMatcher:
    """Knuth-Morris-Pratt over one stop string: how much of it the text fed so far ends with, in O(1) per character."""

    def __init__(self, stop: str):
        self.stop, self.matched = stop, 0
        self.fallback = [0] * len(stop)  # fallback[i]: the longest proper border of stop[: i + 1]
        k = 0
        for i in range(1, len(stop)):
            while k and stop[i] != stop[k]:
                k = self.fallback[k - 1]
            if stop[i] == stop[k]:
                k += 1
            self.fallback[i] = k

    def feed(self, char: str) -> bool:
        """True when this character completes the stop string."""
        k = self.matched
        if k == len(self.stop):
            k = self.fallback[k - 1]
        while k and char != self.stop[k]:
            k = self.fallback[k - 1]
        if char == self.stop[k]:
            k += 1
        self.matched = k
        return k == len(self.stop)


class StopStrings:
    """Holds back tokens that may be the start of a stop string; reports where one completes.

    Linear in the text: each character advances one matcher per stop string, so long stop strings cost no more per
    token than short ones.
    """

    def __init__(self, stops: tuple[str, ...]):
        self.stops = stops
        self.matchers = [StopMatcher(s) for s in stops]
        self.pending: deque[Token] = deque()
        self.pending_chars = 0

    def feed(self, token: Token) -> tuple[list[Token], bool]:
        """Tokens now safe to emit, and whether a stop string was completed (its text is never emitted)."""
        if not self.stops:
            return [token], False
        self.pending.append(token)
        self.pending_chars += len(token.text)
        at = self.pending_chars - len(token.text)
        for char in token.text:
            at += 1
            completed = [len(m.stop) for m in self.matchers if m.feed(char)]
            if completed:
                return self._release(at - max(completed)), True
        return self._release(self.pending_chars - max(m.matched for m in self.matchers)), False

    def _release(self, chars: int) -> list[Token]:
        """The pending tokens that lie wholly within the first `chars` pending characters."""
        out, used = [], 0
        while self.pending and used + len(self.pending[0].text) <= chars:
            used += len(self.pending[0].text)
            out.append(self.pending.popleft())
        self.pending_chars -= used
        return out

    def flush(self) -> list[Token]:
        out, self.pending, self.pending_chars = list(self.pending), deque(), 0
        return out


def context_shift_keep(block_size: int) -> int:
    """Tokens kept when a full context is shifted: half the block, as llama.cpp's server keeps. Each shift re-fills
    them (a prompt-sized forward): keeping 3/4 took 15% of the 0.8M model's decoding time past its context, half
    takes 9% (compiled, batch 1, 2-vCPU Xeon)."""
    return max(1, block_size // 2)


def uncompiled_step(model: GPT, idx: torch.Tensor, cache: KVCache) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """GPT.decode_step for the rows of `cache`, each continued by its token in idx (B,), over the positions in use."""
    length = int(cache.pos.max())
    return model.decode_step(idx, cache.k[..., :length, :], cache.v[..., :length, :], cache.pos.to(idx.device))


def decode_with(model: GPT, idx: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pos: torch.Tensor):
    """The step as a plain function, whose code CompiledStep copies once per model."""
    return model.decode_step(idx, k, v, pos)


STEP_IDS = itertools.count()


class CompiledStep:
    """GPT.decode_step through torch.compile: one graph per step instead of ~15 small ops per layer, 1.6-1.9x the
    tokens/s at batch 1 on a CPU (bench/speed.py). Two graphs, each compiled on first use (8-60 s each, by host;
    DecodeBatch.warm_up): one row reads its whole context (fixed shapes are fastest) and streams each weight in one
    C++ loop (gpt/model.py's `linear`: 2x the step's speed on an AMD EPYC); several rows read only the
    positions in use (at least 16: lengths 0 and 1 would each get a graph), batch size and length dynamic, and on a
    CPU multiply in inductor's C++ GEMM over frozen weights (1.3-2x oneDNN's speed for 2-16 rows, AMD EPYC). Fills
    (a prompt, a context shift) stay uncompiled: they are compute-bound, and a compiled fill was no faster on the
    10.65M model. The several-rows graph holds the weights it was compiled with: a model changed after its first
    batched step would need a new CompiledStep. Where the compiler cannot run (no C++ compiler, an unsupported
    device) it warns once and runs uncompiled; outputs agree.
    """

    def __init__(self, model: GPT):
        import torch._functorch.config
        import torch._inductor.config

        # torch.compile's on-disk caches of graphs are pickles: off (its compiled C++ code is still reused)
        torch._functorch.config.enable_autograd_cache = False
        self.model = model
        # torch.compile keeps graphs per code object: this model's step gets a code object of its own, so its graphs
        # need guards on the step's inputs only (checking every module and weight cost 10% of a batch-1 token), and
        # another model's graphs are never run with this model's weights. And one code object per graph: of one code
        # object's graphs the last compiled is tried first, and the several-rows graph takes one row too (at half the
        # speed of the one-row graph, which is what a server with one client ran before).
        n = next(STEP_IDS)
        codes = [decode_with.__code__.replace(co_name=f"decode_step_{n}_{kind}") for kind in ("one_row", "rows")]
        steps = [types.FunctionType(code, decode_with.__globals__) for code in codes]
        options = {
            "cpp_wrapper": True,
            # a pointwise result of more than 8 ops is computed once, not again inside each row of the one-row
            # products that read it (GELU, layer norm): the batch-1 step in half the time (3.2 vs 6.7 ms, 10.65M)
            "realize_opcount_threshold": 8,
            "fx_graph_cache": False,
            "guard_filter_fn": torch.compiler.keep_tensor_guards_unsafe,
        }
        rows_options = dict(options)
        if next(model.parameters()).device.type == "cpu":
            # the products of several rows in inductor's own C++ GEMM (register-blocked kernels over the frozen
            # weights, one candidate, so nothing to tune) instead of oneDNN: a 2-vCPU AMD EPYC's 2- / 16-row step
            # 4.2-5.1 / 10.1-10.2 ms -> 1.9-2.9 / 6.4-8.4 ms (compiling takes ~20 s more)
            rows_options |= {"max_autotune_gemm": True, "max_autotune_gemm_backends": "CPP",
                             "autotune_local_cache": False}  # fmt: skip
        self.one_row = torch.compile(steps[0], options=options)
        self.rows = torch.compile(steps[1], options=rows_options)
        self.failed = False

    def __call__(self, idx: torch.Tensor, cache: KVCache) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """As uncompiled_step."""
        if not self.failed:
            try:
                block, pos = self.model.config.block_size, cache.pos.to(idx.device)
                length = block if len(idx) == 1 else min(max(int(cache.pos.max()), 16), block)
                k, v = (t[..., :length, :] for t in (cache.k, cache.v))
                if len(idx) > 1:
                    for t in (idx, k, v, pos):
                        torch._dynamo.mark_dynamic(t, 0)
                    for t in (k, v):
                        torch._dynamo.mark_dynamic(t, 3)
                if len(idx) == 1:
                    return self.one_row(self.model, idx, k, v, pos)
                # weights folded into the graph as constants, so its products run on weights packed once for the
                # CPU's GEMM (17-28% off a 4- to 16-row step with oneDNN's, AMD EPYC; the C++ GEMM above needs
                # them); only a global setting reaches it, hence the patch
                with torch._inductor.config.patch(freezing=True):
                    return self.rows(self.model, idx, k, v, pos)
            except Exception as e:
                self.failed = True
                message = f"torch.compile cannot run here, decoding uncompiled: {type(e).__name__}: {e}"
                warnings.warn(message, stacklevel=2)
        return uncompiled_step(self.model, idx, cache)


class DecodeBatch:
    """Sequences decoding together, one KV cache row each, one forward pass per step for all of them.

    Rows join (`add`) and leave (`remove`) between steps; the rows in use stay packed at the front of the cache.
    Each row keeps its own sampling settings, random generator, seen-token mask (repetition penalty) and history.
    Every method that runs the model or touches the cache is in inference mode: no autograd bookkeeping per op,
    7-12% more tokens/s at batch 1 on a CPU than under no_grad.
    """

    def __init__(self, model: Model, capacity: int, compiled: CompiledStep | None = None):
        p = next(model.parameters())
        self.model, self.device, self.compiled = model, p.device, compiled
        self.decode = (compiled or functools.partial(uncompiled_step, model)) if isinstance(model, GPT) else None
        self.cache = model.empty_cache(capacity, p.device, p.dtype)
        self.seen = torch.zeros(capacity, model.config.vocab_size, dtype=torch.bool, device=p.device)
        self.params: list[SamplingParams] = []
        self.generators: list[torch.Generator] = []
        self.history: list[list[int]] = []  # the tokens in each row's context window
        self.sampler: Sampler | None = None

    def __len__(self) -> int:
        return len(self.history)

    @torch.inference_mode()
    def _fill(self, rows: list[int], ids: list[list[int]]) -> None:
        """The caches of some rows from their tokens, as many for each row, in one forward pass for all of them."""
        start = rows[0]
        adjacent = rows == list(range(start, start + len(rows)))
        if adjacent:  # written in place
            filled = self.cache.rows(start, start + len(rows))
            filled.reset()
        else:  # filled in a cache of their own, then taken in
            filled = self.model.empty_cache(len(rows), self.device, self.cache.k.dtype, length=len(ids[0]))
        if ids[0]:
            self.model(torch.tensor(ids, device=self.device), cache=filled)
        if not adjacent:
            self.cache.take(rows, filled)

    @torch.inference_mode()
    def add(self, prompts: list[list[int]], params: list[SamplingParams]) -> None:
        """New rows for non-empty prompts; longer than the context, only their last block_size tokens count.

        Prompts of one length in a row fill their caches in one forward pass (a burst of requests, n choices of one
        prompt): each alone would be a pass of its own. The rows join all together or, if any cannot, none does.
        """
        first, block = len(self), self.model.config.block_size
        ids = [list(prompt[-block:]) for prompt in prompts]
        for i, row in enumerate(ids, first):
            self.seen[i] = False
            self.seen[i, row] = True
        for _, run in itertools.groupby(range(len(ids)), key=lambda j: len(ids[j])):
            run = list(run)
            self._fill([first + j for j in run], [ids[j][:-1] for j in run])  # each last token: the next step's
        self.history += ids
        self.params += params
        self.generators += [seeded_generator(p.seed) for p in params]
        self.sampler = None

    def warm_up(self) -> None:
        """Compile both graphs now (one row, several rows), so that no request waits for them (seconds each)."""
        if self.compiled is None or len(self):
            return
        for _ in range(min(2, len(self.cache.pos))):
            self.add([[0]], [SamplingParams(temperature=0)])
            self.step()
        while len(self):
            self.remove(len(self) - 1)

    @torch.inference_mode()
    def remove(self, i: int) -> None:
        """Free row i by moving the last row into it."""
        last = len(self) - 1
        if i != last:
            self.cache.move(last, i)
            self.seen[i] = self.seen[last]
            for rows in (self.history, self.params, self.generators):
                rows[i] = rows[last]
        for rows in (self.history, self.params, self.generators):
            rows.pop()
        self.sampler = None

    @torch.inference_mode()
    def step(self, with_logprobs: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Every row's next token (n,) and, if asked, the model's log-probabilities (n, V)."""
        n, block = len(self), self.model.config.block_size
        keep = block if self.cache.slides else context_shift_keep(block)
        shifted = []
        for i, ids in enumerate(self.history):
            if len(ids) > block:  # context full: a window model's cache drops its oldest token itself, a GPT's shifts
                del ids[: len(ids) - keep]
                shifted.append(i)
        if shifted and not self.cache.slides:  # rows that shift together (a batch in step) refill together
            self._fill(shifted, [self.history[i][:-1] for i in shifted])
        if self.sampler is None:
            self.sampler = Sampler(self.params, self.model.config.vocab_size, self.device, self.generators)
        last = torch.tensor([ids[-1] for ids in self.history], device=self.device)
        cache = self.cache.rows(0, n)
        if self.decode:
            logits, k_new, v_new = self.decode(last, cache)
            cache.append(k_new, v_new)
        else:
            logits = self.model(last[:, None], cache=cache)[0][:, -1]
        tokens = self.sampler(logits, self.seen[:n] if self.sampler.use_penalty else None)
        self.seen[:n].scatter_(1, tokens[:, None], True)
        for ids, t in zip(self.history, tokens.tolist()):
            ids.append(t)
        return tokens, (logits.float().log_softmax(dim=-1) if with_logprobs else None)


def decode_steps(
    model: Model, prompts: list[list[int]], params: list[SamplingParams], with_logprobs: bool = False,
    compiled: CompiledStep | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:  # fmt: skip
    """Endless decoding of a fixed batch: yields each step's new tokens (B,) and, if asked, the log-probabilities.

    The caller stops when it has what it needs (closing the generator ends the loop at once).
    """
    batch = DecodeBatch(model, len(prompts), compiled)
    batch.add(prompts, params)
    while True:
        yield batch.step(with_logprobs)


class Row:
    """One sequence's output: turns sampled tokens into emitted ones and decides when, and why, it is finished."""

    def __init__(self, params: SamplingParams, boundary_id: int | None):
        self.stops, self.boundary_id, self.max_new_tokens = StopStrings(params.stop), boundary_id, params.max_new_tokens
        self.generated = 0
        self.finish_reason: str | None = "length" if params.max_new_tokens == 0 else None

    def push(self, token: Token) -> list[Token]:
        self.generated += 1
        if token.id == self.boundary_id:  # a document model ended its item
            self.finish_reason = "stop"
            return self.stops.flush()
        ready, stopped = self.stops.feed(token)
        if stopped:
            self.finish_reason = "stop"
        elif self.generated >= self.max_new_tokens:
            self.finish_reason = "length"
            ready += self.stops.flush()
        return ready


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
        if self.row.finish_reason:
            return
        tok = self.lm.tokenizer
        steps = decode_steps(self.lm.model, [self.prompt_ids], [self.params], self.top_logprobs > 0, self.lm.compiled)
        try:
            for tokens, logprobs in steps:
                (token,) = step_tokens(tok, tokens, logprobs, [self.top_logprobs])
                yield from self.row.push(token)
                if self.row.finish_reason:
                    break
        finally:
            steps.close()


class LM:
    """A model with its tokenizer: what `gpt.load` returns (its model is in eval mode; LM never changes the mode)."""

    def __init__(self, model: Model, tokenizer: CharTokenizer, compile: bool = False):
        if model.config.vocab_size != tokenizer.vocab_size:
            raise ValueError(
                f"tokenizer.json has {tokenizer.vocab_size} tokens but config.json's vocab_size is "
                f"{model.config.vocab_size}"
            )
        self.model, self.tokenizer = model, tokenizer
        compile = compile and isinstance(model, GPT) and self.device.type in ("cpu", "cuda")
        self.compiled = CompiledStep(model) if compile else None  # decoding through torch.compile
        self.folder: Path | None = None  # where it was loaded from, if anywhere

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

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
            if "\n" not in self.tokenizer.stoi:
                raise ValueError("the prompt is empty: give some text to continue")
            return self.tokenizer.encode("\n")
        return ids

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
        tok = self.tokenizer
        ids = [self.encode_prompt(p) for p in prompts]
        rows = [Row(params, tok.boundary_id) for _ in prompts]
        texts: list[list[str]] = [[] for _ in prompts]
        if params.max_new_tokens == 0 or not prompts:
            return ["" for _ in prompts]
        params = [row_params(params, i) for i in range(len(prompts))]
        steps = decode_steps(self.model, ids, params, False, self.compiled)
        for tokens, _ in steps:
            for row, text, t in zip(rows, texts, tokens.tolist()):
                if not row.finish_reason:
                    text += [r.text for r in row.push(Token(t, tok.decode([t])))]
            if all(row.finish_reason for row in rows):
                break
        steps.close()
        return ["".join(t) for t in texts]
