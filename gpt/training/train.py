"""Train a model on a text file: python -m gpt.train --data FILE --out DIR [--preset NAME] [--arch ARCH] [flags].

The best-validation model is saved atomically to --out as a model folder. Resume state (latest weights, optimizer,
step, data-sampler and RNG state) goes to --out/checkpoint/ as safetensors + JSON, so --resume continues exactly
where an interrupted run stopped. Ctrl-C saves that state at the end of the current step and exits.
Multi-GPU / multi-node: torchrun --nproc-per-node N -m gpt.train ... (DistributedDataParallel; rank 0 writes).
"""

import argparse
import os
import shlex
import signal
import sys
import time
from errno import ENOSPC
from pathlib import Path

from tqdm import tqdm

import gpt
from gpt.models.tokenizer import UnknownCharactersError, load_tokenizer
from gpt.models.window import WindowConfig
from gpt.posttraining.dpo import DPORun
from gpt.posttraining.reward import RewardRun
from gpt.posttraining.rl import RLRun
from gpt.storage.folder import (
    ModelFileError,
    read_config,
)
from gpt.storage.hub import resolve
from gpt.training.checkpoint import read_checkpoint_meta
from gpt.training.config import ARCHITECTURE, PRESETS, TrainConfig, build_parser, portable_args
from gpt.training.data import DataError
from gpt.training.distributed import checkpoint_due
from gpt.training.run import Run
from gpt.training.tracking import Tracker


def resolve_settings(args: argparse.Namespace) -> TrainConfig:
    """Defaults <- preset <- explicit flags; on --resume the saved run's settings stand in for the defaults."""
    explicit = {k: v for k, v in vars(args).items() if v is not None and k not in ("out", "resume", "preset")}
    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise ValueError(f"--out {args.out} is a file: give a folder for the model")
    if args.resume:
        saved = read_checkpoint_meta(Path(args.out))["settings"]
        for k in ARCHITECTURE:
            if k in explicit and explicit[k] != saved.get(k, explicit[k]):
                raise ValueError(
                    f"--{k.replace('_', '-')} {explicit[k]} differs from the run being resumed ({saved[k]})"
                )
        return TrainConfig(**{**saved, **explicit})
    if args.init_from:
        return fine_tune_settings(args, explicit)
    return TrainConfig(**{**PRESETS.get(args.preset, {}), **explicit, "preset": args.preset})


def base_shape(folder: Path) -> dict:
    """The settings a fine-tune takes from its base model: the architecture and the tokenizer."""
    config, _ = read_config(folder)
    tokenizer = load_tokenizer(folder)
    window = isinstance(config, WindowConfig)
    blocks = ("block_size", "n_embd", "n_layer", "n_head", "bias", "rotary", "rms_norm", "qk_norm", "mlp")
    shape = {k: getattr(config, k) for k in (("block_size", "n_embd", "n_hidden") if window else blocks)}
    if not window:
        shape["untied_head"] = not config.tie_embeddings
    shape.update(arch=config.arch if window else "gpt", docs=tokenizer.documents)
    if tokenizer.kind == "character":
        return {**shape, "tokenizer": "char"}
    return {**shape, "tokenizer": "bpe", "vocab_size": tokenizer.vocab_size}


def fine_tune_settings(args: argparse.Namespace, explicit: dict) -> TrainConfig:
    """--init-from: the base model's shape and tokenizer, the finetune preset (or --preset), then explicit flags."""
    shape = base_shape(resolve(args.init_from))
    for k, v in shape.items():
        if k in explicit and explicit[k] != v:
            flag = f"--{k.replace('_', '-')}"
            raise ValueError(f"{flag} {explicit[k]} differs from {args.init_from} ({v}): a fine-tune keeps its shape")
    preset = args.preset or ("rl" if args.rl else "dpo" if args.dpo else "reward" if args.reward_model else "finetune")
    defaults = {k: v for k, v in PRESETS[preset].items() if k not in ARCHITECTURE}
    if shape["arch"] != "gpt":
        defaults.pop("dropout", None)
    return TrainConfig(**{**defaults, **explicit, **shape, "preset": preset})


def given_settings(args: argparse.Namespace) -> set[str]:
    """The settings a user chose (by flag or preset), which --time-budget keeps."""
    explicit = {k for k, v in vars(args).items() if v is not None}
    return explicit | set(PRESETS.get(args.preset, {})) - {"max_steps", "warmup_steps", "eval_interval", "eval_steps"}


class BudgetBar(tqdm):
    """A time budget's bar: its ETA is when the run's plan has its last step due, which re-plans keep near the
    deadline, rather than a guess from the rate of steps that evaluations and a busy machine make jumpy."""

    def __init__(self, run: Run, **shown):
        self.run = run
        super().__init__(**shown, bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{due}, {rate_fmt}{postfix}]")

    @property
    def format_dict(self) -> dict:
        due = max(0.0, self.run.pacer.steps_end - self.run.wall_time())
        return {**super().format_dict, "due": self.format_interval(due)}


