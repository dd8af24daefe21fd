"""Decoding: sequences in one batch, each in its own KV cache row, one forward pass per step for all of them.

When a sequence fills the context, its last half block of tokens is prefilled again (a context shift, as llama.cpp
does): absolute position embeddings rule out sliding one token at a time without recomputing. A fixed-window model
(gpt/models/window.py) keeps each sequence's last block_size tokens instead and runs its window again every step.
The decode step can run through torch.compile (CompiledStep); `step_rows` is the one token loop: the library's
LM and the server's Engine both advance their rows with it.
"""

import functools
import itertools
import types
import warnings
from collections.abc import Iterator

import torch

from gpt.models.model import GPT, KVCache
from gpt.models.tokenizer import AnyTokenizer
from gpt.models.window import Model
from gpt.serving.sampling import Row, Sampler, SamplingParams, Token, piece_of, seeded_generator


def step_tokens(
    tokenizer: AnyTokenizer, tokens: torch.Tensor, logprobs: torch.Tensor | None, top_logprobs: list[int]
) -> list[Token]:
    """A decode step's new tokens as Tokens; with log-probabilities, row i also lists its top_logprobs[i] best."""
    out = [Token(t, tokenizer.decode([t]), bytes=tokenizer.token_bytes(t)) for t in tokens.tolist()]
    if logprobs is not None:
        chosen = logprobs.gather(1, tokens[:, None])[:, 0].tolist()
        for i, token in enumerate(out):
            token.logprob = chosen[i]
            if top_logprobs[i]:
                values, ids = logprobs[i].topk(min(top_logprobs[i], tokenizer.vocab_size))
                token.top = [(piece_of(tokenizer.token_bytes(k)), v) for v, k in zip(values.tolist(), ids.tolist())]
    return out


