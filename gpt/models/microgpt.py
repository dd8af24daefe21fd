"""microgpt: a GPT trained by the scalar engine of gpt/models/micrograd.py, in pure Python (no torch in its training
loop).

After Karpathy's microgpt (1 layer, 16 wide, 4 heads, context 16, an output head of its own, Adam, one name a
step), with one difference: the block is this project's (gpt/models/model.py, GPT-2's: layer norm with a gain,
exact GELU, fused query/key/value weights), where microgpt has RMSNorm and ReLU. So the trained weights are an
ordinary model folder (tie_word_embeddings false): the torch GPT loads it and gives the same loss, and every later
rung of the ladder is the same model made fast. A forward pass reads one token at a time with the keys and values of
the tokens before it, as microgpt does: causal attention without a mask.

python -m gpt.microgpt --data names.txt --out weights/names-microgpt trains one (about a minute of steps per 250).
"""

import argparse
import math
import random
import sys
import time
from pathlib import Path

from gpt.models.micrograd import Value
from gpt.models.model import GPT, GPTConfig
from gpt.models.tokenizer import CharTokenizer

Params = dict[str, list]  # name -> a vector (list of Values) or a matrix (list of rows), in the torch GPT's layout


def init_params(config: GPTConfig, rng: random.Random, std: float = 0.08) -> Params:
    """microgpt's initialisation (every matrix normal with std 0.08), layer-norm gains at 1."""
    C, V, T = config.n_embd, config.vocab_size, config.block_size

    def matrix(rows: int, cols: int) -> list[list[Value]]:
        return [[Value(rng.gauss(0, std)) for _ in range(cols)] for _ in range(rows)]

    params: Params = {"transformer.wte.weight": matrix(V, C), "transformer.wpe.weight": matrix(T, C)}
    for i in range(config.n_layer):
        h = f"transformer.h.{i}."
        params[h + "ln_1.weight"] = [Value(1.0) for _ in range(C)]
        params[h + "attn.c_attn.weight"] = matrix(3 * C, C)
        params[h + "attn.c_proj.weight"] = matrix(C, C)
        params[h + "ln_2.weight"] = [Value(1.0) for _ in range(C)]
        params[h + "mlp.c_fc.weight"] = matrix(4 * C, C)
        params[h + "mlp.c_proj.weight"] = matrix(C, 4 * C)
    params["transformer.ln_f.weight"] = [Value(1.0) for _ in range(C)]
    if not config.tie_embeddings:
        params["lm_head.weight"] = matrix(V, C)
    return params


def flat(params: Params) -> list[Value]:
    """Every parameter once (a tied head is the token embedding)."""
    out = []
    for tensor in params.values():
        out += [v for row in tensor for v in row] if isinstance(tensor[0], list) else tensor
    return out


def linear(x: list[Value], w: list[list[Value]]) -> list[Value]:
    return [Value.dot(row, x) for row in w]


def layer_norm(x: list[Value], gain: list[Value], eps: float = 1e-5) -> list[Value]:
    mean = sum(x, Value(0.0)) / len(x)
    centred = [xi - mean for xi in x]
    var = sum((c * c for c in centred), Value(0.0)) / len(x)
    scale = (var + eps) ** -0.5
    return [c * scale * g for c, g in zip(centred, gain)]


def softmax(logits: list[Value]) -> list[Value]:
    top = max(v.data for v in logits)  # a constant shift: the same probabilities, no overflow
    exps = [(v - top).exp() for v in logits]
    total = sum(exps, Value(0.0))
    return [e / total for e in exps]


