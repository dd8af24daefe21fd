"""Sampling: the controls of a generation, the one sampler that picks each row's next token, and stop strings.

Used by every caller (CLI, UI, API) through gpt/serving/decode.py; the controls are checked here and only here.
"""

import codecs
import math
from collections import deque
from dataclasses import dataclass, field, replace

import torch

PENALTY_MIN, PENALTY_MAX = 0.01, 100.0  # past these a logit divided or multiplied by it overflows to inf, then NaN
SEED_MIN, SEED_MAX = -(1 << 63), (1 << 63) - 1  # a 64-bit signed integer, as OpenAI's API documents it


def check_seed(seed) -> None:
    """The one check of a seed, for the library, the app and the API alike."""
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not SEED_MIN <= seed <= SEED_MAX):
        raise ValueError(f"seed must be a whole number from {SEED_MIN} to {SEED_MAX} or None, got {seed!r}")


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
        check(
            "repetition_penalty",
            self.repetition_penalty,
            lambda v: PENALTY_MIN <= v <= PENALTY_MAX,
            f"a number from {PENALTY_MIN} to {PENALTY_MAX} (1 means off)",
        )
        stop = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)
        if any(not isinstance(s, str) or not s for s in stop):
            raise ValueError(f"stop must be non-empty strings, got {self.stop!r}")
        check_seed(self.seed)
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

    def penalised(self, logits: torch.Tensor, seen: torch.Tensor | None) -> torch.Tensor:
        """CTRL's repetition penalty: the logits of tokens already in the row shrink (`seen` (B, V) marks them)."""
        logits = logits.float()
        if self.use_penalty and seen is not None:
            penalised = torch.where(logits > 0, logits / self.penalty, logits * self.penalty)
            logits = torch.where(seen, penalised, logits)
        return logits

    def drawn_from(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The distribution sampling draws from: after temperature, top-k, then top-p (nucleus), in sorted order with
        that order when a filter is on (the most likely token always survives)."""
        logits, order = logits / self.temperature, None
        if self.filtered:
            logits, order = logits.sort(dim=-1, descending=True)
            rank = torch.arange(logits.size(-1), device=logits.device)
            logits = logits.masked_fill(rank >= self.top_k, float("-inf"))
            probs = logits.softmax(dim=-1)
            logits = logits.masked_fill(probs.cumsum(dim=-1) - probs >= self.top_p, float("-inf"))
        return logits.softmax(dim=-1), order

    def probabilities(self, logits: torch.Tensor, seen: torch.Tensor | None) -> torch.Tensor:
        """(B, V) in vocabulary order: what each row's next token is drawn from (a greedy row's is all on its pick),
        for the Playground to show beside the model's own distribution."""
        logits = self.penalised(logits, seen)
        probs, order = self.drawn_from(logits)
        if order is not None:
            probs = torch.zeros_like(probs).scatter(1, order, probs)
        greedy = torch.nn.functional.one_hot(logits.argmax(dim=-1), logits.size(-1)).to(probs.dtype)
        return torch.where(self.greedy[:, None], greedy, probs)

    def __call__(self, logits: torch.Tensor, seen: torch.Tensor | None) -> torch.Tensor:
        """logits (B, V) -> tokens (B,). `seen` (B, V) marks tokens already in each row, for the repetition penalty."""
        logits = self.penalised(logits, seen)
        greedy = logits.argmax(dim=-1)
        if self.all_greedy:
            return greedy
        probs, order = self.drawn_from(logits)
        u = torch.stack([torch.rand((), generator=g) for g in self.generators]).to(probs.device)
        choice = torch.searchsorted(probs.cumsum(dim=-1), u[:, None]).clamp(max=probs.size(-1) - 1)[:, 0]
        if order is not None:
            choice = order.gather(1, choice[:, None])[:, 0]
        return torch.where(self.greedy, greedy, choice)


@dataclass
class Token:
    """One generated token; logprob and top alternatives come from the model's own (temperature 1) distribution."""

    id: int
    text: str
    logprob: float | None = None
    top: list[tuple[str, float]] = field(default_factory=list)
    bytes: bytes = b""  # the token's own bytes; its text (set by Row) holds whole characters only

    @property
    def piece(self) -> str:
        """The token's own text, for log-probabilities: its bytes as UTF-8, a byte that is not part of a whole
        character written as \\xNN (never U+FFFD, never empty where the shown text waits for the rest)."""
        return piece_of(self.bytes) if self.bytes else self.text


def piece_of(raw: bytes) -> str:
    return raw.decode("utf-8", errors="backslashreplace")


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


class Row:
    """One sequence's output: turns sampled tokens into emitted ones and decides when, and why, it is finished."""

    def __init__(self, params: SamplingParams, boundary_id: int | None):
        self.params = params
        self.stops, self.boundary_id = StopStrings(params.stop), boundary_id
        self.generated = 0
        self.finish_reason: str | None = "length" if params.max_new_tokens == 0 else None
        self.utf8 = codecs.getincrementaldecoder("utf-8")(errors="ignore")  # bytes no character can use: dropped

    def push(self, token: Token) -> list[Token]:
        self.generated += 1
        if token.id == self.boundary_id:  # a document model ended its item
            self.finish_reason = "stop"
            return self.stops.flush()
        if token.bytes:  # a character split across tokens is shown by the token that completes it
            token.text = self.utf8.decode(token.bytes)
        ready, stopped = self.stops.feed(token)
        if stopped:
            self.finish_reason = "stop"
        elif self.generated >= self.params.max_new_tokens:
            self.finish_reason = "length"
            ready += self.stops.flush()
        return ready