def context_shift_keep(block_size: int) -> int:
    """Tokens kept when a full context is shifted: half the block, as llama.cpp's server keeps (each shift re-fills
    them; keeping more re-fills more often: docs/benchmarks.md)."""
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
    """GPT.decode_step through torch.compile: one graph per step instead of ~15 small ops per layer.

    Two graphs, each compiled on first use (DecodeBatch.warm_up): one row reads its whole context (fixed shapes are
    fastest) and streams each weight in one C++ loop (gpt/models/model.py's `linear`); several rows read only the
    positions in use (at least 16: lengths 0 and 1 would each get a graph), batch size and length dynamic, and on a CPU
    multiply in inductor's C++ GEMM over frozen weights. Fills (a prompt, a context shift) stay uncompiled: they are
    compute-bound. The several-rows graph holds the weights it was compiled with: a model changed after its first
    batched step needs a new CompiledStep. Where the compiler cannot run (no C++ compiler, an unsupported device) it
    warns once and runs uncompiled; outputs agree. Why each choice, with its figures: docs/benchmarks.md.
    """

    def __init__(self, model: GPT):
        import torch._functorch.config
        import torch._inductor.config

        # torch.compile's on-disk caches of graphs are pickles: off (its compiled C++ code is still reused)
        torch._functorch.config.enable_autograd_cache = False
        self.model = model
        # one code object per model and graph: guards need check only the step's inputs, another model's graphs never
        # run with these weights, and one row never falls into the slower several-rows graph
        n = next(STEP_IDS)
        codes = [decode_with.__code__.replace(co_name=f"decode_step_{n}_{kind}") for kind in ("one_row", "rows")]
        steps = [types.FunctionType(code, decode_with.__globals__) for code in codes]
        options = {
            "cpp_wrapper": True,
            # a pointwise result of over 8 ops (GELU, layer norm) is computed once, not in each row of the products
            "realize_opcount_threshold": 8,
            "fx_graph_cache": False,
            "guard_filter_fn": torch.compiler.keep_tensor_guards_unsafe,
        }
        rows_options = dict(options)
        if next(model.parameters()).device.type == "cpu":
            # several rows' products in inductor's C++ GEMM over the frozen weights (one candidate: nothing to tune)
            rows_options |= {
                "max_autotune_gemm": True,
                "max_autotune_gemm_backends": "CPP",
                "autotune_local_cache": False,
            }
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
                # weights as constants, packed once for the GEMM; only this global setting reaches it
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
    Every method that runs the model or touches the cache is in inference mode: no autograd bookkeeping per op.
    """

    def __init__(self, model: Model, capacity: int, compiled: CompiledStep | None = None):
        p = next(model.parameters())
        self.model, self.device, self.dtype = model, p.device, p.dtype
        self.use_compiled(compiled)
        self.cache = model.empty_cache(capacity, p.device, p.dtype)
        self.seen = torch.zeros(capacity, model.config.vocab_size, dtype=torch.bool, device=p.device)
        self.params: list[SamplingParams] = []
        self.generators: list[torch.Generator] = []
        self.history: list[list[int]] = []  # the tokens in each row's context window
        self.sampler: Sampler | None = None

    def __len__(self) -> int:
        return len(self.history)

    def use_compiled(self, compiled: CompiledStep | None) -> None:
        """Decode through `compiled` (None: uncompiled) from the next step on; a step reads `decode` once, so it runs
        wholly one way or the other. Graphs fit a batch of this capacity: one of another capacity compiles again."""
        self.compiled = compiled
        gpt = isinstance(self.model, GPT)
        self.decode = (compiled or functools.partial(uncompiled_step, self.model)) if gpt else None

    @torch.inference_mode()
    def _fill(self, rows: list[int], ids: list[list[int]]) -> None:
        """The caches of some rows from their tokens, as many for each row, in one forward pass over the distinct ones
        (n choices of one prompt, a group of RL samples: one row's work)."""
        start, first_of = rows[0], {}  # each distinct prompt and the row of the fill that holds it
        which = [first_of.setdefault(tuple(row), len(first_of)) for row in ids]
        distinct = list(first_of)
        if len(distinct) == len(ids) and rows == list(range(start, start + len(rows))):  # written in place
            filled = self.cache.rows(start, start + len(rows))
            filled.reset()
            if ids[0]:
                self.model(torch.tensor(ids, device=self.device), cache=filled)
            return
        filled = self.model.empty_cache(len(distinct), self.device, self.dtype, length=len(ids[0]))
        if ids[0]:
            self.model(torch.tensor(distinct, device=self.device), cache=filled)
        self.cache.take(rows, filled, which)

    @torch.inference_mode()
    def add(self, prompts: list[list[int]], params: list[SamplingParams]) -> None:
        """New rows for non-empty prompts; longer than the context, only their last block_size tokens count.

        Prompts of one length fill their caches in one forward pass (a burst of requests, n choices of one prompt):
        each alone would be a pass of its own. The rows join all together or, if any cannot, none does.
        """
        first, block = len(self), self.model.config.block_size
        ids = [list(prompt[-block:]) for prompt in prompts]
        for i, row in enumerate(ids, first):
            self.seen[i] = False
            self.seen[i, row] = True
        by_length = sorted(range(len(ids)), key=lambda j: len(ids[j]))
        for _, run in itertools.groupby(by_length, key=lambda j: len(ids[j])):
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


def step_rows(
    batch: DecodeBatch, rows: list[Row], tokenizer: AnyTokenizer, top_logprobs: list[int], logprobs: bool = False
) -> list[list[Token]]:
    """One step of every row of the batch: the tokens each row may emit now; a row's finish_reason says it is done."""
    tokens, scores = batch.step(with_logprobs=logprobs or any(top_logprobs))
    return [row.push(token) for row, token in zip(rows, step_tokens(tokenizer, tokens, scores, top_logprobs))]


def decode_rows(
    model: Model,
    tokenizer: AnyTokenizer,
    prompts: list[list[int]],
    rows: list[Row],
    top_logprobs: list[int],
    compiled: "CompiledStep | None" = None,
) -> Iterator[list[list[Token]]]:
    """Decode a fixed set of sequences to their ends: per step, the tokens each sequence emits. A sequence that
    finishes leaves the batch at once; closing the generator ends the loop."""
    live = [i for i, row in enumerate(rows) if not row.finish_reason]  # the sequence in each batch row
    if not live:
        return
    batch = DecodeBatch(model, len(live), compiled)
    batch.add([prompts[i] for i in live], [rows[i].params for i in live])
    while live:
        ready = step_rows(batch, [rows[i] for i in live], tokenizer, [top_logprobs[i] for i in live])
        out: list[list[Token]] = [[] for _ in rows]
        for j, i in enumerate(live):
            out[i] = ready[j]
        for j in reversed(range(len(live))):
            if rows[live[j]].finish_reason:
                batch.remove(j)
                live[j] = live[-1]
                live.pop()
        yield out
