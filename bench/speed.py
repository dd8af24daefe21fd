"""Decoding speed beside Hugging Face transformers, in one process, interleaved; then the shipped flagship.

python bench/speed.py [--new-tokens 500] [--repeats 5] [--train]

Both libraries decode the same shapes with random weights at the baselines' settings (../shared/notes/baselines.md):
500 new tokens after a one-character prompt, top_k 200, temperature 0.8. This project runs with what the app and the
server use by default (decoding compiled), and uncompiled; HF runs `GPT2LMHeadModel.generate` with its KV cache and
a position table long enough for all 500 tokens (this project's 64-token model shifts its context instead). Each
repeat runs every contender once, in turn, so drift on a shared machine hits all alike; medians are printed.
"""

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import gpt  # noqa: E402
from gpt.models.model import GPT, GPTConfig  # noqa: E402
from gpt.models.tokenizer import CharTokenizer  # noqa: E402
from gpt.serving.generate import LM  # noqa: E402
from gpt.training.config import TrainConfig  # noqa: E402
from gpt.training.optim import make_optimizers  # noqa: E402

SHAPES = {
    "0.8M": GPTConfig(vocab_size=65, block_size=64, n_layer=4, n_head=4, n_embd=128),  # nanoGPT's CPU recipe
    "10.65M": GPTConfig(vocab_size=65, block_size=256, n_layer=6, n_head=6, n_embd=384),  # nanoGPT shakespeare_char
}
TARGET = {"0.8M": 3.0, "10.65M": 2.0}  # issue #12: batch-1 speed over HF's
FLAGSHIP = Path(__file__).resolve().parents[1] / "weights" / "shakespeare-char"
CONTROLS = dict(temperature=0.8, top_k=200, seed=0)


def hf_model(cfg: GPTConfig, positions: int):
    from transformers import GPT2Config, GPT2LMHeadModel

    hf = GPT2Config(
        vocab_size=cfg.vocab_size,
        n_positions=positions,
        n_embd=cfg.n_embd,
        n_layer=cfg.n_layer,
        n_head=cfg.n_head,
        activation_function="gelu",
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=0,
    )
    return GPT2LMHeadModel(hf).eval()


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def decode_rates(cfg: GPTConfig, batch: int, n: int, repeats: int) -> dict[str, float]:
    """tok/s of each contender at one shape and batch size (medians over interleaved repeats)."""
    torch.manual_seed(0)
    tok = CharTokenizer([chr(32 + i) for i in range(64)] + ["\n"])
    model = GPT(cfg).eval()
    ours = {"compiled": LM(model, tok, compile=True), "uncompiled": LM(model, tok)}  # the first is the default
    hf = hf_model(cfg, n + 1)
    prompt = torch.full((batch, 1), tok.stoi["\n"])

    def run_hf():
        with torch.no_grad():
            hf.generate(
                prompt,
                attention_mask=torch.ones_like(prompt),
                do_sample=True,
                max_new_tokens=n,
                min_new_tokens=n,
                top_k=200,
                temperature=0.8,
            )

    contenders = {
        f"this project ({p})": lambda lm=lm: lm.generate_batch(["\n"] * batch, max_new_tokens=n, **CONTROLS)
        for p, lm in ours.items()
    }
    contenders["HF transformers"] = run_hf
    for fn in contenders.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, fn in contenders.items():
            times[name].append(timed(fn))
    return {name: batch * n / statistics.median(t) for name, t in times.items()}


def train_tokens_per_s(cfg: GPTConfig, batch: int, steps: int = 10) -> float:
    model = GPT(cfg).train()
    (opt,) = make_optimizers(model, TrainConfig(data="-"), fused=False).values()
    x = torch.randint(0, cfg.vocab_size, (batch, cfg.block_size))

    def step():
        _, loss = model(x, x)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(3):
        step()
    return batch * cfg.block_size / statistics.median(timed(step) for _ in range(steps))


def flagship(n: int, repeats: int) -> None:
    """The shipped default model as the app and the server load it: tok/s at batch 1 and 8."""
    lm = gpt.load(FLAGSHIP, device="cpu", compile=True)
    cfg = lm.model.config
    print(
        f"\nshipped flagship, compiled as the app runs it ({FLAGSHIP.name}: {cfg.n_layer}L/{cfg.n_head}H/"
        f"{cfg.n_embd}, context {cfg.block_size}, {lm.model.num_params() / 1e6:.2f}M)"
    )
    for batch in (1, 8):
        lm.generate_batch(["\n"] * batch, max_new_tokens=50, **CONTROLS)
        t = statistics.median(
            timed(lambda: lm.generate_batch(["\n"] * batch, max_new_tokens=n, **CONTROLS))  # noqa: B023
            for _ in range(repeats)
        )
        print(f"  batch {batch}: {batch * n / t:>7,.0f} tok/s")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--new-tokens", type=int, default=500)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--train", action="store_true", help="also training tok/s at batch 12 (nanoGPT's CPU batch)")
    args = p.parse_args()
    cpu = platform.processor() or platform.machine()
    print(f"device: cpu ({cpu}), torch {torch.__version__}, threads {torch.get_num_threads()}")
    print(f"decoding {args.new_tokens} tokens, top_k 200, temperature 0.8, median of {args.repeats} interleaved runs")
    for name, cfg in SHAPES.items():
        print(f"\n{name}: {cfg.n_layer}L/{cfg.n_head}H/{cfg.n_embd}, context {cfg.block_size}")
        for batch in (1, 8):
            rates = decode_rates(cfg, batch, args.new_tokens, args.repeats)
            hf = rates["HF transformers"]
            for who, r in rates.items():
                print(f"  batch {batch}  {who:<26} {r:>7,.0f} tok/s  {r / hf:5.2f}x HF")
            if batch == 1:
                ratio = rates["this project (compiled)"] / hf
                verdict = "met" if ratio >= TARGET[name] else "NOT met"
                print(f"  target at batch 1: {TARGET[name]:.0f}x HF with the defaults: {verdict}")
        if args.train:
            print(f"  training, batch 12: {train_tokens_per_s(cfg, 12):,.0f} tok/s")
    flagship(args.new_tokens, args.repeats)


if __name__ == "__main__":
    main()
