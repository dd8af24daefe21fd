"""The GPT model: a config dataclass, a decoder-only transformer and its KV cache, top to bottom in one file."""

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.nn import functional as F


def pick_device(device: str | None = None) -> torch.device:
    """cuda, then mps, then cpu, unless one is named."""
    if device and device != "auto":
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


MLPS = ("gelu", "swiglu", "relu2")


@dataclass
class GPTConfig:
    vocab_size: int = 65
    block_size: int = 256
    n_layer: int = 6
    n_head: int = 6
    n_embd: int = 384
    dropout: float = 0.0
    bias: bool = False  # biases in Linear and LayerNorm layers; False is a bit better and faster
    # the head is the token embedding (GPT-2); microgpt's head is its own (gpt/models/microgpt.py)
    tie_embeddings: bool = True
    # The modern block's switches, each on its own (an ablation) or together: rotary positions, RMS norm and a SwiGLU
    # MLP are Llama's block, and with QK-norm Qwen3's (gpt/storage/layout.py writes such a folder for transformers).
    rotary: bool = False  # positions as rotations of the queries and keys, not a learnt embedding added to the input
    rms_norm: bool = False  # RMSNorm (a learnt gain, no mean, no bias) in place of LayerNorm
    qk_norm: bool = False  # each head's queries and keys RMS-normed before attention: logits that cannot blow up
    mlp: str = "gelu"  # gelu (GPT-2's), swiglu (gated: Llama's) or relu2 (squared ReLU: modded-nanogpt's)

    @property
    def head_size(self) -> int:
        return self.n_embd // self.n_head

    @property
    def mlp_hidden(self) -> int:
        """The MLP's hidden width: 4 n_embd, or for the gated MLP (three matrices, not two) 8/3 of it in steps of 64,
        so that either has about the same parameters."""
        return 64 * math.ceil(8 * self.n_embd / 3 / 64) if self.mlp == "swiglu" else 4 * self.n_embd

    def num_params(self) -> int:
        """Parameters of a GPT with this config, without building it (a tied head counted once)."""
        c, h, b = self.n_embd, self.mlp_hidden, 1 if self.bias else 0
        norm = c if self.rms_norm else c + b * c
        matrices = 3 if self.mlp == "swiglu" else 2
        mlp = matrices * c * h + b * ((matrices - 1) * h + c)
        attention = 4 * c * c + b * 4 * c + (2 * self.head_size if self.qk_norm else 0)
        block = attention + mlp + 2 * norm
        head = 0 if self.tie_embeddings else self.vocab_size * c
        positions = 0 if self.rotary else self.block_size * c
        return self.vocab_size * c + head + positions + self.n_layer * block + norm


