"""Train a model on a text file: python -m gpt.train --data FILE --out DIR [--preset NAME] [--arch ARCH] [flags].

The best-validation model is saved atomically to --out as a model folder. Resume state (latest weights, optimizer,
step, data-sampler and RNG state) goes to --out/checkpoint/ as safetensors + JSON, so --resume continues exactly
where an interrupted run stopped. Ctrl-C saves that state at the end of the current step and exits.
Multi-GPU / multi-node: torchrun --nproc-per-node N -m gpt.train ... (DistributedDataParallel; rank 0 writes).
"""

import argparse
import math
import os
import shlex
import signal
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict, replace
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm import tqdm

from gpt.checkpoint import load_checkpoint, read_checkpoint_meta, save_checkpoint, tidy_checkpoint
from gpt.config import ARCHITECTURE, DTYPES, PRESETS, TrainConfig, build_parser
from gpt.data import DataError, load_dataset, read_text
from gpt.eval import validation_loss
from gpt.folder import (
    ModelFileError,
    build_model,
    read_metrics,
    save_folder,
    write_card,
    write_loss_plot,
    write_metrics,
)
from gpt.generate import LM, load
from gpt.model import pick_device
from gpt.tokenizer import CharTokenizer, UnknownCharactersError
from gpt.window import Model


def resolve_settings(args: argparse.Namespace) -> TrainConfig:
    """Defaults <- preset <- explicit flags; on --resume the saved run's settings stand in for the defaults."""
    explicit = {k: v for k, v in vars(args).items() if v is not None and k not in ("out", "resume", "preset")}
    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise ValueError(f"--out {args.out} is a file: give a folder for the model")
    if args.resume:
        saved = read_checkpoint_meta(Path(args.out))["settings"]
        for k in ARCHITECTURE:
            if k in explicit and explicit[k] != saved[k]:
                raise ValueError(
                    f"--{k.replace('_', '-')} {explicit[k]} differs from the run being resumed ({saved[k]})"
                )
        return TrainConfig(**{**saved, **explicit})
    return TrainConfig(**{**PRESETS.get(args.preset, {}), **explicit, "preset": args.preset})


def learning_rate(step: int, c: TrainConfig) -> float:
    """Linear warmup, then cosine decay (or stable, then linear decay) to min_lr at lr_decay_steps, then flat."""
    decay_steps = c.lr_decay_steps or c.max_steps
    if step < c.warmup_steps:
        return c.lr * (step + 1) / (c.warmup_steps + 1)
    if step >= decay_steps:
        return c.min_lr
    if c.schedule == "wsd":
        decay_start = decay_steps - max(1, round(c.decay_fraction * decay_steps))
        return c.lr - (c.lr - c.min_lr) * max(0, step - decay_start) / (decay_steps - decay_start)
    ratio = (step - c.warmup_steps) / max(1, decay_steps - c.warmup_steps)
    return c.min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (c.lr - c.min_lr)


def make_optimizers(model: Model, c: TrainConfig, fused: bool) -> dict[str, torch.optim.Optimizer]:
    """AdamW (decay on matrices only), or Muon for the blocks' matrices with AdamW for embeddings and gains.

    Each group keeps its peak rate as "peak_lr"; the schedule scales every group by the same factor.
    """
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    hidden = [p for n, p in named if c.optimizer == "muon" and n.startswith("transformer.h.") and p.dim() == 2]
    ids = {id(p) for p in hidden}
    rest = [p for _, p in named if id(p) not in ids]
    groups = [
        {"params": [p for p in rest if p.dim() >= 2], "weight_decay": c.weight_decay, "peak_lr": c.lr},
        {"params": [p for p in rest if p.dim() < 2], "weight_decay": 0.0, "peak_lr": c.lr},
    ]
    optimizers = {"adamw": torch.optim.AdamW(groups, lr=c.lr, betas=(c.beta1, c.beta2), fused=fused)}
    if hidden:
        muon_groups = [{"params": hidden, "peak_lr": c.muon_lr}]
        optimizers["muon"] = torch.optim.Muon(
            muon_groups, lr=c.muon_lr, weight_decay=c.weight_decay, adjust_lr_fn="match_rms_adamw"
        )
    return optimizers


def checkpoint_due(due: bool, world: int, device) -> bool:
    """Whether any rank's clock says a checkpoint is due: every rank must save at the same step."""
    if world == 1:
        return due
    flag = torch.tensor(int(due), device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())


