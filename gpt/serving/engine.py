"""Continuous batching: one engine thread decodes every admitted request in one batched forward step.

Each request is a Job in its own KV cache row, with its own sampling settings, random generator and stop rules.
Waiting jobs join between steps; finished, cancelled or failed ones leave. The engine knows nothing of HTTP or of the
UI: a job carries an asyncio queue and its event loop, and receives each Token, then None when it is finished; the API
and the app's handlers read their jobs alike, so their rows decode in one batch. Tokens reach
the event loops in one hand-over per `delivery_interval` (a request's first token and its end at once), not one
per step: with 16 streams on a 2-core machine, every wake-up of the event loop takes CPU from the decode step.

Robustness rules: whatever one job does, the thread keeps running (a job that cannot join ends alone with
finish_reason "error"); a job's slot is counted from `submit` until the engine ends it, on every path, so capacity
is never lost; `healthy` tells whether the engine still serves (not closed, its thread not killed). Decoding starts
uncompiled; `use_compiled` swaps in a compiled step between two steps (gpt/serving/catalog.py builds it in the
background), with the same tokens.

Threads: torch's CPU kernels run on OpenMP (libgomp), which gives each thread that runs a parallel region a team of
its own, kept while that thread lives; once the process holds more such threads than CPUs, every team's threads sleep
between regions instead of spinning, and one decode step (dozens of regions) runs 4-6x slower (docs/benchmarks.md).
So a served model's torch work runs on its engine's thread (`run` for work other than decoding: attention maps), the
thread ends when the engine has been idle for `idle_exit` seconds, and loads and compiles run on threads that end
(`in_passing_thread`, gpt/serving/catalog.py).
"""

import asyncio
import concurrent.futures
import queue
import threading
import time
import traceback
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from gpt.models.model import GPT
from gpt.serving.decode import CompiledStep, DecodeBatch, step_rows
from gpt.serving.generate import LM
from gpt.serving.sampling import Row, Sampler, SamplingParams, Token

T = TypeVar("T")


@dataclass
class Job:
    """One sequence being generated: its settings and the events its reader consumes."""

    prompt_ids: list[int]
    params: SamplingParams
    top_logprobs: int = 0  # alternatives listed per token
    loop: asyncio.AbstractEventLoop = field(default_factory=asyncio.get_running_loop)  # where `events` is read
    logprobs: bool = False  # each token's log-probability (always on when top_logprobs is asked)
    events: asyncio.Queue = field(default_factory=asyncio.Queue)  # each Token, then None when finished
    row: Row | None = None
    cancelled: threading.Event = field(default_factory=threading.Event)

    async def tokens(self) -> AsyncIterator[Token]:
        """The job's tokens as they come. Leaving early (a break, a cancelled task) cancels the job: the engine frees
        its row after the step it is in."""
        try:
            while (token := await self.events.get()) is not None:
                yield token
        finally:
            self.cancelled.set()


def deliver(items: list[tuple[asyncio.Queue, Token | None]]) -> None:
    for events, item in items:
        events.put_nowait(item)


def post(loop: asyncio.AbstractEventLoop, items: list[tuple[asyncio.Queue, Token | None]]) -> None:
    """Hand items to a reader's event loop; a loop that has closed has no reader left."""
    try:
        loop.call_soon_threadsafe(deliver, items)
    except RuntimeError:
        pass


