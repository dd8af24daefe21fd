"""The decode step as an AOTInductor package beside torch.compile's (the route to compiled graphs kept between runs
without pickle: a package is a shared library and its constants, loaded by torch's C++ loader).

python bench/aot_step.py [--model weights/shakespeare-char]

Exports GPT.decode_step twice, as CompiledStep compiles it (gpt/serving/decode.py): one row over the whole context
(static shapes) and several rows (batch and length dynamic, frozen weights, inductor's C++ GEMM); packages each with
torch._inductor.aoti_compile_and_package, loads it back and prints the compile and load times, the largest
difference from the eager step's outputs, and the step times of eager, the package and CompiledStep side by side.
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


class Step(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, idx, k, v, pos):
        return self.model.decode_step(idx, k, v, pos)


def inputs(config, rows: int, length: int):
    """A cache of random keys and values, its first row at the last position of `length`, the others at half."""
    from gpt.models.model import KVCache

    cache = KVCache.empty(config, rows)
    cache.k.normal_()
    cache.v.normal_()
    cache.pos = torch.full((rows,), length // 2, dtype=torch.long)
    cache.pos[0] = length - 1
    idx = torch.randint(config.vocab_size, (rows,))
    return (idx, cache.k[..., :length, :], cache.v[..., :length, :], cache.pos), cache


def ms_per_call(f, args, n: int) -> float:
    for _ in range(5):
        f(*args)
    start = time.perf_counter()
    for _ in range(n):
        f(*args)
    return (time.perf_counter() - start) / n * 1e3


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=str(ROOT / "weights" / "shakespeare-char"))
    p.add_argument("--rows", type=int, default=16)
    args = p.parse_args()
    sys.path.insert(0, str(ROOT))
    import gpt
    from gpt.serving.decode import CompiledStep

    model = gpt.load(args.model, device="cpu").model.eval()
    config, step = model.config, Step(model)
    options = {"realize_opcount_threshold": 8}
    rows_options = options | {"max_autotune": True, "max_autotune_gemm_backends": "CPP", "freezing": True}
    batch, length = torch.export.Dim("batch", min=2, max=64), torch.export.Dim("length", min=16, max=config.block_size)
    dynamic = {"idx": {0: batch}, "k": {0: batch, 3: length}, "v": {0: batch, 3: length}, "pos": {0: batch}}
    cases = [("one row", 1, config.block_size, None, options), ("rows", args.rows, 128, dynamic, rows_options)]
    jit = CompiledStep(model)
    print(
        f"{args.model}: {config.n_layer}L/{config.n_head}H/{config.n_embd}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"
    )
    with torch.no_grad(), tempfile.TemporaryDirectory() as tmp:
        for name, rows, length, shapes, inductor in cases:
            example, cache = inputs(config, rows, length)
            start = time.perf_counter()
            exported = torch.export.export(step, example, dynamic_shapes=shapes)
            path = torch._inductor.aoti_compile_and_package(
                exported, package_path=f"{tmp}/{rows}.pt2", inductor_configs=inductor
            )
            compiled_s = time.perf_counter() - start
            start = time.perf_counter()
            package = torch._inductor.aoti_load_package(path)
            loaded_s = time.perf_counter() - start
            shapes_tried = [(rows, length)] + ([(5, 40), (rows, config.block_size)] if shapes else [])
            diff = 0.0
            for r, n in shapes_tried:
                case, _ = inputs(config, r, n)
                diff = max(diff, *((a - b).abs().max().item() for a, b in zip(step(*case), package(*case))))
            start = time.perf_counter()
            jit(example[0], cache)
            jit_s = time.perf_counter() - start
            n = 200 if rows == 1 else 100
            times = [ms_per_call(f, a, n) for f, a in ((step, example), (package, example), (jit, (example[0], cache)))]
            print(
                f"{name} ({rows} x {length}): package compiled in {compiled_s:.1f} s, loaded in {loaded_s:.2f} s, "
                f"largest difference from eager {diff:.1e} over {len(shapes_tried)} shapes; torch.compile's first "
                f"call {jit_s:.1f} s; ms a step: eager {times[0]:.3f}, package {times[1]:.3f}, torch.compile "
                f"{times[2]:.3f}"
            )


if __name__ == "__main__":
    main()
