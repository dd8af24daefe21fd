"""The model server: an OpenAI-compatible HTTP API with continuous batching, served beside the Gradio UI.

One engine thread owns the model. Every step it runs one batched forward pass over all active requests (each in its
own KV cache row, with its own sampling settings, random generator and stop rules), lets waiting requests join and
finished or abandoned ones leave. The HTTP handlers only validate, enqueue and relay tokens.

Endpoints: GET /health, GET /v1/models, POST /v1/completions, POST /v1/chat/completions (stream: true gives SSE).
"""

import asyncio
import hmac
import json
import math
import queue
import threading
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from gpt.chat import chat_prompt
from gpt.generate import LM, DecodeBatch, Row, SamplingParams, Token
from gpt.tokenizer import UnknownCharactersError

MAX_BODY_BYTES = 1 << 20
MAX_STOP_STRINGS = 4
MAX_N = 8
CHUNK_INTERVAL_S = 0.005  # a stream sends at most one chunk per client per 5 ms
CHAT_MAX_TOKENS = 256  # a chat reply's default length (completions default to 16, as OpenAI's)


@dataclass
class Job:
    """One sequence being generated: its settings and the events its HTTP handler reads."""

    prompt_ids: list[int]
    params: SamplingParams
    top_logprobs: int
    loop: asyncio.AbstractEventLoop  # the HTTP handler's loop, where `events` is read
    events: asyncio.Queue  # each Token, then None when finished
    row: Row = None
    cancelled: threading.Event = field(default_factory=threading.Event)


class Engine:
    """Continuous batching over one model: requests join between steps and leave when done or abandoned."""

    def __init__(self, lm: LM, max_batch: int = 16):
        self.lm, self.max_batch = lm, max_batch
        self.batch = DecodeBatch(lm.model, max_batch)
        self.active: list[Job] = []  # job i decodes in row i of the batch
        self.waiting: queue.Queue[Job | None] = queue.Queue()
        self.stopping = False
        self.thread = threading.Thread(target=self._run, name="gpt-engine", daemon=True)
        self.thread.start()

    def submit(self, job: Job) -> None:
        job.row = Row(job.params, self.lm.tokenizer.boundary_id)
        self.waiting.put(job)

    def close(self) -> None:
        self.stopping = True
        self.waiting.put(None)
        self.thread.join(timeout=10)

    def _leave(self, i: int) -> None:
        self.batch.remove(i)
        self.active[i] = self.active[-1]
        self.active.pop()

    def _run(self) -> None:
        while not self.stopping:
            try:
                while len(self.active) < self.max_batch:
                    job = self.waiting.get(block=not self.active)
                    if job is None:
                        return
                    if not job.cancelled.is_set():
                        self.batch.add(job.prompt_ids, job.params)
                        self.active.append(job)
            except queue.Empty:
                pass
            if self.active:
                try:
                    self._step()
                except Exception as e:  # end every request rather than leave them waiting forever
                    self._fail_all(f"{type(e).__name__}: {e}")

    def _fail_all(self, reason: str) -> None:
        print(f"gpt engine: decoding failed ({reason}); ending the active requests", flush=True)
        while self.active:
            job = self.active[-1]
            self._leave(len(self.active) - 1)
            job.row.finish_reason = job.row.finish_reason or "error"
            job.loop.call_soon_threadsafe(deliver, [(job.events, None)])

    def _step(self) -> None:
        tok = self.lm.tokenizer
        tokens, logprobs = self.batch.step(with_logprobs=any(j.top_logprobs for j in self.active))
        done, deliveries = [], []
        for i, (job, t) in enumerate(zip(self.active, tokens.tolist())):
            token = Token(t, tok.decode([t]))
            if logprobs is not None:
                token.logprob = float(logprobs[i, t])
                if job.top_logprobs:
                    values, ids = logprobs[i].topk(min(job.top_logprobs, tok.vocab_size))
                    token.top = [(tok.decode([k]), v) for v, k in zip(values.tolist(), ids.tolist())]
            deliveries += [(job, ready) for ready in job.row.push(token)]
            if job.row.finish_reason or job.cancelled.is_set():
                deliveries.append((job, None))
                done.append(i)
        for i in reversed(done):
            self._leave(i)
        for loop in {job.loop for job, _ in deliveries}:  # one wake-up per event loop per step, not per token
            loop.call_soon_threadsafe(deliver, [(job.events, item) for job, item in deliveries if job.loop is loop])


