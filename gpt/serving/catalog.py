"""The models one process offers, by name: each loaded once, with one engine that the UI and the API share.

A GPT decodes uncompiled at first, so that a server answers at once; its compiled step is built in the background, one
model at a time, and swapped into its engine when ready (the same tokens: tests/test_generate.py). Names are what a
visitor sees, a folder's name or a Hub repo id, never a path on the server's disk.
"""

import glob
import os
import queue
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from gpt.serving.decode import CompiledStep, DecodeBatch
from gpt.serving.engine import Engine, Job, check_engine_size, in_passing_thread
from gpt.serving.generate import LM, load
from gpt.serving.sampling import SamplingParams, row_params
from gpt.storage.folder import ModelFileError, is_reward_folder, read_metrics
from gpt.storage.hub import ModelNotFoundError

MAX_LOADED = 8  # models kept loaded; beyond that the least recently used idle one is let go
DEFAULTS = ("shakespeare-chat", "shakespeare-char")  # the first of these offered opens the app: the chat model


class NotOffered(LookupError):
    """A model name this catalog does not offer; the message names what it does."""


class ModelUnavailable(Exception):
    """An offered model that cannot be loaded now (a Hub repo offline, a broken folder); the message says why."""


class ModelTooLarge(ModelUnavailable):
    """An offered model whose engine would pass this server's memory bound; the message says what would fit."""


class AtCapacity(Exception):
    """The engine has no room for more requests now (the UI says try again, the API answers 429)."""


@dataclass
class Submitted:
    """A request's jobs on the engine, and what of its prompt the model reads."""

    jobs: list[Job]
    prompt_tokens: int  # tokens of the prompt the model reads
    cut: int  # tokens cut from the prompt's start to fit the context (0: none)


@dataclass
class Served:
    """A loaded model and the engine that decodes for it."""

    name: str
    lm: LM
    engine: Engine

    def submit(
        self, prompt: str, params: SamplingParams, n: int = 1, top_logprobs: int = 0, logprobs: bool = False
    ) -> Submitted:
        """n samples of one prompt (row i with row_params' seed), decoded in one batch with every other request: the
        one way the UI, the MCP tools and the API start generating, so long input, seeds and limits are handled
        alike. A prompt longer than the context keeps its end (a window model reads its last window anyway). An
        unknown character or an empty prompt is a ValueError; a full engine is AtCapacity. Called on the event loop,
        which reads the jobs."""
        ids = self.lm.encode_prompt(prompt)
        block = self.lm.block_size
        cut = 0 if self.lm.windowed else max(len(ids) - block, 0)
        while cut and cut < len(ids) and b"\x80" <= self.lm.tokenizer.token_bytes(ids[cut])[:1] < b"\xc0":
            cut += 1  # a token that continues a character cut in two
        ids = ids[cut:]
        jobs = [Job(ids, row_params(params, i), top_logprobs, logprobs=logprobs) for i in range(n)]
        if not self.engine.submit(jobs):
            raise AtCapacity("the server is at capacity: try again in a moment")
        return Submitted(jobs, len(ids), cut)


def one_stream_rate(batch: DecodeBatch, steps: int = 64) -> float:
    """Tokens per second of one row decoding in an empty batch (after a few steps, so that first calls do not count)."""
    batch.add([[0]], [SamplingParams(temperature=0)])
    for _ in range(4):
        batch.step()
    began = time.perf_counter()
    for _ in range(steps):
        batch.step()
    rate = steps / (time.perf_counter() - began)
    batch.remove(0)
    return rate