class KVCache:
    """Keys and values of every layer for a batch of sequences, each at its own position.

    Rows are independent: each has its own length (`pos`), so sequences of different lengths decode together.
    `rows(start, stop)` is a view of some rows, so a single sequence can be (re)filled without touching the others.
    The lengths live on the CPU whatever the device: a step plans its slices from them without waiting on the device.
    Rows come first, so the first n rows are one contiguous block, laid out alike whatever the capacity: a compiled
    step (GPT.decode_step) sees the same strides from every cache. One spare position past block_size is never
    used: a step's view of the positions in use is then never the whole cache, so its strides never change either.
    """

    def __init__(self, k: torch.Tensor, v: torch.Tensor, pos: torch.Tensor):
        self.k, self.v, self.pos = k, v, pos  # k, v: (B, n_layer, n_head, block_size + 1, head_size); pos: (B,)

    @classmethod
    def empty(
        cls, config: GPTConfig, batch_size: int, device=None, dtype=torch.float32, length: int | None = None
    ) -> "KVCache":
        """Room for `length` positions a row (block_size + 1 unless told: a fill of a few rows needs only its own)."""
        length = config.block_size + 1 if length is None else length
        shape = (batch_size, config.n_layer, config.n_head, length, config.n_embd // config.n_head)
        k = torch.zeros(shape, device=device, dtype=dtype)
        return cls(k, torch.zeros_like(k), torch.zeros(batch_size, dtype=torch.long))

    slides = False  # a full cache must be shifted by its user (gpt/serving/decode.py)

    def rows(self, start: int, stop: int) -> "KVCache":
        return KVCache(self.k[start:stop], self.v[start:stop], self.pos[start:stop])

    def reset(self) -> None:
        self.pos.zero_()

    def append(self, k_new: torch.Tensor, v_new: torch.Tensor) -> None:
        """One new token's keys and values per row, (B, n_layer, n_head, head_size), written at each row's length."""
        first, last = int(self.pos.min()), int(self.pos.max())
        if first == last:  # every row at the same place: one slice, no index tensor
            self.k[:, :, :, first], self.v[:, :, :, first] = k_new, v_new
        else:
            rows, at = torch.arange(len(self.pos), device=self.k.device), self.pos.to(self.k.device)
            self.k[rows, :, :, at], self.v[rows, :, :, at] = k_new, v_new
        self.pos += 1

    def take(self, rows: list[int], filled: "KVCache", which: list[int]) -> None:
        """Row rows[i] becomes filled's row which[i]: its keys, values and length (rows filled together, a prompt
        filled once for all the rows that start with it)."""
        at, n = torch.tensor(rows, device=self.k.device), filled.k.size(3)
        source = torch.tensor(which, device=self.k.device)
        self.k[at, :, :, :n], self.v[at, :, :, :n] = filled.k[source], filled.v[source]
        self.pos[rows] = filled.pos[which]

    def move(self, src: int, dst: int) -> None:
        """Row src's keys, values and length into row dst."""
        for t in (self.k, self.v):
            t[dst] = t[src]
        self.pos[dst] = self.pos[src]


@dataclass
class CachePlan:
    """Where a step's keys and values go in the cache, and how much of it the step attends over."""

    where: slice | tuple[torch.Tensor, torch.Tensor]  # one slice for all rows, or (rows, positions) index tensors
    positions: torch.Tensor | None  # (B, T) positions when rows differ; None when `where` is a slice
    length: int  # cache positions in use after the step: attention reads only these


def cache_plan(pos: torch.Tensor, T: int, device) -> tuple[CachePlan, torch.Tensor | None]:
    """Plan a cached step from the rows' lengths (a CPU tensor) and its attention mask.

    When every row is at the same place (one sequence, or a batch decoding in step) the step writes one slice and a
    single new token needs no mask: no index tensor or mask is built. Rows at different places get both.
    """
    first, last = int(pos.min()), int(pos.max())
    length = last + T
    if first == last:
        mask = None
        if T > 1:  # a prefill after cached tokens: causal within the new tokens, all cached ones visible
            mask = torch.ones(T, length, dtype=torch.bool, device=device).tril(diagonal=first)
        return CachePlan(slice(first, length), None, length), mask
    positions = (pos[:, None] + torch.arange(T)).to(device)
    rows = torch.arange(len(pos), device=device)[:, None]
    mask = (torch.arange(length, device=device) <= positions[..., None])[:, None]  # (B, 1, T, length)
    return CachePlan((rows, positions), positions, length), mask


ROPE_THETA = 10000.0  # the rotations' base wavelength (Llama's; transformers' default)
RMS_EPS = 1e-6  # RMSNorm's epsilon (Qwen3's and transformers' default)


def rotary_tables(config: GPTConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of each position's rotation angles, (block_size, head_size): transformers' own layout, the angles
    repeated over the two halves of a head, so a folder needs no reordering of the query and key weights."""
    d = config.head_size
    inv_freq = 1.0 / (ROPE_THETA ** (torch.arange(0, d, 2, dtype=torch.int64).float() / d))
    angles = torch.arange(config.block_size).float()[:, None] * inv_freq
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos(), angles.sin()


def rotated(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x (..., head_size) rotated by its position's angles: each half's pair (x1, x2) becomes a 2-D rotation of it."""
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat([-x2, x1], dim=-1) * sin


def norm(config: GPTConfig, size: int) -> nn.Module:
    return nn.RMSNorm(size, eps=RMS_EPS) if config.rms_norm else nn.LayerNorm(size, bias=config.bias)


# Dropout and GELU are functions, not modules: decoding one token, a module call costs more than the op itself.


def linear(layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """layer(x). One row under torch.compile (a decode step of one sequence) is a multiply-and-sum, which the compiler
    turns into one loop that streams the weight at memory speed, faster than the BLAS's one-row product."""
    if x.numel() != x.size(-1) or not torch.compiler.is_compiling():
        return layer(x)
    y = (x.unsqueeze(-2) * layer.weight).sum(-1)
    return y if layer.bias is None else y + layer.bias


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        assert config.n_embd % config.n_head == 0, "n_embd must be divisible by n_head"
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.n_head, self.dropout = config.n_head, config.dropout
        if config.qk_norm:
            self.q_norm = nn.RMSNorm(config.head_size, eps=RMS_EPS)
            self.k_norm = nn.RMSNorm(config.head_size, eps=RMS_EPS)

    def positioned(self, q: torch.Tensor, k: torch.Tensor, rope) -> tuple[torch.Tensor, torch.Tensor]:
        """Queries and keys (..., head_size) normed (QK-norm) and rotated to their positions (rope: cos, sin)."""
        if hasattr(self, "q_norm"):
            q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            q, k = rotated(q, *rope), rotated(k, *rope)
        return q, k

    def forward(self, x, k_cache=None, v_cache=None, at=None, mask=None, return_attention=False, rope=None):
        """The attention's output, and the weights (return_attention) or a decode step's new keys and values.

        With a cache and a plan `at`, this step's keys and values are written into the cache and attended over with
        it. With a cache and no plan, a decode step (decode below). rope: the tokens' rotations (cos, sin), each
        (T, head_size) or (B, 1, T, head_size)."""
        if k_cache is not None and at is None:
            return self.decode(x, k_cache, v_cache, mask, rope)
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        q, k = self.positioned(q, k, rope)
        if k_cache is not None:  # write this step's keys/values `at` their places, attend over the cache in use
            if isinstance(at.where, slice):  # every row at the same place
                k_cache[:, :, at.where], v_cache[:, :, at.where] = k, v
            else:
                rows, positions = at.where
                k_cache[rows, :, positions], v_cache[rows, :, positions] = k.transpose(1, 2), v.transpose(1, 2)
            k, v = k_cache[:, :, : at.length], v_cache[:, :, : at.length]
        attention = None
        if return_attention:  # the explicit form, so the weights can be shown
            scores = (q @ k.transpose(-2, -1)) / math.sqrt(k.size(-1))
            allowed = mask if mask is not None else torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
            attention = scores.masked_fill(~allowed, float("-inf")).softmax(dim=-1)
            y = attention @ v
        else:  # no dropout on the attention weights: on a CPU it turns SDPA's fast kernel into a slow one
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None and k_cache is None)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return F.dropout(self.c_proj(y), self.dropout, self.training), attention

    def decode(self, x, k_cache, v_cache, visible, rope=None):
        """GPT.decode_step's attention: x is (B, C), one token per row, which attends over the cache (only read;
        visible (B, 1, S) says which positions each row sees), then itself. Its scores come in two parts, so the cache
        is never copied; returns the output and the token's keys and values (B, n_head, head_size)."""
        B, C = x.size()
        q, k, v = linear(self.c_attn, x).view(B, 3, self.n_head, C // self.n_head).unbind(1)
        q, k = self.positioned(q, k, rope)
        q = q / math.sqrt(q.size(-1))
        cached = (k_cache @ q[..., None])[..., 0].masked_fill(~visible, float("-inf"))  # (B, H, S)
        p = torch.cat([cached, (q * k).sum(-1, keepdim=True)], dim=-1).softmax(dim=-1)
        y = (p[:, :, None, :-1] @ v_cache)[:, :, 0] + p[..., -1:] * v
        return linear(self.c_proj, y.reshape(B, C)), (k, v)


class MLP(nn.Module):
    """GELU (GPT-2), squared ReLU, or SwiGLU: c_fc holds the gate's rows, then the up projection's, in one product."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        hidden, self.kind = config.mlp_hidden, config.mlp
        self.c_fc = nn.Linear(config.n_embd, hidden * (2 if self.kind == "swiglu" else 1), bias=config.bias)
        self.c_proj = nn.Linear(hidden, config.n_embd, bias=config.bias)
        self.dropout = config.dropout

    def forward(self, x):
        h = linear(self.c_fc, x)
        if self.kind == "swiglu":
            gate, up = h.chunk(2, dim=-1)
            h = F.silu(gate) * up
        else:
            h = F.relu(h).square() if self.kind == "relu2" else F.gelu(h)
        return F.dropout(linear(self.c_proj, h), self.dropout, self.training)


class Block(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln_1 = norm(config, config.n_embd)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = norm(config, config.n_embd)
        self.mlp = MLP(config)

    def forward(self, x, k_cache=None, v_cache=None, at=None, mask=None, return_attention=False, rope=None):
        a, attention = self.attn(self.ln_1(x), k_cache, v_cache, at, mask, return_attention, rope)
        x = x + a
        return x + self.mlp(self.ln_2(x)), attention


class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(config.vocab_size, config.n_embd),
                **({} if config.rotary else {"wpe": nn.Embedding(config.block_size, config.n_embd)}),
                h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
                ln_f=norm(config, config.n_embd),
            )
        )
        if config.rotary:  # tables, not weights: made again from the config, never saved
            cos, sin = rotary_tables(config)
            self.register_buffer("rope_cos", cos, persistent=False)
            self.register_buffer("rope_sin", sin, persistent=False)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.transformer.wte.weight = self.lm_head.weight
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # GPT-2: residual projections scaled down by depth
            if name.endswith("c_proj.weight"):
                torch.nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    def _init_weights(self, module):
        if isinstance(module, nn.Linear):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self) -> int:
        """Parameters counted once (a tied head shares the token embedding); position embeddings included."""
        return self.config.num_params()

    def empty_cache(self, batch_size: int, device=None, dtype=torch.float32, length: int | None = None) -> KVCache:
        return KVCache.empty(self.config, batch_size, device, dtype, length)

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        cache: KVCache | None = None,
        packed: tuple[torch.Tensor, torch.Tensor] | None = None,
    ):
        """Logits (B, T, vocab) and, with targets, the mean cross-entropy (targets of -1 are ignored).

        With a cache, idx continues each row from its cached position; the cache is filled and advanced.
        With packed = (positions (B, T), sees (B, T, T)), each row holds several sequences that share a start: each
        token's position, and which tokens it attends to (gpt/posttraining/rl.py packs a prompt with all its replies).
        """
        logits = self.lm_head(self.hidden(idx, cache, packed))
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-1)
        return logits, loss

    def hidden(
        self, idx: torch.Tensor, cache: KVCache | None = None, packed: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> torch.Tensor:
        """The last layer norm's output (B, T, n_embd): what the head reads (a reward model's score reads it too)."""
        B, T = idx.size()
        at, mask = None, None
        if packed is not None:
            positions, sees = packed
            if int(positions.max()) >= self.config.block_size:
                raise ValueError(f"a packed sequence is longer than the context ({self.config.block_size})")
            mask = sees[:, None]
        elif cache is None:
            if T > self.config.block_size:
                raise ValueError(f"sequence of length {T} is longer than the context ({self.config.block_size})")
            positions = slice(0, T)
        else:
            at, mask = cache_plan(cache.pos, T, idx.device)
            positions = at.positions if at.positions is not None else at.where
        x, rope = self.embedded(idx, positions)
        x = F.dropout(x, self.config.dropout, self.training)
        for i, block in enumerate(self.transformer.h):
            kv = (cache.k[:, i], cache.v[:, i]) if cache is not None else (None, None)
            x, _ = block(x, *kv, at, mask, rope=rope)
        if cache is not None:
            cache.pos += T
        return self.transformer.ln_f(x)

    def embedded(self, idx: torch.Tensor, positions: slice | torch.Tensor):
        """The tokens' embeddings and their positions (a slice, or a tensor (B,) or (B, T)): GPT-2's learnt position
        embedding added, or with rotary positions the rotations (cos, sin) that the attention applies."""
        x = self.transformer.wte(idx)
        if not self.config.rotary:
            return x + self.transformer.wpe.weight[positions], None
        cos, sin = self.rope_cos[positions], self.rope_sin[positions]
        if isinstance(positions, torch.Tensor):  # each row its own positions: room for the heads after the rows
            cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
        return x, (cos, sin)

    def decode_step(self, idx: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pos: torch.Tensor):
        """One new token per row after its cached ones: logits (B, vocab) and the token's keys and values
        (B, n_layer, n_head, head_size), which the caller appends to the cache.

        idx and pos are (B,); k and v are a cache's (B, n_layer, n_head, S, head_size), of which each row attends to
        its first pos positions. The blocks are training's own; the cache is only read and every shape is the same
        at every position, so torch.compile makes one graph of the whole step (gpt/serving/decode.py): no copies,
        index tensors or Python per op.
        """
        visible = (torch.arange(k.size(3), device=idx.device) < pos[:, None])[:, None]  # (B, 1, S)
        x, rope = self.embedded(idx, pos)  # (B, C): one token a row
        k_new, v_new = [], []
        for i, block in enumerate(self.transformer.h):
            x, (kt, vt) = block(x, k[:, i], v[:, i], mask=visible, rope=rope)
            k_new.append(kt)
            v_new.append(vt)
        logits = linear(self.lm_head, self.transformer.ln_f(x))
        return logits, torch.stack(k_new, 1), torch.stack(v_new, 1)

    @torch.no_grad()
    def attention_maps(self, idx: torch.Tensor) -> torch.Tensor:
        """Attention weights of every layer and head for one sequence: (n_layer, n_head, T, T)."""
        x, rope = self.embedded(idx, slice(0, idx.size(1)))
        maps = []
        for block in self.transformer.h:
            x, attention = block(x, return_attention=True, rope=rope)
            maps.append(attention[0])
        return torch.stack(maps)

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        raise NotImplementedError(
            "a model folder holds a tokenizer too: load it with gpt.load(path_or_repo_id), whose .model is the GPT"
        )
