"""One training run: its set-up (fresh, fine-tuned or resumed), its optimizer steps, evaluations, saves and finish.

gpt/training/train.py drives a Run from the command line; gpt/posttraining/rl.py's RLRun is the same run whose step
learns from rewards.
"""

import os
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict, replace
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from gpt.models.tokenizer import AnyTokenizer, load_tokenizer
from gpt.models.window import Model
from gpt.posttraining.preferences import load_pairs
from gpt.serving.chat import chat_prompt
from gpt.serving.generate import LM, load
from gpt.storage.folder import (
    build_model,
    load_model,
    read_config,
    read_metrics,
    save_folder,
    write_card,
    write_metrics,
)
from gpt.storage.hub import resolve
from gpt.training.budget import Pacer, body_params, candidates, plan
from gpt.training.checkpoint import load_checkpoint, save_checkpoint, tidy_checkpoint
from gpt.training.config import DTYPES, TrainConfig, portable, recorded_settings
from gpt.training.conversations import describe_conversations, load_conversations, load_prompts
from gpt.training.data import describe_text, load_dataset, read_text
from gpt.training.distributed import gather_states, init_device, share
from gpt.training.eval import conversation_loss, validation_loss
from gpt.training.loss_plot import pyplot, write_loss_plot
from gpt.training.optim import learning_rate, make_optimizers, optimizer_step


def read_data(c: TrainConfig, tokenizer: AnyTokenizer | None, text: str | None):
    """The tokenizer (made from the text unless given) and the train/validation samplers: text (read already, for a
    run on text) or conversations."""
    if c.rl:
        return load_prompts(c.prompts, c.block_size - c.reply_tokens, tokenizer)
    if c.dpo or c.reward_model:
        return load_pairs(c.dpo or c.reward_model, c.block_size, tokenizer)
    if c.sft:
        return load_conversations(c.data, c.row_length, tokenizer, c.replay, c.replay_share)
    bpe = c.vocab_size if c.tokenizer == "bpe" else None
    return load_dataset(c.data, c.row_length, c.docs, tokenizer, bpe, c.chars or "", text)


def grown(state: dict, tokenizer: AnyTokenizer) -> dict:
    """A model's weights with rows for new tokens (a chat model's turns), each a copy of the newline's row: a turn
    ends where a line of text ends, so the model starts by reading a turn token as a line break (the mean of all
    rows when there is no newline)."""
    newline = [] if tokenizer.unknown("\n") else tokenizer.encode("\n")
    for key in ("transformer.wte.weight", "lm_head.weight"):
        rows = state.get(key)
        if rows is not None and len(rows) < tokenizer.vocab_size:
            like = rows[newline[-1]] if newline else rows.mean(0)
            state[key] = torch.cat([rows, like.expand(tokenizer.vocab_size - len(rows), -1)])
    return state


@torch.no_grad()
def estimate_loss(
    model, batches: dict, steps: int, batch_size: int, seed: int, ctx, device, world: int, rank: int
) -> dict:
    """Mean loss over the same `steps` global batches of each split every time (a fixed generator), each process
    scoring its share, averaged over ranks."""
    model.eval()
    out = {}
    for split, data in batches.items():
        g = torch.Generator().manual_seed(seed)
        losses = torch.zeros(steps, device=device)
        for i in range(steps):
            x, y = (share(t, rank, world) for t in data.sample(batch_size * world, g))
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


def settings_text(settings: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in settings.items())


def samples(lm: LM) -> dict:
    """A few samples for the card, made once with fixed settings: the call that makes them and their text."""
    if lm.tokenizer.specials:  # a chat model answers real first messages of its conversations
        said = [(m, chat_prompt(lm, [], m)) for m in (lm.about.get("openings") or ["Hello."])[:3]]
        call = f"p = chat_prompt(lm, [], message); lm.generate(p.text, stop=p.stop, {settings_text(SAMPLE_SETTINGS)})"
        replies = [lm.generate(p.text, stop=tuple(p.stop), **SAMPLE_SETTINGS) for _, p in said]
        return {"call": call, "text": "\n\n".join(f"> {m}\n{r.strip()}" for (m, _), r in zip(said, replies))}
    if lm.tokenizer.documents:
        settings = {**SAMPLE_SETTINGS, "max_new_tokens": min(lm.row_length, 64)}
        call = f"lm.generate_batch([''] * 12, {settings_text(settings)})"
        return {"call": call, "text": "\n".join(lm.generate_batch([""] * 12, **settings))}
    call = f"lm.generate('\\n', {settings_text(SAMPLE_SETTINGS)})"
    return {"call": call, "text": lm.generate("\n", **SAMPLE_SETTINGS).strip("\n")}