class Catalog:
    """Short name -> folder path or owner/name[@revision]; the default is always offered, others only if allow_any."""

    def __init__(
        self,
        default: str = "",
        allow_any: bool = False,
        compile: bool = False,
        max_batch: int = 16,
        max_waiting: int = 64,
    ):
        self.sources: dict[str, str] = {}
        self.default, self.allow_any, self.compile = default, allow_any, compile
        self.max_batch, self.max_waiting = max_batch, max_waiting
        self.served: OrderedDict[str, Served] = OrderedDict()  # loaded, least recently used first
        self.lock = threading.Lock()
        self.loading: dict[str, threading.Lock] = {}  # one load at a time per model
        self.to_compile: queue.Queue[Served | None] = queue.Queue()
        self.compiler: threading.Thread | None = None

    @classmethod
    def from_settings(cls, models: str | None, default: str | None, shipped: str, **settings) -> "Catalog":
        """models: comma-separated folders, folder globs and repo ids (None: the shipped folders' glob); default
        (MODEL_ID) is always offered; settings: as Catalog's."""
        catalog = cls(**settings)
        for item in [i.strip() for i in (models or shipped).split(",") if i.strip()]:
            if glob.has_magic(item):
                for folder in sorted(glob.glob(item)):
                    if os.path.isfile(os.path.join(folder, "config.json")) and not is_reward_folder(folder):
                        catalog.add(folder)
            else:
                catalog.add(item)
        if default:
            catalog.default = catalog.add(default)
        else:
            names = catalog.sources
            catalog.default = next((n for n in DEFAULTS if n in names), next(iter(names), ""))
        return catalog

    def add(self, source: str) -> str:
        """Offer a folder (by its name) or a repo id; returns the name."""
        name = Path(source).name if os.path.isdir(source) else source
        self.sources[name] = str(Path(source).resolve()) if os.path.isdir(source) else source
        return name

    def source(self, name: str) -> str:
        name = (name or "").strip()
        if name in self.sources:
            return self.sources[name]
        if self.allow_any and name:
            return name
        offered = ", ".join(self.sources) or "none"
        raise NotOffered(f"{name!r} is not one of the models offered here: pick one of {offered}")

    def lineage(self, name: str) -> list[str]:
        """The offered models a folder was tuned from, base first, ending with the named one: the stages of its making
        (a folder's record names its base; those on offer by the same folder name count)."""
        chain = [name]
        while os.path.isdir(self.sources.get(chain[0], "")):
            base = read_metrics(self.sources[chain[0]]).get("run", {}).get("base_model") or {}
            base = base.get("name", "") if base.get("on_hub") else Path(base.get("name", "")).name  # a folder's name
            if base not in self.sources or base in chain:
                break
            chain.insert(0, base)
        return chain

    def loaded(self, name: str) -> Served | None:
        """The model if it is loaded (never loads it)."""
        return self.served.get((name or "").strip())

    def get(self, name: str) -> Served:
        """The model and its engine, loaded on first use (a caller waits for a load another has begun)."""
        name = (name or "").strip()
        source = self.source(name)
        with self.lock:
            if name in self.served:
                self.served.move_to_end(name)
                return self.served[name]
            loading = self.loading.setdefault(name, threading.Lock())
        with loading:
            if name in self.served:
                return self.served[name]
            try:
                lm = in_passing_thread(load, source)  # its OpenMP threads end with it (gpt/serving/engine.py)
            except (ModelNotFoundError, ModelFileError, ValueError, FileNotFoundError) as e:
                raise ModelUnavailable(str(e).replace(source, name)) from None
            try:
                check_engine_size(lm, self.max_batch)
            except ValueError as e:
                raise ModelTooLarge(f"{name}: {e}") from None
            return self.put(name, lm)

    def put(self, name: str, lm: LM) -> Served:
        """Serve a model already loaded, under `name`; a GPT's compiled step is queued for the background."""
        served = Served(name, lm, Engine(lm, self.max_batch, self.max_waiting))
        with self.lock:
            self.sources.setdefault(name, name)
            self.served[name] = served
            idle = [n for n, s in self.served.items() if n != name and not s.engine.admitted]
            for old in idle[: max(0, len(self.served) - MAX_LOADED)]:
                self.served.pop(old).engine.close()
        if self.compile and lm.compilable:
            print(f"* {name}: decoding uncompiled; compiling in the background", flush=True)
            with self.lock:
                self.to_compile.put(served)
                if self.compiler is None:  # a thread that ends when nothing is left to compile (gpt/serving/engine.py)
                    self.compiler = threading.Thread(target=self._compile_all, name="gpt-compile", daemon=True)
                    self.compiler.start()
        return served

    def close(self) -> None:
        self.to_compile.put(None)
        with self.lock:
            for served in self.served.values():
                served.engine.close()
            self.served.clear()

    def _compile_all(self) -> None:
        while True:
            with self.lock:
                if self.to_compile.empty():
                    self.compiler = None
                    return
                served = self.to_compile.get()
            if served is None:
                return
            if served.engine.healthy:
                self._compile(served)

    def _compile(self, served: Served) -> None:
        """Compile the step on a batch of the engine's own capacity (the graphs it will run), then swap it in."""
        began, model = time.monotonic(), served.lm.model
        step = CompiledStep(model)
        batch = DecodeBatch(model, served.engine.max_batch, step)
        batch.warm_up()
        if step.failed:  # CompiledStep has said why
            return
        rate = one_stream_rate(batch)
        uncompiled = one_stream_rate(DecodeBatch(model, served.engine.max_batch))
        took = f"{time.monotonic() - began:.0f} s"
        if rate <= uncompiled:  # a compiled graph that is not faster here is not worth swapping in
            print(
                f"* {served.name}: kept uncompiled: the compiled step ({took}) measured {rate:,.0f} tok/s for one "
                f"stream, uncompiled {uncompiled:,.0f}",
                flush=True,
            )
            return
        served.engine.use_compiled(step)
        print(
            f"* {served.name}: decoding compiled ({took}): now {rate:,.0f} tok/s for one stream (uncompiled "
            f"{uncompiled:,.0f})",
            flush=True,
        )