def step(params: Params, config: GPTConfig, token: int, pos: int, keys: list, values: list) -> list[Value]:
    """The logits after one more token at position pos; keys and values (one list per layer) grow by its own."""
    C, H = config.n_embd, config.n_head
    D = C // H
    wte, wpe = params["transformer.wte.weight"], params["transformer.wpe.weight"]
    x = [t + p for t, p in zip(wte[token], wpe[pos])]
    for i in range(config.n_layer):
        h = f"transformer.h.{i}."
        qkv = linear(layer_norm(x, params[h + "ln_1.weight"]), params[h + "attn.c_attn.weight"])
        q, k, v = qkv[:C], qkv[C : 2 * C], qkv[2 * C :]
        keys[i].append(k)
        values[i].append(v)
        y = []
        for head in range(H):
            s = slice(head * D, (head + 1) * D)
            scores = [Value.dot(q[s], kt[s]) / math.sqrt(D) for kt in keys[i]]
            weights = softmax(scores)
            y += [Value.dot(weights, [vt[s][j] for vt in values[i]]) for j in range(D)]
        x = [a + b for a, b in zip(x, linear(y, params[h + "attn.c_proj.weight"]))]
        hidden = [u.gelu() for u in linear(layer_norm(x, params[h + "ln_2.weight"]), params[h + "mlp.c_fc.weight"])]
        x = [a + b for a, b in zip(x, linear(hidden, params[h + "mlp.c_proj.weight"]))]
    return linear(layer_norm(x, params["transformer.ln_f.weight"]), params.get("lm_head.weight", wte))


def document_loss(params: Params, config: GPTConfig, tokens: list[int]) -> Value:
    """Mean cross-entropy of each next token of boundary + item + boundary (the first block_size of them)."""
    keys, values = [[] for _ in range(config.n_layer)], [[] for _ in range(config.n_layer)]
    n = min(config.block_size, len(tokens) - 1)
    losses = []
    for pos in range(n):
        probs = softmax(step(params, config, tokens[pos], pos, keys, values))
        losses.append(-probs[tokens[pos + 1]].log())
    return sum(losses, Value(0.0)) / n


class Adam:
    """microgpt's optimiser: Adam (beta1 0.85, beta2 0.99) with the rate decayed linearly to 0 over the run."""

    def __init__(self, params: list[Value], lr: float, steps: int, betas=(0.85, 0.99), eps: float = 1e-8):
        self.params, self.lr, self.steps, self.betas, self.eps = params, lr, steps, betas, eps
        self.m, self.v, self.t = [0.0] * len(params), [0.0] * len(params), 0

    def step(self) -> None:
        b1, b2 = self.betas
        lr = self.lr * (1 - self.t / self.steps)
        self.t += 1
        for i, p in enumerate(self.params):
            self.m[i] = b1 * self.m[i] + (1 - b1) * p.grad
            self.v[i] = b2 * self.v[i] + (1 - b2) * p.grad**2
            m_hat, v_hat = self.m[i] / (1 - b1**self.t), self.v[i] / (1 - b2**self.t)
            p.data -= lr * m_hat / (math.sqrt(v_hat) + self.eps)
            p.grad = 0.0


def to_torch(params: Params, config: GPTConfig) -> GPT:
    """The torch GPT with these weights."""
    import torch

    model = GPT(config)
    state = {
        name: torch.tensor([[v.data for v in row] for row in t] if isinstance(t[0], list) else [v.data for v in t])
        for name, t in params.items()
    }
    state.setdefault("lm_head.weight", state["transformer.wte.weight"])
    model.load_state_dict(state, strict=True)
    return model.eval()


def from_torch(model: GPT) -> Params:
    """A torch GPT's weights as Values (inverse of to_torch): a saved folder scored again by the scalar engine."""
    params: Params = {}
    for name, t in model.state_dict().items():
        if name != "lm_head.weight" or not model.config.tie_embeddings:
            rows = t.tolist()
            params[name] = [[Value(x) for x in row] for row in rows] if t.dim() == 2 else [Value(x) for x in rows]
    return params


