"""The model server: an OpenAI-compatible HTTP API over the continuous-batching engine (gpt/serving/engine.py).

The handlers only parse and check requests (gpt/serving/api_requests.py), hand jobs to the engine and relay tokens.
Every bad request is a 4xx JSON error in OpenAI's shape; a request can never stop the engine or keep a slot (the
engine owns both).

Endpoints: GET /health, GET /v1/models, POST /v1/completions, POST /v1/chat/completions (stream: true gives SSE).
Every model of the catalog is served, by the request's `model` (the default when it is left out), each by its engine.
"""

import asyncio
import hmac
import json
import time
import traceback
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from gpt.serving.api_requests import (
    APIError,
    chat_messages,
    completion_prompt,
    flag,
    number,
    sampling_params,
    stream_options,
)
from gpt.serving.catalog import AtCapacity, Catalog, ModelTooLarge, ModelUnavailable, NotOffered, Served
from gpt.serving.chat import chat_prompt, message_text, turns_of
from gpt.serving.engine import Job
from gpt.serving.sampling import SamplingParams, Token

MAX_BODY_BYTES = 1 << 20
MAX_N = 8
DISCONNECT_POLL_S = 0.25  # how often a request that is not streaming checks that its client is still there
CHAT_MAX_TOKENS = 256  # a chat reply's default length (completions default to 16, as OpenAI's)


@dataclass
class Server:
    """Settings and state shared by the HTTP handlers: ready once the catalog's default model is loaded."""

    catalog: Catalog
    api_key: str | None = None
    max_tokens: int = 2048
    load_error: str | None = None  # why the default model could not be loaded


# Request parsing.


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def read_body(request: Request, server: Server) -> tuple[dict, Served]:
    """The JSON object of a request, read with a size cap (a chunked body is cut off, not buffered whole), and the
    model it names, loaded."""
    if media_type(request) != "application/json":
        raise APIError(415, "send the request as JSON (Content-Type: application/json)")
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_BODY_BYTES:
            raise APIError(413, f"request body over {MAX_BODY_BYTES} bytes")
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError) as e:  # malformed, not UTF-8, an over-long integer, nested too deep
        raise APIError(400, f"the body is not valid JSON ({str(e)[:200]})") from None
    if not isinstance(body, dict):
        raise APIError(400, "the body must be a JSON object")
    check_ready(server)
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise APIError(400, "'model' must be a string: GET /v1/models lists them", "model")
    try:
        served = await asyncio.to_thread(server.catalog.get, model or server.catalog.default)
    except NotOffered as e:
        raise APIError(404, f"{e} (GET /v1/models lists them)", "model", "model_not_found") from None
    except ModelTooLarge as e:
        raise APIError(400, str(e), "model") from None
    except ModelUnavailable as e:
        raise APIError(503, f"model {model!r} cannot be loaded now: {e}", "model") from None
    if not served.engine.healthy:
        raise APIError(503, f"the decoding engine of {served.name!r} has stopped: restart the server")
    return body, served


def check_ready(server: Server) -> None:
    if server.catalog.loaded(server.catalog.default) is None:
        raise APIError(503, "the model is still loading: retry in a moment")


# Responses.


def usage(prompt_tokens: int, jobs: list[Job]) -> dict:
    completion_tokens = sum(job.row.generated for job in jobs)
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def completion_logprobs(tokens: list[Token]) -> dict:
    offsets, at = [], 0
    for t in tokens:
        offsets.append(at)
        at += len(t.text)
    return {
        "tokens": [t.piece for t in tokens],
        "token_logprobs": [t.logprob for t in tokens],
        "top_logprobs": [dict(t.top) for t in tokens],
        "text_offset": offsets,
    }


def chat_token_logprobs(tokens: list[Token]) -> dict:
    def entry(text: str, logprob: float, raw: bytes) -> dict:
        return {"token": text, "logprob": logprob, "bytes": list(raw)}

    return {
        "content": [
            {
                **entry(t.piece, t.logprob, t.bytes or t.text.encode()),
                "top_logprobs": [entry(a, lp, a.encode()) for a, lp in t.top],
            }
            for t in tokens
        ]
    }


def delta(chat: bool, tokens: list[Token], with_logprobs: bool) -> dict:
    """A stream chunk's choice body for some tokens (none: the closing chunk)."""
    text = "".join(t.text for t in tokens)
    if not chat:
        return {"text": text, "logprobs": completion_logprobs(tokens) if with_logprobs and tokens else None}
    if not tokens:
        return {"delta": {}}
    return {"delta": {"content": text}, "logprobs": chat_token_logprobs(tokens) if with_logprobs else None}


