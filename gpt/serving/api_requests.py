"""An OpenAI request body, read and checked: the sampling controls, the prompt or messages, the stream options. Every
problem is an APIError answered as OpenAI answers, {"error": {"message", "type", "param", "code"}}, naming the field."""

from fastapi.responses import JSONResponse

from gpt.serving.sampling import SamplingParams

MAX_STOP_STRINGS = 4
MAX_STOP_CHARS = 1000


class APIError(Exception):
    """An error answered in OpenAI's shape: {"error": {"message", "type", "param", "code"}}."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code

    def response(self) -> JSONResponse:
        kind = {401: "authentication_error", 404: "not_found_error", 429: "rate_limit_error"}.get(self.status)
        kind = kind or ("server_error" if self.status >= 500 else "invalid_request_error")
        body = {"error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}}
        return JSONResponse(body, status_code=self.status)


def number(body: dict, name: str, default, low=None, high=None, integer=False, low_open=False):
    """body[name] checked against its range; whole numbers stay exact (no float conversion of huge integers)."""
    value = body.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise APIError(400, f"'{name}' must be a number", name)
    if isinstance(value, float) and not (value - value == 0):  # inf or nan
        raise APIError(400, f"'{name}' must be a finite number", name)
    if integer and isinstance(value, float) and not value.is_integer():
        raise APIError(400, f"'{name}' must be a whole number", name)
    if low is not None and (value <= low if low_open else value < low):
        raise APIError(400, f"'{name}' must be {'>' if low_open else '>='} {low}, got {value}", name)
    if high is not None and value > high:
        raise APIError(400, f"'{name}' must be <= {high}, got {value}", name)
    return int(value) if integer else float(value)


def flag(body: dict, name: str) -> bool:
    value = body.get(name)
    if value not in (None, True, False):
        raise APIError(400, f"'{name}' must be true or false", name)
    return bool(value)


UNSUPPORTED = {  # OpenAI fields this server does not implement, each with the value that asks for nothing
    "echo": False,
    "suffix": "",
    "best_of": 1,
    "logit_bias": {},
    "frequency_penalty": 0,
    "presence_penalty": 0,
}


def refuse_unsupported(body: dict) -> None:
    """A field the server would otherwise ignore is a 400 naming it, as vLLM answers: a client is never silently
    given something other than what it asked for."""
    for name, nothing in UNSUPPORTED.items():
        value = body.get(name)
        if value is None or (value == nothing and isinstance(value, bool) == isinstance(nothing, bool)):
            continue
        hint = " (repetition_penalty is)" if name.endswith("_penalty") else ""
        raise APIError(400, f"'{name}' is not supported by this server{hint}", name)


def sampling_params(body: dict, max_tokens_limit: int, default_max_tokens: int = 16) -> SamplingParams:
    refuse_unsupported(body)
    if body.get("max_completion_tokens") is not None:  # the chat API's current name for max_tokens
        body = {**body, "max_tokens": body["max_completion_tokens"]}
    stop = body.get("stop")
    stops = [stop] if isinstance(stop, str) else (stop or [])
    if not isinstance(stops, list) or any(not isinstance(s, str) or not s for s in stops):
        raise APIError(400, "'stop' must be a non-empty string or a list of them", "stop")
    if len(stops) > MAX_STOP_STRINGS or any(len(s) > MAX_STOP_CHARS for s in stops):
        raise APIError(400, f"'stop' takes at most {MAX_STOP_STRINGS} strings of {MAX_STOP_CHARS} characters", "stop")
    values = {
        "max_new_tokens": ("max_tokens", default_max_tokens),
        "temperature": ("temperature", 1.0),
        "top_p": ("top_p", 1.0),
        "top_k": ("top_k", 0),
        "repetition_penalty": ("repetition_penalty", 1.0),
        "seed": ("seed", None),
    }
    given = {field: body.get(api) if body.get(api) is not None else default for field, (api, default) in values.items()}
    try:  # the library checks every control; the API adds only its own bounds, below
        params = SamplingParams(**given, stop=tuple(stops))
    except ValueError as e:
        field = str(e).split()[0]
        name = values[field][0] if field in values else field
        raise APIError(400, f"'{name}'{str(e).removeprefix(field)}", name) from None
    limits = [
        ("max_tokens", params.max_new_tokens, 1, max_tokens_limit),
        ("temperature", params.temperature, 0, 2),
    ]
    for name, value, low, high in limits:
        if not low <= value <= high:
            raise APIError(400, f"'{name}' must be from {low} to {high} on this server, got {str(value)[:40]}", name)
    return params


def completion_prompt(body: dict) -> str:
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1:
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise APIError(400, "'prompt' must be a string", "prompt")
    return prompt


def chat_messages(body: dict) -> list[dict]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise APIError(400, "'messages' must be a non-empty list", "messages")
    for m in messages:
        if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant"):
            raise APIError(400, "each message needs a role of system, user or assistant", "messages")
        content = m.get("content")
        parts = content if isinstance(content, list) else [content]
        if not all(isinstance(p, str) or (isinstance(p, dict) and isinstance(p.get("text"), str)) for p in parts):
            raise APIError(400, "each message's content must be a string or a list of text parts", "messages")
    if messages[-1]["role"] != "user":
        raise APIError(400, "the last message must be the user's", "messages")
    return messages


def stream_options(body: dict) -> bool:
    """Whether a stream ends with a usage chunk."""
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise APIError(400, "'stream_options' must be an object such as {\"include_usage\": true}", "stream_options")
    return flag(options or {}, "include_usage")