def gather_states(state: torch.Tensor, world: int, device) -> torch.Tensor:
    """Every rank's copy of a byte state, stacked (rank 0 writes them all to the checkpoint)."""
    if world == 1:
        return state[None]
    parts = [torch.empty_like(state, device=device) for _ in range(world)]
    dist.all_gather(parts, state.to(device))
    return torch.stack([p.cpu() for p in parts])


@torch.no_grad()
def estimate_loss(model, batches: dict, steps: int, batch_size: int, seed: int, ctx, device, world: int) -> dict:
    """Mean loss over the same `steps` batches of each split every time (a fixed generator), averaged over ranks."""
    model.eval()
    out = {}
    for split, data in batches.items():
        g = torch.Generator().manual_seed(seed)
        losses = torch.zeros(steps, device=device)
        for i in range(steps):
            x, y = data.sample(batch_size, g)
            with ctx:
                losses[i] = model(x.to(device), y.to(device))[1]
        mean = losses.mean()
        if world > 1:
            dist.all_reduce(mean)
            mean /= world
        out[split] = mean.item()
    model.train()
    return out


SAMPLE_SETTINGS = dict(max_new_tokens=300, temperature=0.8, top_k=40, seed=0)


def samples(lm: LM) -> dict:
    """A few samples for the card, made once with fixed settings: the call that makes them and their text."""
    if lm.tokenizer.documents:
        settings = {**SAMPLE_SETTINGS, "max_new_tokens": min(lm.row_length, 64)}
        call = f"lm.generate_batch([''] * 12, {', '.join(f'{k}={v}' for k, v in settings.items())})"
        return {"call": call, "text": "\n".join(lm.generate_batch([""] * 12, **settings))}
    call = f"lm.generate('\\n', {', '.join(f'{k}={v}' for k, v in SAMPLE_SETTINGS.items())})"
    return {"call": call, "text": lm.generate("\n", **SAMPLE_SETTINGS).strip("\n")}


def init_device(c: TrainConfig) -> tuple[torch.device, int, int]:
    """The device of this process, the number of processes and this one's rank (torchrun sets WORLD_SIZE and RANK)."""
    world, rank = int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("RANK", 0))
    device = pick_device(c.device)
    if world > 1:
        backend = "nccl" if torch.cuda.is_available() and c.device in ("auto", "cuda") else "gloo"
        dist.init_process_group(backend)
        if backend == "nccl":
            device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}")
            torch.cuda.set_device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda asked for, but no CUDA GPU is available")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if device.type == "cpu":  # subnormal floats slow CPU arithmetic as weights and moments shrink; flush them to zero
        torch.set_flush_denormal(True)
    return device, world, rank


