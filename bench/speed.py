"""Training and decoding throughput of a GPT config on this device, beside a no-KV-cache baseline run here too.

python bench/speed.py [--preset small|shakespeare] [--device cpu|cuda] [--new-tokens 500]
Decoding uses the baselines' settings (../shared/notes/baselines.md): top_k 200, temperature 0.8, 500 new tokens.
"""

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gpt.generate import LM  # noqa: E402
from gpt.model import (  # noqa: E402
    GPT,
    GPTConfig,
    pick_device,  # noqa: E402
)
from gpt.tokenizer import CharTokenizer  # noqa: E402
from gpt.train import TrainConfig, make_optimizers  # noqa: E402

CONFIGS = {
    "small": dict(n_layer=4, n_head=4, n_embd=128, block_size=64, train_batch=12),  # nanoGPT's CPU recipe, 0.8M
    "shakespeare": dict(n_layer=6, n_head=6, n_embd=384, block_size=256, train_batch=12),  # 10.65M
}
# Published/measured on the 2-vCPU reference machine (../shared/notes/baselines.md), for side-by-side reading.
REFERENCE = {
    "small": "nanoGPT train 11-14k tok/s; decode b1 275-347 tok/s (nanoGPT), 283-325 (HF, KV cache); "
    "b8 1,100-1,425 (HF)",
    "shakespeare": "nanoGPT train 2.57 s/step at batch 12 (~1.2k tok/s); decode b1 16-21 (nanoGPT), 96-112 (HF); "
    "b8 259-283 (HF)",
}


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def train_tokens_per_s(cfg: GPTConfig, batch: int, device, steps: int) -> float:
    model = GPT(cfg).to(device).train()
    (opt,) = make_optimizers(model, TrainConfig(data="-"), fused=device.type == "cuda").values()
    x = torch.randint(0, cfg.vocab_size, (batch, cfg.block_size), device=device)

    def step():
        _, loss = model(x, x)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(3):
        step()
    return batch * cfg.block_size / median_time(step, steps)


@torch.no_grad()
def no_cache_generate(model: GPT, n: int) -> None:
    """nanoGPT's generate: the whole (cropped) context through the model for every new token."""
    idx = torch.zeros(1, 1, dtype=torch.long, device=next(model.parameters()).device)
    for _ in range(n):
        logits, _ = model(idx[:, -model.config.block_size :])
        logits = logits[:, -1] / 0.8
        v, _ = torch.topk(logits, min(200, logits.size(-1)))
        logits[logits < v[:, [-1]]] = -float("inf")
        idx = torch.cat([idx, torch.multinomial(logits.softmax(-1), 1)], dim=1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=sorted(CONFIGS), default="small")
    p.add_argument("--device", default=None)
    p.add_argument("--new-tokens", type=int, default=500)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    device = pick_device(args.device)
    c = CONFIGS[args.preset]
    cfg = GPTConfig(
        vocab_size=65, block_size=c["block_size"], n_layer=c["n_layer"], n_head=c["n_head"], n_embd=c["n_embd"]
    )
    torch.manual_seed(0)
    tokenizer = CharTokenizer([chr(32 + i) for i in range(64)] + ["\n"])
    lm = LM(GPT(cfg).to(device), tokenizer)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    print(f"device: {device.type} ({name}), torch {torch.__version__}, threads {torch.get_num_threads()}")
    print(f"config: {args.preset}: {cfg.n_layer}L/{cfg.n_head}H/{cfg.n_embd}, block {cfg.block_size}, "
          f"{lm.model.num_params() / 1e6:.2f}M parameters, fp32")  # fmt: skip
    print(f"reference (2-vCPU machine): {REFERENCE[args.preset]}")
    train = train_tokens_per_s(cfg, c["train_batch"], device, steps=10)
    print(f"train      batch {c['train_batch']:>2}: {train:>10,.0f} tok/s")
    n = args.new_tokens
    controls = dict(max_new_tokens=n, temperature=0.8, top_k=200, seed=0)
    for batch in (1, 8):
        prompts = [""] * batch
        t = median_time(lambda: lm.generate_batch(prompts, **controls), args.repeats)  # noqa: B023
        print(f"decode     batch {batch:>2}: {batch * n / t:>10,.0f} tok/s  (KV cache, this project)")
    t = median_time(lambda: no_cache_generate(lm.model, n), args.repeats)
    print(f"decode     batch  1: {n / t:>10,.0f} tok/s  (no KV cache, nanoGPT's loop, same run)")


if __name__ == "__main__":
    main()