def choice(chat: bool, index: int, job: Job, tokens: list[Token], with_logprobs: bool, prefix: str = "") -> dict:
    text = prefix + "".join(t.text for t in tokens)
    out = {"index": index, "finish_reason": job.row.finish_reason}
    if chat:
        logprobs = chat_token_logprobs(tokens) if with_logprobs else None
        return {**out, "message": {"role": "assistant", "content": text}, "logprobs": logprobs}
    return {**out, "text": text, "logprobs": completion_logprobs(tokens) if with_logprobs else None}


async def until_disconnected(request: Request) -> None:
    while not await request.is_disconnected():
        await asyncio.sleep(DISCONNECT_POLL_S)


async def drain(job: Job) -> list[Token]:
    return [token async for token in job.tokens()]


async def collect(request: Request, jobs: list[Job]) -> list[list[Token]] | None:
    """Every job's tokens once all are finished; None (and the jobs cancelled) if the client goes away first."""
    results = asyncio.ensure_future(asyncio.gather(*(drain(job) for job in jobs)))
    gone = asyncio.ensure_future(until_disconnected(request))
    try:
        await asyncio.wait([results, gone], return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        if not results.done():
            results.cancel()
            for job in jobs:
                job.cancelled.set()
    return results.result() if results.done() and not results.cancelled() else None


async def stream(
    request: Request,
    jobs: list[Job],
    meta: dict,
    chat: bool,
    with_logprobs: bool,
    include_usage: bool,
    prefix: str = "",
) -> AsyncIterator[str]:
    """SSE chunks in OpenAI's format; the tokens of one hand-over from the engine go in one chunk."""
    kind = "chat.completion.chunk" if chat else "text_completion"

    def chunk(choices, **extra) -> str:
        return f"data: {json.dumps({**meta, 'object': kind, 'choices': choices, **extra})}\n\n"

    pending: dict[int, asyncio.Future] = {}
    try:
        if chat:
            yield chunk(
                [
                    {"index": i, "delta": {"role": "assistant", "content": prefix}, "finish_reason": None}
                    for i in range(len(jobs))
                ]
            )
        pending = {i: asyncio.ensure_future(job.events.get()) for i, job in enumerate(jobs)}
        while pending:
            done, _ = await asyncio.wait(pending.values(), timeout=1.0, return_when=asyncio.FIRST_COMPLETED)
            if not done and await request.is_disconnected():
                return
            for i in [i for i, f in pending.items() if f in done]:
                tokens = [pending.pop(i).result()]
                while tokens[-1] is not None and not jobs[i].events.empty():
                    tokens.append(jobs[i].events.get_nowait())
                finished = tokens[-1] is None
                tokens = [t for t in tokens if t is not None]
                if tokens:
                    yield chunk([{"index": i, **delta(chat, tokens, with_logprobs), "finish_reason": None}])
                if finished:
                    yield chunk([{"index": i, **delta(chat, [], False), "finish_reason": jobs[i].row.finish_reason}])
                else:
                    pending[i] = asyncio.ensure_future(jobs[i].events.get())
        if include_usage:
            yield chunk([], usage=usage(len(jobs[0].prompt_ids), jobs))
        yield "data: [DONE]\n\n"
    finally:
        for f in pending.values():
            f.cancel()
        for job in jobs:
            job.cancelled.set()


async def respond(
    request: Request,
    served: Served,
    body: dict,
    prompt: str,
    params: SamplingParams,
    chat: bool,
    top_logprobs: int,
    with_logprobs: bool,
    prefix: str = "",
):
    """Check the rest of the request, hand its n jobs to the engine, answer at once or as a stream."""
    n = number(body, "n", 1, 1, MAX_N, integer=True)
    streaming = flag(body, "stream")
    include_usage = stream_options(body)
    try:
        submitted = served.submit(prompt, params, n, top_logprobs, with_logprobs)
    except ValueError as e:  # an unknown character, an empty prompt
        raise APIError(400, str(e), "messages" if chat else "prompt") from None
    except AtCapacity:
        raise APIError(429, "the server is at capacity: retry in a moment", code="overloaded") from None
    jobs = submitted.jobs
    meta = {
        "id": f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:24]}",
        "created": int(time.time()),
        "model": served.name,
    }
    if streaming:
        events = stream(request, jobs, meta, chat, with_logprobs, include_usage, prefix)
        return StreamingResponse(events, media_type="text/event-stream")
    results = await collect(request, jobs)
    if results is None:
        return JSONResponse({}, status_code=499)  # the client is gone; nobody reads this
    if any(job.row.finish_reason == "error" for job in jobs):
        raise APIError(500, "generation failed on the server (logged there): retry, or report it")
    choices = [choice(chat, i, job, t, with_logprobs, prefix) for i, (job, t) in enumerate(zip(jobs, results))]
    return {
        **meta,
        "object": "chat.completion" if chat else "text_completion",
        "choices": choices,
        "usage": usage(submitted.prompt_tokens, jobs),
    }