def stop_on_signals() -> list:
    """Ctrl-C, kill and a closed terminal all stop at the end of the step (the list fills), saving the state."""
    requested = []
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda *_: requested.append(True))
    return requested


def train(
    c: TrainConfig,
    out: Path,
    resume: bool = False,
    command: str = "",
    given: set | None = None,
    started: float | None = None,
) -> dict:
    """Run the training loop with resolved settings; returns the run summary written to metrics.json.

    `given`: the settings the user chose, which a time budget keeps; `started`: when the budget's clock started."""
    kind = DPORun if c.dpo else RewardRun if c.reward_model else RLRun if c.rl else Run
    run = kind(c, out, resume, command, given or set(), started or time.time())
    c = run.c
    tracker = Tracker(c.track, out.name, run.record["settings"], c.track_space) if c.track and run.master else None
    stop = stop_on_signals() if run.world == 1 and run.master else []
    shown = dict(total=c.max_steps, initial=run.start, disable=not run.master, unit="step", dynamic_ncols=True)
    bar = BudgetBar(run, **shown) if c.time_budget else tqdm(**shown)
    interval_start, interval_tokens, step = time.time(), 0, run.start
    while True:
        evaluated = bool(run.curve) and run.curve[-1]["step"] == step  # a resumed run may have been killed before it
        if (step % c.eval_interval == 0 or step == run.c.max_steps) and not evaluated:
            entry = run.evaluate(step, interval_tokens / max(time.time() - interval_start, 1e-9))
            if run.master:
                bar.write(run.eval_line(entry))
            if tracker:
                tracker.log(entry, step)
            interval_start, interval_tokens = time.time(), 0
        if step >= run.c.max_steps or stop:
            break
        shown, lr, tokens = run.step(step)
        step += 1
        due = time.time() - run.last_save >= 60 * c.checkpoint_minutes
        if step % 10 == 0 and checkpoint_due(due, run.world, run.device):
            run.checkpoint(step)
        if c.time_budget and step % 10 == 0 and run.fit_to_budget(step):
            bar.write(f"step {step}: too slow now for {run.c.n_layer}x{run.c.n_embd}; planning a smaller shape")
            run = bar.run = run.smaller()
            c, step, interval_start, interval_tokens = run.c, 0, time.time(), 0
            bar.reset(total=c.max_steps)
            continue
        if bar.total != run.c.max_steps:
            bar.total = run.c.max_steps
        interval_tokens += tokens
        if run.master and (step % 10 == 0 or step == run.c.max_steps):
            tok_s = interval_tokens / max(time.time() - interval_start, 1e-9)
            figures = {k: f"{float(v):.4f}" for k, v in shown.items()}
            bar.set_postfix(**figures, tok_s=f"{tok_s:,.0f}", lr=f"{lr:.2e}", refresh=False)
            if tracker:
                tracker.log({**{k: float(v) for k, v in shown.items()}, "lr": lr, "tokens_per_s": tok_s}, step)
        bar.update(1)
    bar.close()
    summary = run.finish(step, bool(stop))
    if tracker:
        tracker.finish()
    return summary


def main(argv: list[str] | None = None) -> None:
    started = gpt.LAUNCHED if argv is None else time.time()  # from the command's start, imports included
    args = build_parser().parse_args(argv)
    out = Path(args.out)
    command = "python -m gpt.train " + shlex.join(portable_args(sys.argv[1:] if argv is None else argv))
    try:
        settings = resolve_settings(args)
        summary = train(settings, out, args.resume, command, given_settings(args), started)
    except (DataError, UnknownCharactersError, ModelFileError, ValueError, FileNotFoundError) as e:
        sys.exit(f"error: {e}")
    except OSError as e:  # a folder that cannot be written, a full disk
        room = " (free some space, or give --out on a disk with room; --resume continues)" * (e.errno == ENOSPC)
        sys.exit(f"error: cannot write {e.filename or out}: {e.strerror or e}{room}")
    run = summary["run"]
    if int(os.environ.get("RANK", 0)) == 0:
        if settings.rl:
            best = f"best val reward {run['best_val_reward']:.4f} (at greedy {run['greedy_val_reward']:.4f})"
        elif settings.dpo or settings.reward_model:
            best = (
                f"held-out pairs: loss {run['val_loss']:.4f}, accuracy {run['val_accuracy']:.1%}, "
                f"margin {run['val_margin']:.3f}"
            )
        else:
            best = f"best val loss {run['best_val_loss']:.4f} (exact {run.get('exact_val_loss', float('nan')):.4f})"
        print(
            f"{best} | "
            f"tokens seen {run['tokens_seen']:,} | "
            f"wall time {run['wall_time_s']:.1f}s | model folder {out}"
            + (f" | interrupted at step {summary['step']}: continue with --resume" if summary["interrupted"] else "")
        )


if __name__ == "__main__":
    main()