def train(
    docs: list[str], tokenizer: CharTokenizer, config: GPTConfig, steps: int, lr: float = 0.01, seed: int = 42
) -> tuple[Params, list[float]]:
    """One item a step, items shuffled once and taken in turn (as microgpt); the loss of each step."""
    from tqdm import tqdm

    rng = random.Random(seed)
    params = init_params(config, rng)
    order = list(docs)
    rng.shuffle(order)
    optimizer = Adam(flat(params), lr, steps)
    boundary, losses, tokens_seen, began = tokenizer.boundary_id, [], 0, time.monotonic()
    bar = tqdm(range(steps), desc=f"microgpt, {len(optimizer.params):,} parameters", unit="step")
    for i in bar:
        tokens = [boundary] + tokenizer.encode(order[i % len(order)]) + [boundary]
        loss = document_loss(params, config, tokens)
        tokens_seen += min(config.block_size, len(tokens) - 1)
        loss.backward()
        optimizer.step()
        losses.append(loss.data)
        recent = losses[-100:]
        rate = tokens_seen / (time.monotonic() - began)
        bar.set_postfix(loss=f"{sum(recent) / len(recent):.3f}", tok_s=f"{rate:.0f}")
    return params, losses


def main(argv: list[str] | None = None) -> None:
    from gpt.serving.generate import load
    from gpt.storage.folder import read_metrics, save_folder, write_metrics
    from gpt.training.data import DataError, read_text, split_documents
    from gpt.training.eval import record_validation_loss

    p = argparse.ArgumentParser(prog="python -m gpt.microgpt", description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, help="a text file of items, one a line (names.txt)")
    p.add_argument("--out", required=True, help="the model folder to write")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--seed", type=int, default=42)
    args = p.parse_args(argv)
    if args.steps < 1 or not args.lr > 0:
        sys.exit("error: --steps must be at least 1 and --lr above 0")
    try:
        text = read_text(args.data)
    except DataError as e:
        sys.exit(f"error: {e}")
    train_docs, val_docs = split_documents(text)
    if not train_docs or not val_docs:
        sys.exit(f"error: {args.data}: needs at least 10 non-empty lines (line i validates when i % 10 == 9)")
    tokenizer = CharTokenizer.from_text(text, documents=True)
    config = GPTConfig(tokenizer.vocab_size, block_size=16, n_layer=1, n_head=4, n_embd=16, tie_embeddings=False)
    began = time.monotonic()
    params, losses = train(train_docs, tokenizer, config, args.steps, args.lr, args.seed)
    seconds = time.monotonic() - began
    last = losses[-100:]
    run = {
        "name": Path(args.out).name,
        "trainer": "microgpt",
        "data": str(args.data),
        "command": " ".join(["python -m gpt.microgpt", *(argv if argv is not None else sys.argv[1:])]),
        "device_name": "pure Python: the scalar engine of gpt/models/micrograd.py, one core",
        "parameters": config.num_params(),
        "settings": {
            "n_layer": 1,
            "n_head": 4,
            "n_embd": 16,
            "block_size": 16,
            "batch_size": 1,
            "max_steps": args.steps,
            "lr": args.lr,
            "schedule": "linear decay to 0",
            "optimizer": "adam (0.85, 0.99)",
        },
        "last_100_train_loss": round(sum(last) / len(last), 4),
        "wall_time_s": round(seconds, 1),
    }
    out = Path(args.out)
    model = to_torch(params, config)
    save_folder(model, tokenizer, out, metrics={"run": run})
    lm = load(out, device="cpu")
    call = 'generate("", max_new_tokens=20, temperature=1.0, seed=s) for s in 0..9'
    samples = "\n".join(lm.generate("", max_new_tokens=20, temperature=1.0, seed=s) for s in range(10))
    write_metrics(out, {**read_metrics(out), "samples": {"call": call, "text": samples}})
    val = record_validation_loss(out, args.data)
    print(
        f"{out}: {seconds / 60:.1f} min; mean train loss of the last {len(last)} steps {run['last_100_train_loss']}; "
        f"validation loss {val:.4f}"
    )


if __name__ == "__main__":
    main()