def in_passing_thread(fn: Callable[..., T], *args: Any) -> T:
    """fn(*args) on a thread that ends with it, and so do the OpenMP threads it starts (module docstring)."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(fn, *args).result()


MAX_ENGINE_BYTES = 4 << 30  # weights and the KV cache of a whole batch, per model served


def engine_bytes(lm: LM, capacity: int) -> int:
    """What an engine of `capacity` rows holds for this model: its fp32 weights and, for a GPT, the KV cache of every
    row at the whole context (keys and values of each layer), known from the config before anything is allocated."""
    c = lm.model.config
    cache = 2 * capacity * c.n_layer * (c.block_size + 1) * c.n_embd if isinstance(lm.model, GPT) else 0
    return 4 * (c.num_params() + cache)


def check_engine_size(lm: LM, capacity: int, limit: int = MAX_ENGINE_BYTES) -> None:
    """A model whose engine would pass the limit is refused in one line that says what would fit."""
    need = engine_bytes(lm, capacity)
    if need > limit:
        raise ValueError(
            f"serving it takes {need / 2**30:,.1f} GB (its weights and a KV cache of {capacity} rows at its context "
            f"of {lm.model.config.block_size:,}), over this server's {limit / 2**30:g} GB: serve it with fewer rows "
            "(--max-batch) or choose a model with a shorter context"
        )


def ready_batch(lm: LM, capacity: int) -> DecodeBatch:
    """A batch with its cache allocated (zeroing it is a parallel region) and its graphs compiled, if any."""
    batch = DecodeBatch(lm.model, capacity, lm.compiled)
    batch.warm_up()
    return batch


@dataclass
class Call:
    """Torch work other than decoding, run on the engine's thread between two steps; its result reaches `future`."""

    fn: Callable[[], Any]
    loop: asyncio.AbstractEventLoop = field(default_factory=asyncio.get_running_loop)
    future: asyncio.Future = field(default_factory=lambda: asyncio.get_running_loop().create_future())

    def settle(self, result: Any = None, error: BaseException | None = None) -> None:
        def settle_now():
            if not self.future.done():
                self.future.set_exception(error) if error else self.future.set_result(result)

        try:
            self.loop.call_soon_threadsafe(settle_now)
        except RuntimeError:
            pass