class Run:
    """One training run's state: made by set-up (fresh or from the checkpoint), advanced by steps, saved by rank 0."""

    def __init__(self, c: TrainConfig, out: Path, resume: bool, command: str):
        self.c, self.out, self.resume = c, out, resume
        self.device, self.world, self.rank = device, world, rank = init_device(c)
        self.master = rank == 0
        self.dtype = c.dtype
        if self.dtype == "auto":
            self.dtype = "bfloat16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "float32"
        amp_dtype = DTYPES[self.dtype]
        self.ctx = torch.autocast(device.type, dtype=amp_dtype) if amp_dtype != torch.float32 else nullcontext()
        torch.manual_seed(c.seed + rank)
        self.data_rng = torch.Generator().manual_seed(c.seed + rank)
        tokenizer = CharTokenizer.load(out) if resume else None
        self.tokenizer, self.train_data, self.val_data = load_dataset(c.data, c.row_length, c.docs, tokenizer)
        self.model = model = build_model(replace(c.model, vocab_size=self.tokenizer.vocab_size)).to(device)
        self.optimizers = make_optimizers(model, c, fused=device.type == "cuda")
        self.scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
        self.averaged = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(c.ema)) if c.ema else None
        self.start, self.best_val, self.curve, self.tokens_seen, self.elapsed = 0, float("inf"), [], 0, 0.0
        if resume:
            self.restore()
        self.trained = model
        if c.compile:
            self.trained = torch.compile(self.trained)
        if world > 1:
            self.trained = DistributedDataParallel(
                self.trained, device_ids=[device.index] if device.type == "cuda" else None
            )
        self.evaluated, self.saved = (self.averaged.module,) * 2 if self.averaged else (self.trained, model)
        self.tokens_per_step = c.batch_size * self.train_data.row_length * world  # padding included
        self.record = self.run_record(command)
        out.mkdir(parents=True, exist_ok=True)
        self.t0 = self.last_save = time.time()

    def restore(self) -> None:
        meta, rng = load_checkpoint(self.out, self.model, self.optimizers, self.averaged)
        tidy_checkpoint(self.out / "checkpoint", keep=meta.get("tensors"))
        self.start, self.best_val, self.curve = meta["step"], meta["best_val_loss"], meta["curve"]
        self.tokens_seen, self.elapsed = meta["tokens_seen"], meta["wall_time_s"]
        self.data_rng.set_state(rng["data"][self.rank])
        torch.set_rng_state(rng["torch"][self.rank])
        if self.device.type == "cuda" and "cuda" in rng:
            torch.cuda.set_rng_state(rng["cuda"][self.rank])

    def run_record(self, command: str) -> dict:
        """metrics.json's "run": what was trained, how and where."""
        c, device = self.c, self.device
        where = f"{device.type} ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads)"
        record = {
            "name": self.out.name,
            "data": str(c.data),
            "command": command,
            "device": device.type,
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else where,
            "parameters": self.model.num_params(),
            "world_size": self.world,
            "dtype": self.dtype,
            "settings": asdict(c),
        }
        if self.resume:  # the card keeps the command that started the run and lists the ones that continued it
            earlier = read_metrics(self.out).get("run", {})
            record["command"] = earlier.get("command", command)
            record["resumed_with"] = [*earlier.get("resumed_with", []), command]
        return record

    def wall_time(self) -> float:
        return self.elapsed + time.time() - self.t0

    def metrics(self) -> dict:
        best = min(self.curve, key=lambda e: e["val_loss"]) if self.curve else {}
        summary = {
            "best_val_loss": self.best_val,
            "tokens_seen": self.tokens_seen,
            "wall_time_s": self.wall_time(),
            "final_train_loss": best.get("train_loss"),
            "best_step": best.get("step"),
        }
        return {"run": {**self.record, **summary}, "curve": self.curve}

    def checkpoint(self, step: int) -> None:
        """Every rank's random states, and rank 0 writes them with the weights and optimizers."""
        world, device = self.world, self.device
        rng = {"data": gather_states(self.data_rng.get_state(), world, device)}
        rng["torch"] = gather_states(torch.get_rng_state(), world, device)
        if device.type == "cuda":
            rng["cuda"] = gather_states(torch.cuda.get_rng_state(device), world, device)
        if self.master:
            meta = {
                "step": step,
                "best_val_loss": self.best_val,
                "curve": self.curve,
                "tokens_seen": self.tokens_seen,
                "wall_time_s": self.wall_time(),
                "settings": asdict(self.c),
            }
            save_checkpoint(self.out, self.model, self.optimizers, meta, rng, self.averaged)
        self.last_save = time.time()

    def evaluate(self, step: int, tokens_per_s: float) -> dict:
        """Estimate both losses; a better validation loss saves the model folder. Then the resume state."""
        c = self.c
        splits = {"train": self.train_data, "val": self.val_data}
        losses = estimate_loss(
            self.evaluated, splits, c.eval_steps, c.batch_size, c.seed, self.ctx, self.device, self.world
        )
        entry = {
            "step": step,
            "train_loss": losses["train"],
            "val_loss": losses["val"],
            "lr": learning_rate(max(step - 1, 0), c),
            "tokens_per_s": round(tokens_per_s),
            "time_s": round(self.wall_time(), 1),
        }
        self.curve.append(entry)
        if losses["val"] < self.best_val:
            self.best_val = losses["val"]
            if self.master:
                save_folder(self.saved, self.tokenizer, self.out, self.metrics(), DTYPES[c.save_dtype])
        self.checkpoint(step)
        return entry

    def step(self, step: int) -> tuple[torch.Tensor, float]:
        """One optimizer step at this step's learning rate: the batch's loss and the rate."""
        c, device = self.c, self.device
        lr = learning_rate(step, c)
        for optimizer in self.optimizers.values():
            for group in optimizer.param_groups:
                group["lr"] = group["peak_lr"] * lr / c.lr
        x, y = self.train_data.sample(c.batch_size, self.data_rng)
        with self.ctx:
            _, loss = self.trained(x.to(device, non_blocking=True), y.to(device, non_blocking=True))
        self.scaler.scale(loss).backward()
        if c.grad_clip:
            for optimizer in self.optimizers.values():
                self.scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(self.trained.parameters(), c.grad_clip)
        for optimizer in self.optimizers.values():
            self.scaler.step(optimizer)
        self.scaler.update()
        for optimizer in self.optimizers.values():
            optimizer.zero_grad(set_to_none=True)
        if self.averaged is not None:
            self.averaged.update_parameters(self.model)
        self.tokens_seen += self.tokens_per_step
        return loss, lr

    def finish(self, step: int, interrupted: bool) -> dict:
        """The resume state if stopped early; then rank 0 scores the best model exactly and writes its card."""
        if interrupted:
            self.checkpoint(step)
        if self.world > 1:  # all ranks leave together; rank 0's last work below is single-process
            dist.barrier()
            dist.destroy_process_group()
        summary = self.metrics()
        if self.master:
            if self.curve:
                write_loss_plot(self.curve, self.out / "loss.png")
                summary["run"]["loss_png"] = True
            lm = load(self.out, device="cpu")  # the best model, as saved
            summary["run"]["exact_val_loss"] = validation_loss(lm, read_text(self.c.data))[0]
            summary["samples"] = samples(lm)
            write_metrics(self.out, summary)
            write_card(self.out, lm.model.config, lm.tokenizer)
        summary.update(interrupted=interrupted, step=step)
        return summary