class Run:
    """One training run's state: made by set-up (fresh or from the checkpoint), advanced by steps, saved by rank 0."""

    def __init__(
        self,
        c: TrainConfig,
        out: Path,
        resume: bool,
        command: str,
        given: set,
        started: float,
        below: int | None = None,
        best_val: float = float("inf"),
    ):
        """`below` and `best_val`: a budget's re-plan for a slower machine (smaller than `below` body parameters, and
        the folder replaced only by a model better than the one it holds)."""
        self.c, self.out, self.resume, self.t0 = c, out, resume, started
        self.asked, self.command, self.given = c, command, given
        self.device, self.world, self.rank = device, world, rank = init_device(c)
        self.master = rank == 0
        self.dtype = c.dtype
        if self.dtype == "auto":
            self.dtype = "bfloat16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "float32"
        amp_dtype = DTYPES[self.dtype]
        self.ctx = torch.autocast(device.type, dtype=amp_dtype) if amp_dtype != torch.float32 else nullcontext()
        self.scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
        torch.manual_seed(c.seed + rank)
        self.data_rng = torch.Generator().manual_seed(c.seed)  # alike in every process: each takes its share
        self.base = resolve(c.init_from) if c.init_from else None  # once: a Hub base is a download or a cache look-up
        base = None if resume else self.base
        tokenizer = load_tokenizer(out) if resume else load_tokenizer(base) if base else None
        on_text = not (c.rl or c.dpo or c.reward_model or c.sft)
        self.text = read_text(c.data, c.text_column) if on_text else None  # the one read of the run's text file
        self.tokenizer, self.train_data, self.val_data = read_data(c, tokenizer, self.text)
        self.elapsed = 0.0
        self.pacer = None
        rungs = candidates(c, given)
        if c.time_budget:  # a smaller shape may take over a run in one process (Run.smaller)
            share = self.world == 1 and self.device.type == "cpu" and not c.threads
            self.pacer = Pacer(60 * c.time_budget, rungs if self.world == 1 else [], share, self.master)
        if c.time_budget and not resume:
            pyplot()
            self.pacer.pick_threads(self.time_step, rungs[0])
            left = 60 * c.time_budget - self.wall_time()
            tokens = (self.train_data.tokens, self.val_data.tokens)
            self.c = c = plan(c, given, left, *tokens, self.time_step, below, device.type == "cuda")
            _, self.train_data, self.val_data = read_data(c, self.tokenizer, self.text)
            torch.manual_seed(c.seed + rank)  # the probes drew from it; a planned run repeats as an explicit one
        if base:  # the base model's own config (a head of its own, say), with this run's dropout and new tokens
            config, _ = read_config(base, c.init_from)
            vocab = self.tokenizer.vocab_size
            model = build_model(replace(config, dropout=c.dropout, vocab_size=vocab) if c.arch == "gpt" else config)
            model.load_state_dict(grown(load_model(base, name=c.init_from).state_dict(), self.tokenizer))
        else:
            model = build_model(replace(c.model, vocab_size=self.tokenizer.vocab_size))
        self.model = model = self.make_model(model).to(device)
        self.optimizers = make_optimizers(model, c, fused=device.type == "cuda")
        self.averaged = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(c.ema)) if c.ema else None
        self.start, self.best_val, self.curve, self.tokens_seen = 0, best_val, [], 0
        self.pending: list[dict] = []  # figures of the steps since the last evaluation (an RL run's rewards)
        if resume:
            self.restore()
        self.trained = model
        if c.compile:
            from torch._functorch import config as functorch_config

            functorch_config.enable_autograd_cache = False  # torch.compile's on-disk caches are pickles: off
            # one static graph per shape (training's, evaluation's): dynamic shapes' kernels are slower on a CPU
            self.trained = torch.compile(self.trained, dynamic=False, options={"fx_graph_cache": False})
        if world > 1:
            self.trained = DistributedDataParallel(
                self.trained, device_ids=[device.index] if device.type == "cuda" else None
            )
        self.evaluated, self.saved = (self.averaged.module,) * 2 if self.averaged else (self.trained, model)
        self.tokens_per_step = c.batch_size * self.train_data.row_length * world  # padding included
        self.record = self.run_record(command)
        if self.master:
            print(self.start_note(), file=sys.stderr, flush=True)
        out.mkdir(parents=True, exist_ok=True)
        self.last_save = time.time()

    def make_model(self, model: Model) -> torch.nn.Module:
        """The model this run trains, made from the base's (or a fresh) one: itself, or a reward model's."""
        return model

    def time_step(self, c: TrainConfig) -> float:
        """Seconds per optimizer step of a throwaway model of c's shape on this machine (after one warm-up step)."""
        model = build_model(replace(c.model, vocab_size=self.tokenizer.vocab_size)).to(self.device)
        optimizers = make_optimizers(model, c, fused=self.device.type == "cuda")
        length = min(c.row_length, self.train_data.row_length) if c.docs else c.row_length
        x = torch.randint(self.tokenizer.vocab_size, (c.batch_size, length), device=self.device)
        times = []
        while len(times) < 3 or (sum(times[1:]) < 0.5 and len(times) < 20):
            t = time.perf_counter()
            optimizer_step(model, optimizers, self.scaler, self.ctx, x, x, c.grad_clip)
            times.append(time.perf_counter() - t)
        seconds = torch.tensor(sum(times[1:]) / len(times[1:]), device=self.device)
        if self.world > 1:  # every rank must choose the same plan: they share one figure
            dist.all_reduce(seconds)
            seconds /= self.world
        return seconds.item()

    def fit_to_budget(self, step: int) -> bool:
        """Re-plan the steps left from the pace (budget.Pacer); True when a smaller shape must take over."""
        c = self.pacer.fit(self.c, step, self.wall_time(), self.val_data.tokens, self.agreed)
        if c is None:
            return True
        self.c = c  # a new config: the one the user's settings were checked as stays as it was
        return False

    def agreed(self, last: int) -> int:
        """Rank 0's last step, which every rank stops at."""
        if self.world == 1:
            return last
        agreed = torch.tensor(last, device=self.device)
        dist.broadcast(agreed, 0)
        return int(agreed.item())

    def smaller(self) -> "Run":
        """The same run planned afresh for the time left, on a smaller shape than this one (its machine slowed)."""
        return type(self)(
            self.asked, self.out, False, self.command, self.given, self.t0, body_params(self.c), self.best_val
        )

    def start_note(self) -> str:
        """One line before the first step (which may take a while): what was read and what will be trained."""
        c, text, tok = self.c, self.record["text"], self.tokenizer
        kind = next((k for k in ("conversations", "pairs") if k in text), "characters")
        size = f"{text[kind]:,} {kind}"
        return (
            f"{'resuming' if self.resume else 'training'} on {text['file']}: {size}, "
            f"{self.train_data.tokens:,} training tokens ({tok.kind}, vocabulary {tok.vocab_size:,}); "
            f"{self.model.num_params():,} parameters; steps {self.start:,} to {c.max_steps:,} of {c.batch_size} x "
            f"{self.train_data.row_length} tokens on {self.record['device_name']}"
            + (f"; sized for --time-budget {c.time_budget:g} min" if c.time_budget else "")
            + ("; compiled (the first steps wait for it)" if c.compile else "")
            + (self.replay_note() if c.replay else "")
        )

    def replay_note(self) -> str:
        """What --replay adds: a share of each --sft batch, or a weighted loss beside --rl's policy."""
        name = Path(self.c.replay).name
        if self.c.rl:
            return f"; {self.c.replay_share:g} x the loss on {name} beside the policy's"
        return f"; {self.c.replay_share:.0%} of each batch replays {name}"

    def restore(self) -> None:
        meta, rng = load_checkpoint(self.out, self.model, self.optimizers, self.averaged)
        tidy_checkpoint(self.out / "checkpoint", keep=meta.get("tensors"))
        self.start, self.best_val, self.curve = meta["step"], meta["best_val_loss"], meta["curve"]
        self.tokens_seen, self.elapsed = meta["tokens_seen"], meta["wall_time_s"]
        self.pending = meta.get("pending", [])
        mine = {k: v[self.rank].clone() for k, v in rng.items()}  # a row of its own: set_state reads from its start
        self.data_rng.set_state(mine["data"])
        torch.set_rng_state(mine["torch"])
        if self.device.type == "cuda" and "cuda" in mine:
            torch.cuda.set_rng_state(mine["cuda"])

    def run_record(self, command: str) -> dict:
        """metrics.json's "run": what was trained, how and where."""
        c, device = self.c, self.device
        threads = torch.get_num_threads()
        where = f"{device.type} ({os.cpu_count()} cores, {threads} torch thread{'s' * (threads != 1)})"
        record = {
            "name": self.out.name,
            "data": portable(str(c.data or c.prompts or c.dpo or c.reward_model)),
            "command": command,
            "device": device.type,
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else where,
            "text": self.describe_data(),
            "tokenizer": self.tokenizer.kind,
            "parameters": self.model.num_params(),
            "world_size": self.world,
            "dtype": self.dtype,
            "settings": recorded_settings(c),
        }
        if c.init_from:  # the card's base_model: a Hub repo id, or a local folder named in the text only
            learnt = read_metrics(self.base).get("run", {}).get("text", {}).get("file")
            record["base_model"] = {"name": portable(c.init_from), "on_hub": not os.path.isdir(c.init_from)}
            record["base_model"] |= {"text": learnt} if learnt else {}
        if self.resume:  # the card keeps the command that started the run and lists the ones that continued it
            earlier = read_metrics(self.out).get("run", {})
            record["command"] = earlier.get("command", command)
            record["resumed_with"] = [*earlier.get("resumed_with", []), command]
        return record

    def describe_data(self) -> dict:
        """The record of what the run learnt from (gpt/training/data.py's describe_text, or the conversations')."""
        c = self.c
        return describe_conversations(c.data) if c.sft else describe_text(c.data, self.text, c.docs)

    def wall_time(self) -> float:
        return self.elapsed + time.time() - self.t0

    def metrics(self) -> dict:
        best = min(self.curve, key=lambda e: e["val_loss"]) if self.curve else {}
        summary = {
            "best_val_loss": self.best_val,
            "tokens_seen": self.tokens_seen,
            "wall_time_s": self.wall_time(),
            "final_train_loss": best.get("train_loss"),
            "settings": recorded_settings(self.c),  # a time budget's last step is known only at the end
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
                "pending": self.pending,
            }
            save_checkpoint(self.out, self.model, self.optimizers, meta, rng, self.averaged)
        self.last_save = time.time()

    def evaluate(self, step: int, tokens_per_s: float) -> dict:
        """Estimate both losses; a better validation loss saves the model folder. Then the resume state."""
        c, started = self.c, time.time()
        splits = {"train": self.train_data, "val": self.val_data}
        losses = estimate_loss(
            self.evaluated, splits, c.eval_steps, c.batch_size, c.seed, self.ctx, self.device, self.world, self.rank
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
                self.save()
        self.checkpoint(step)
        if self.pacer:
            self.pacer.evaluated(time.time() - started)
        return entry

    def save(self) -> None:
        """The model folder of the model evaluated now (the best so far)."""
        save_folder(self.saved, self.tokenizer, self.out, self.metrics(), DTYPES[self.c.save_dtype])

    def best_model(self):
        """The best model, as saved: what the final figures score."""
        return load(self.out, device="cpu")

    def draw(self, n: int, high: int) -> list[int]:
        """This process's share of n random whole numbers below high per process, drawn alike in every process."""
        return share(torch.randint(high, (n * self.world,), generator=self.data_rng), self.rank, self.world).tolist()

    def set_rate(self, step: int) -> float:
        """This step's learning rate, set in every optimizer group (each scaled from its own peak)."""
        lr = learning_rate(step, self.c)
        for optimizer in self.optimizers.values():
            for group in optimizer.param_groups:
                group["lr"] = group["peak_lr"] * lr / self.c.lr
        return lr

    def step(self, step: int) -> tuple[dict, float, int]:
        """One optimizer step at this step's learning rate: the figures the bar shows, the rate and the tokens."""
        c, device = self.c, self.device
        lr = self.set_rate(step)
        drawn = self.train_data.sample(c.batch_size * self.world, self.data_rng)
        x, y = (share(t, self.rank, self.world).to(device, non_blocking=True) for t in drawn)
        loss = optimizer_step(self.trained, self.optimizers, self.scaler, self.ctx, x, y, c.grad_clip)
        if self.averaged is not None:
            self.averaged.update_parameters(self.model)
        self.tokens_seen += self.tokens_per_step
        return {"loss": loss.detach()}, lr, self.tokens_per_step

    def eval_line(self, entry: dict) -> str:
        return f"step {entry['step']}: train {entry['train_loss']:.4f}, val {entry['val_loss']:.4f}"

    def final_figures(self, lm: LM) -> dict:
        """The best model's exact figures on its validation data, for metrics.json and the card."""
        c = self.c
        loss, _, bits = conversation_loss(lm, c.data) if c.sft else validation_loss(lm, self.text)
        return {"exact_val_loss": loss, "val_bits_per_byte": bits}

    def samples(self, lm: LM) -> dict | None:
        return samples(lm)

    def plot(self) -> None:
        unit = "char" if self.tokenizer.kind == "character" else "token"
        write_loss_plot(self.curve, self.out / "loss.png", unit)

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
                self.plot()
                summary["run"]["loss_png"] = True
            best = self.best_model()
            summary["run"].update(self.final_figures(best))
            shown = self.samples(best)
            summary |= {"samples": shown} if shown else {}
            summary["run"]["wall_time_s"] = self.wall_time()  # the final scoring and samples included
            write_metrics(self.out, summary)
            write_card(self.out, self.model.config, self.tokenizer)
        summary.update(interrupted=interrupted, step=step)
        return summary