class Engine:
    """Continuous batching over one model: at most max_batch rows decode, at most max_waiting jobs wait."""

    def __init__(
        self,
        lm: LM,
        max_batch: int = 16,
        max_waiting: int = 64,
        delivery_interval: float = 0.02,
        idle_exit: float = 2.0,
    ):
        self.lm, self.max_batch, self.max_waiting = lm, max_batch, max_waiting
        self.delivery_interval, self.idle_exit = delivery_interval, idle_exit
        self.outbox: list[tuple[Job, Token | None]] = []  # tokens decoded and not yet handed to their readers
        self.delivered_at = 0.0
        self.batch = in_passing_thread(ready_batch, lm, max_batch)
        self.active: list[Job] = []  # job i decodes in row i of the batch
        self.waiting: queue.Queue[Job | Call | None] = queue.Queue()
        self.lock = threading.Lock()
        self.admitted = 0  # jobs submitted and not yet ended: decoding or waiting
        self.stopping = False
        self.steps = 0  # decode steps run: how tests see that a row left within one step
        self.thread: threading.Thread | None = None  # running while there is work, and idle_exit seconds after

    def _wake(self) -> None:
        """Start the thread if it has ended (called with the lock held, after putting work in `waiting`)."""
        if self.thread is None and not self.stopping:
            self.thread = threading.Thread(target=self._run, name="gpt-engine", daemon=True)
            self.thread.start()

    @property
    def healthy(self) -> bool:
        return not self.stopping

    @property
    def compiled(self) -> bool:
        return self.batch.compiled is not None and not self.batch.compiled.failed

    @property
    def decoding(self) -> int:
        """Rows in the batch now."""
        return len(self.active)

    def use_compiled(self, step: CompiledStep) -> None:
        """Decode through `step` from the next step on (its graphs best compiled on a batch of max_batch rows)."""
        self.batch.use_compiled(step)

    def submit(self, jobs: list[Job]) -> bool:
        """Admit all the jobs, or none of them when there is no room (the caller answers 'busy')."""
        with self.lock:
            if self.admitted + len(jobs) > self.max_batch + self.max_waiting:
                return False
            self.admitted += len(jobs)
            for job in jobs:
                job.row = Row(job.params, self.lm.tokenizer.boundary_id)
                self.waiting.put(job)
            self._wake()
        return True

    async def run(self, fn: Callable[[], T]) -> T:
        """fn() on the engine's thread, between two decode steps (torch work of the UI other than decoding)."""
        call = Call(fn)
        with self.lock:
            if self.stopping:
                raise RuntimeError("the engine has stopped")
            self.waiting.put(call)
            self._wake()
        return await call.future

    def close(self) -> None:
        """Stop the thread; requests still decoding or waiting end with finish_reason "error"."""
        with self.lock:
            self.stopping = True
            self.waiting.put(None)
            thread = self.thread
        if thread is not None:
            thread.join(timeout=10)
        self._drain()

    def _run(self) -> None:
        try:
            self._serve()
        finally:
            if self.thread is threading.current_thread():  # not an idle exit (after which another may be running)
                self.stopping = True
                self._hand_over()
                for i in reversed(range(len(self.active))):
                    self._end(i, "error")
                self._drain()

    def _drain(self) -> None:
        """End whatever still waits (the engine is stopping)."""
        while True:
            try:
                item = self.waiting.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, Call):
                item.settle(error=RuntimeError("the engine has stopped"))
            elif item is not None:
                item.row.finish_reason = "error"
                self._ended(item)

    def _serve(self) -> None:
        while not self.stopping:
            try:
                if not self._admit():
                    return
                if self.active:
                    self._step()
            except Exception:  # a fault in the shared step: end the requests in it, keep serving the next ones
                print(
                    f"gpt engine: decoding failed; ending {len(self.active)} request(s)\n{traceback.format_exc()}",
                    flush=True,
                )
                self._hand_over()  # what was decoded before the fault reaches its readers before their end
                for i in reversed(range(len(self.active))):
                    self._end(i, "error")

    def _admit(self) -> bool:
        """Move waiting jobs into free rows (waiting up to idle_exit while idle) and run waiting calls; False when the
        engine is closing or has been idle that long (the thread then ends, and `_wake` starts another).

        All the jobs waiting join in one go, so that prompts of one length fill their caches in one forward pass.
        """
        jobs = []
        while len(self.active) + len(jobs) < self.max_batch:
            idle = not self.active and not jobs
            try:
                job = self.waiting.get(timeout=self.idle_exit) if idle else self.waiting.get_nowait()
            except queue.Empty:
                if not idle:
                    break
                with self.lock:  # nothing put after this check finds the thread running: `_wake` starts one
                    if self.waiting.empty():
                        self.thread = None
                        return False
                continue
            if job is None:
                return False
            if isinstance(job, Call):
                try:
                    job.settle(job.fn())
                except Exception as e:
                    job.settle(error=e)
                continue
            if job.cancelled.is_set():
                self._ended(job)
                continue
            jobs.append(job)
        try:
            self._join(jobs)
        except Exception:  # one by one, so that a job that cannot start ends alone
            for job in jobs:
                try:
                    self._join([job])
                except Exception as e:
                    print(f"gpt engine: a request could not start ({type(e).__name__}: {e})", flush=True)
                    job.row.finish_reason = "error"
                    self._ended(job)
        return True

    def _join(self, jobs: list[Job]) -> None:
        """The jobs' rows join the batch, all of them or (raising) none."""
        for job in jobs:
            Sampler([job.params], self.lm.tokenizer.vocab_size, self.batch.device)  # fails here, not mid-batch
        if jobs:
            self.batch.add([job.prompt_ids for job in jobs], [job.params for job in jobs])
        self.active += jobs

    def _end(self, i: int, reason: str | None = None, deliveries: list | None = None) -> None:
        """Job i leaves the batch (the last row moves into its place) and its reader is told."""
        job = self.active[i]
        self.batch.remove(i)
        self.active[i] = self.active[-1]
        self.active.pop()
        if reason:
            job.row.finish_reason = job.row.finish_reason or reason
        self._ended(job, deliveries)

    def _ended(self, job: Job, deliveries: list | None = None) -> None:
        """Free the job's slot and tell its reader (now, or with this step's other deliveries)."""
        with self.lock:
            self.admitted -= 1
        if deliveries is None:
            post(job.loop, [(job.events, None)])
        else:
            deliveries.append((job, None))

    def _step(self) -> None:
        jobs, deliveries, done = self.active, self.outbox, []
        first = any(job.row.generated == 0 for job in jobs)
        tops = [job.top_logprobs for job in jobs]
        ready = step_rows(self.batch, [job.row for job in jobs], self.lm.tokenizer, tops, any(j.logprobs for j in jobs))
        self.steps += 1
        for i, (job, tokens) in enumerate(zip(jobs, ready)):
            deliveries += [(job, token) for token in tokens]
            if job.row.finish_reason or job.cancelled.is_set():
                done.append(i)
        for i in reversed(done):
            self._end(i, deliveries=deliveries)
        if first or done or not self.active or time.monotonic() - self.delivered_at >= self.delivery_interval:
            self._hand_over()

    def _hand_over(self) -> None:
        """The outbox to the readers: one wake-up per event loop."""
        deliveries, self.outbox, self.delivered_at = self.outbox, [], time.monotonic()
        for loop in {job.loop for job, _ in deliveries}:
            post(loop, [(job.events, item) for job, item in deliveries if job.loop is loop])