def stop_on_signals() -> list:
    """Ctrl-C, kill and a closed terminal all stop at the end of the step (the list fills), saving the state."""
    requested = []
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda *_: requested.append(True))
    return requested


def train(c: TrainConfig, out: Path, resume: bool = False, command: str = "") -> dict:
    """Run the training loop with resolved settings; returns the run summary written to metrics.json."""
    run = Run(c, out, resume, command)
    stop = stop_on_signals() if run.world == 1 and run.master else []
    bar = tqdm(total=c.max_steps, initial=run.start, disable=not run.master, unit="step", dynamic_ncols=True)
    interval_start, interval_tokens, step = time.time(), 0, run.start
    while True:
        if (step % c.eval_interval == 0 or step == c.max_steps) and not (resume and step == run.start):
            entry = run.evaluate(step, interval_tokens / max(time.time() - interval_start, 1e-9))
            if run.master:
                bar.write(f"step {step}: train {entry['train_loss']:.4f}, val {entry['val_loss']:.4f}")
            interval_start, interval_tokens = time.time(), 0
        if step >= c.max_steps or stop:
            break
        loss, lr = run.step(step)
        step += 1
        due = time.time() - run.last_save >= 60 * c.checkpoint_minutes
        if step % 10 == 0 and checkpoint_due(due, run.world, run.device):
            run.checkpoint(step)
        interval_tokens += run.tokens_per_step
        if run.master and (step % 10 == 0 or step == c.max_steps):
            tok_s = interval_tokens / max(time.time() - interval_start, 1e-9)
            bar.set_postfix(loss=f"{loss.item():.4f}", tok_s=f"{tok_s:,.0f}", lr=f"{lr:.2e}", refresh=False)
        bar.update(1)
    bar.close()
    return run.finish(step, bool(stop))


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    out = Path(args.out)
    command = "python -m gpt.train " + shlex.join(sys.argv[1:] if argv is None else argv)
    try:
        settings = resolve_settings(args)
        summary = train(settings, out, args.resume, command)
    except (DataError, UnknownCharactersError, ModelFileError, ValueError, FileNotFoundError) as e:
        sys.exit(f"error: {e}")
    except OSError as e:  # a folder that cannot be written, a full disk
        sys.exit(f"error: cannot write {e.filename or out}: {e.strerror or e}")
    run = summary["run"]
    if int(os.environ.get("RANK", 0)) == 0:
        print(
            f"best val loss {run['best_val_loss']:.4f} (exact {run.get('exact_val_loss', float('nan')):.4f}) | "
            f"tokens seen {run['tokens_seen']:,} | "
            f"wall time {run['wall_time_s']:.1f}s | model folder {out}"
            + (f" | interrupted at step {summary['step']}: continue with --resume" if summary["interrupted"] else "")
        )


if __name__ == "__main__":
    main()