def deliver(items: list[tuple[asyncio.Queue, Token | None]]) -> None:
    for events, item in items:
        events.put_nowait(item)


class APIError(Exception):
    """An error answered in OpenAI's shape: {"error": {"message", "type", "param", "code"}}."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code

    def response(self) -> JSONResponse:
        kind = {401: "authentication_error", 404: "not_found_error", 429: "rate_limit_error"}.get(
            self.status, "invalid_request_error"
        )
        body = {"error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}}
        return JSONResponse(body, status_code=self.status)


def number(body: dict, name: str, default, low=None, high=None, integer=False, low_open=False):
    value = body.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise APIError(400, f"'{name}' must be a finite number", name)
    if integer and value != int(value):
        raise APIError(400, f"'{name}' must be a whole number", name)
    if low is not None and (value <= low if low_open else value < low):
        raise APIError(400, f"'{name}' must be {'>' if low_open else '>='} {low}, got {value}", name)
    if high is not None and value > high:
        raise APIError(400, f"'{name}' must be <= {high}, got {value}", name)
    return int(value) if integer else float(value)


def sampling_params(body: dict, max_tokens_limit: int) -> SamplingParams:
    stop = body.get("stop")
    stops = [stop] if isinstance(stop, str) else (stop or [])
    if not isinstance(stops, list) or any(not isinstance(s, str) or not s for s in stops):
        raise APIError(400, "'stop' must be a non-empty string or a list of them", "stop")
    if len(stops) > MAX_STOP_STRINGS:
        raise APIError(400, f"'stop' takes at most {MAX_STOP_STRINGS} strings", "stop")
    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise APIError(400, "'seed' must be a whole number", "seed")
    return SamplingParams(
        max_new_tokens=number(body, "max_tokens", 16, 1, max_tokens_limit, integer=True),
        temperature=number(body, "temperature", 1.0, 0, 2),
        top_p=number(body, "top_p", 1.0, 0, 1, low_open=True),
        top_k=number(body, "top_k", 0, 0, integer=True),
        repetition_penalty=number(body, "repetition_penalty", 1.0, 0, low_open=True),
        stop=tuple(stops),
        seed=seed,
    )


@dataclass
class Server:
    """Settings and state shared by the HTTP handlers."""

    model_id: str
    lm: LM | None = None
    engine: Engine | None = None
    api_key: str | None = None
    max_batch: int = 16
    max_waiting: int = 64
    max_tokens: int = 2048
    in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def ready(self, lm: LM) -> None:
        self.lm, self.engine = lm, Engine(lm, self.max_batch)


def create_app(server: Server) -> FastAPI:
    """The FastAPI app serving `server`; the Gradio UI can be mounted on it at '/'."""
    app = FastAPI(title="gpt model server", docs_url="/docs")

    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError):
        return exc.response()

    @app.middleware("http")
    async def guard(request: Request, call_next):
        if request.url.path.startswith("/v1/"):
            if server.api_key is not None:
                given = request.headers.get("authorization", "")
                if not hmac.compare_digest(given.encode(), f"Bearer {server.api_key}".encode()):
                    return APIError(401, "invalid or missing API key: send 'Authorization: Bearer KEY'").response()
            size = request.headers.get("content-length")
            if size and size.isdigit() and int(size) > MAX_BODY_BYTES:
                return APIError(413, f"request body over {MAX_BODY_BYTES} bytes").response()
        return await call_next(request)

    @app.get("/health")
    async def health():
        if server.engine is None:
            return JSONResponse({"status": "loading"}, status_code=503)
        return {"status": "ok", "model": server.model_id}

    @app.get("/v1/models")
    async def models():
        data = [{"id": server.model_id, "object": "model", "created": 0, "owned_by": "gpt"}]
        return {"object": "list", "data": data}

    async def read_body(request: Request) -> dict:
        if "application/json" not in request.headers.get("content-type", ""):
            raise APIError(415, "send the request as JSON (Content-Type: application/json)")
        raw = await request.body()
        if len(raw) > MAX_BODY_BYTES:
            raise APIError(413, f"request body over {MAX_BODY_BYTES} bytes")
        try:
            body = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise APIError(400, f"the body is not valid JSON ({e})") from None
        if not isinstance(body, dict):
            raise APIError(400, "the body must be a JSON object")
        if server.engine is None:
            raise APIError(503, "the model is still loading: retry in a moment")
        model = body.get("model", server.model_id)
        if model != server.model_id:
            raise APIError(404, f"model {model!r} does not exist: GET /v1/models lists it", "model", "model_not_found")
        return body

    @app.post("/v1/completions")
    async def completions(request: Request):
        body = await read_body(request)
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1:
            prompt = prompt[0]
        if not isinstance(prompt, str) or not prompt:
            raise APIError(400, "'prompt' must be a non-empty string", "prompt")
        logprobs = number(body, "logprobs", 0, 0, 5, integer=True)
        params = sampling_params(body, server.max_tokens)
        return await respond(request, body, params, prompt, "text_completion", logprobs)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        body = await read_body(request)
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise APIError(400, "'messages' must be a non-empty list", "messages")
        turns, user = [], None
        for m in messages:
            if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant"):
                raise APIError(400, "each message needs a role of system, user or assistant", "messages")
            if not isinstance(m.get("content"), str):
                raise APIError(400, "each message's content must be a string", "messages")
            if m["role"] == "user":
                user = m["content"]
            elif m["role"] == "assistant" and user is not None:
                turns.append((user, m["content"]))
                user = None
        if messages[-1]["role"] != "user":
            raise APIError(400, "the last message must be the user's", "messages")
        try:
            prompt = chat_prompt(server.lm, turns, messages[-1]["content"])
        except ValueError as e:
            raise APIError(400, str(e), "messages") from None
        if body.get("logprobs") not in (None, True, False):
            raise APIError(400, "'logprobs' must be true or false", "logprobs")
        chat_logprobs = bool(body.get("logprobs"))
        top = number(body, "top_logprobs", 0, 0, 5, integer=True) if chat_logprobs else 0
        params = sampling_params({"max_tokens": CHAT_MAX_TOKENS, **body}, server.max_tokens)
        params = replace(params, stop=params.stop + tuple(prompt.stop))
        return await respond(request, body, params, prompt.text, "chat.completion", top, chat_logprobs)

    async def respond(request, body, params, prompt, kind, top_logprobs, chat_logprobs=False):
        n = number(body, "n", 1, 1, MAX_N, integer=True)
        try:
            prompt_ids = server.lm.encode_prompt(prompt)
        except (UnknownCharactersError, ValueError) as e:
            raise APIError(400, str(e), "prompt" if kind == "text_completion" else "messages") from None
        with server.lock:
            if server.in_flight + n > server.max_batch + server.max_waiting:
                raise APIError(429, "the server is at capacity: retry in a moment", code="overloaded")
            server.in_flight += n
        loop = asyncio.get_running_loop()
        queues = [asyncio.Queue() for _ in range(n)]
        jobs = []
        for i in range(n):
            seed = None if params.seed is None else params.seed + i
            job = Job(prompt_ids, replace(params, seed=seed), top_logprobs, loop, queues[i])
            server.engine.submit(job)
            jobs.append(job)
        meta = {"id": f"{'cmpl' if kind == 'text_completion' else 'chatcmpl'}-{uuid.uuid4().hex[:24]}",
                "created": int(time.time()), "model": server.model_id}  # fmt: skip

        def release():
            for job in jobs:
                job.cancelled.set()
            with server.lock:
                server.in_flight -= n

        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            return StreamingResponse(
                stream(request, jobs, queues, meta, kind, chat_logprobs, include_usage, release),
                media_type="text/event-stream",
            )
        try:
            results = [await collect(request, q) for q in queues]
        finally:
            release()
        if results and any(r is None for r in results):
            return JSONResponse({}, status_code=499)
        choices = []
        for i, (job, tokens) in enumerate(zip(jobs, results)):
            choice = {"index": i, "finish_reason": job.row.finish_reason}
            text = "".join(t.text for t in tokens)
            if kind == "text_completion":
                choice.update(text=text, logprobs=completion_logprobs(tokens) if top_logprobs else None)
            else:
                choice.update(message={"role": "assistant", "content": text},
                              logprobs=chat_token_logprobs(tokens) if chat_logprobs else None)  # fmt: skip
            choices.append(choice)
        completion_tokens = sum(job.row.generated for job in jobs)
        usage = {"prompt_tokens": len(prompt_ids), "completion_tokens": completion_tokens,
                 "total_tokens": len(prompt_ids) + completion_tokens}  # fmt: skip
        return {**meta, "object": kind, "choices": choices, "usage": usage}

    async def collect(request: Request, q: asyncio.Queue) -> list[Token] | None:
        tokens = []
        while True:
            try:
                item = await asyncio.wait_for(q.get(), timeout=1.0)
            except TimeoutError:
                if await request.is_disconnected():
                    return None
                continue
            if item is None:
                return tokens
            tokens.append(item)

    async def stream(request, jobs, queues, meta, kind, chat_logprobs, include_usage, release) -> AsyncIterator[str]:
        chunk_kind = "text_completion" if kind == "text_completion" else "chat.completion.chunk"

        def chunk(choices, usage=None) -> str:
            payload = {**meta, "object": chunk_kind, "choices": choices}
            if include_usage:
                payload["usage"] = usage
            return f"data: {json.dumps(payload)}\n\n"

        pending: dict[int, asyncio.Future] = {}
        try:
            if kind != "text_completion":
                yield chunk([{"index": i, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
                             for i in range(len(jobs))])  # fmt: skip
            pending = {i: asyncio.ensure_future(q.get()) for i, q in enumerate(queues)}
            while pending:
                done, _ = await asyncio.wait(pending.values(), timeout=1.0, return_when=asyncio.FIRST_COMPLETED)
                if not done and await request.is_disconnected():
                    return
                for i in [i for i, f in pending.items() if f in done]:
                    tokens = [pending.pop(i).result()]
                    if tokens[-1] is not None:
                        await asyncio.sleep(CHUNK_INTERVAL_S)  # let a few steps' tokens gather: fewer, larger chunks
                    while tokens[-1] is not None and not queues[i].empty():
                        tokens.append(queues[i].get_nowait())
                    finished = tokens[-1] is None
                    tokens = [t for t in tokens if t is not None]
                    if tokens:
                        yield chunk([{"index": i, **delta(kind, tokens, chat_logprobs), "finish_reason": None}])
                    if finished:
                        finish = jobs[i].row.finish_reason
                        yield chunk([{"index": i, **delta(kind, [], False), "finish_reason": finish}])
                    else:
                        pending[i] = asyncio.ensure_future(queues[i].get())
            if include_usage:
                prompt_tokens = len(jobs[0].prompt_ids)
                completion_tokens = sum(j.row.generated for j in jobs)
                usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                         "total_tokens": prompt_tokens + completion_tokens}  # fmt: skip
                yield f"data: {json.dumps({**meta, 'object': chunk_kind, 'choices': [], 'usage': usage})}\n\n"
            yield "data: [DONE]\n\n"
        finally:
            for f in pending.values():
                f.cancel()
            release()

    return app


def delta(kind: str, tokens: list[Token], chat_logprobs: bool) -> dict:
    """A stream chunk's choice body for some tokens (none: the closing chunk)."""
    text = "".join(t.text for t in tokens)
    if kind == "text_completion":
        with_logprobs = tokens and tokens[0].logprob is not None
        return {"text": text, "logprobs": completion_logprobs(tokens) if with_logprobs else None}
    if not tokens:
        return {"delta": {}}
    return {"delta": {"content": text}, "logprobs": chat_token_logprobs(tokens) if chat_logprobs else None}


def completion_logprobs(tokens: list[Token]) -> dict:
    offsets, at = [], 0
    for t in tokens:
        offsets.append(at)
        at += len(t.text)
    return {
        "tokens": [t.text for t in tokens],
        "token_logprobs": [t.logprob for t in tokens],
        "top_logprobs": [dict(t.top) for t in tokens],
        "text_offset": offsets,
    }


def chat_token_logprobs(tokens: list[Token]) -> dict:
    def entry(text: str, logprob: float) -> dict:
        return {"token": text, "logprob": logprob, "bytes": list(text.encode())}

    return {
        "content": [{**entry(t.text, t.logprob), "top_logprobs": [entry(a, lp) for a, lp in t.top]} for t in tokens]
    }