# The app.


def create_app(server: Server) -> FastAPI:
    """The FastAPI app serving `server`; the Gradio UI can be mounted on it at '/'."""
    app = FastAPI(title="gpt model server", docs_url="/docs")
    app.state.server = server

    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError):
        return exc.response()

    app.add_middleware(Guard, server=server)
    app.get("/health")(health)
    app.get("/v1/models")(models)
    app.post("/v1/completions")(completions)
    app.post("/v1/chat/completions")(chat_completions)
    return app


def key_matches(authorization: str, api_key: str) -> bool:
    return hmac.compare_digest(authorization.encode(), f"Bearer {api_key}".encode())


API_DOCS = ("/docs", "/docs/oauth2-redirect", "/openapi.json", "/redoc")  # describe the API: behind its key too


class Guard:
    """ASGI middleware for /v1/* and the API's docs: the API key, the declared body size, and a JSON 500 for a real
    fault (logged).

    Plain ASGI rather than FastAPI's http middleware, which would hide a client's disconnect from the handlers.
    """

    def __init__(self, app, server: Server):
        self.app, self.server = app, server

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not (scope["path"].startswith("/v1/") or scope["path"] in API_DOCS):
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        if self.server.api_key is not None and not key_matches(headers.get("authorization", ""), self.server.api_key):
            error = APIError(401, "invalid or missing API key: send 'Authorization: Bearer KEY'")
            return await error.response()(scope, receive, send)
        size = headers.get("content-length", "")
        if size.isdigit() and int(size) > MAX_BODY_BYTES:
            return await APIError(413, f"request body over {MAX_BODY_BYTES} bytes").response()(scope, receive, send)
        started = False

        async def tracked_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracked_send)
        except Exception:
            print(f"gpt server: {scope['method']} {scope['path']} failed\n{traceback.format_exc()}", flush=True)
            if not started:
                await APIError(500, "internal error (logged on the server)").response()(scope, receive, send)


def engine_state(served: Served) -> dict:
    engine = served.engine
    return {"compiled": engine.compiled, "requests": engine.admitted, "decoding": engine.decoding}


async def health(request: Request):
    """Ready once the default model is loaded; its engine's state (compiled yet, requests, rows decoding), and each
    loaded model's."""
    server: Server = request.app.state.server
    catalog = server.catalog
    if server.load_error:
        return JSONResponse({"status": "error", "error": server.load_error}, status_code=503)
    default = catalog.loaded(catalog.default)
    if default is None:
        return JSONResponse({"status": "loading"}, status_code=503)
    if not default.engine.healthy:
        return JSONResponse({"status": "error", "error": "the decoding engine has stopped"}, status_code=503)
    loaded = {name: engine_state(served) for name, served in list(catalog.served.items())}
    return {"status": "ok", "model": catalog.default, **engine_state(default), "loaded": loaded}


async def models(request: Request):
    """Every model on offer; `loaded` says which are in memory (the others load on their first request)."""
    server: Server = request.app.state.server
    check_ready(server)
    names = [server.catalog.default, *(n for n in server.catalog.sources if n != server.catalog.default)]
    data = [
        {"id": n, "object": "model", "created": 0, "owned_by": "gpt", "loaded": server.catalog.loaded(n) is not None}
        for n in names
    ]
    return {"object": "list", "data": data}


async def completions(request: Request):
    server: Server = request.app.state.server
    body, served = await read_body(request, server)
    prompt = completion_prompt(body)
    logprobs = number(body, "logprobs", 0, 0, 5, integer=True)
    params = sampling_params(body, server.max_tokens)
    return await respond(request, served, body, prompt, params, False, logprobs, logprobs > 0)


async def chat_completions(request: Request):
    server: Server = request.app.state.server
    body, served = await read_body(request, server)
    messages = chat_messages(body)
    try:
        system = "\n".join(message_text(m.get("content")) for m in messages if m.get("role") == "system")
        prompt = chat_prompt(served.lm, turns_of(messages[:-1]), message_text(messages[-1]["content"]), system=system)
    except ValueError as e:
        raise APIError(400, str(e), "messages") from None
    with_logprobs = flag(body, "logprobs")
    top = number(body, "top_logprobs", 0, 0, 5, integer=True) if with_logprobs else 0
    params = sampling_params(body, server.max_tokens, CHAT_MAX_TOKENS)
    params = replace(params, stop=params.stop + tuple(prompt.stop))
    return await respond(request, served, body, prompt.text, params, True, top, with_logprobs, prompt.reply_prefix)
