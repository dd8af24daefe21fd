"""Hardening: no request can stop the engine, keep a slot, or slow everyone down; the limits hold on every path."""

import asyncio
import json
import select
import socket
import threading
import time

import httpx
import pytest
import torch

import gpt
from gpt.serving.engine import Engine, Job
from gpt.serving.sampling import SamplingParams, StopStrings, Token

SEED_OVERFLOW = 18446744073709551616  # 2**64


@pytest.fixture(scope="module")
def lm(tiny_model):
    return gpt.load(tiny_model, device="cpu")


@pytest.fixture(scope="module")
def api(lm, serving):
    with serving(lm, max_batch=4, max_waiting=4, max_tokens=5000) as (url, server):
        yield url, server


def post(url: str, body, **kw) -> httpx.Response:
    data = body if isinstance(body, (str, bytes)) else json.dumps(body)
    headers = kw.pop("headers", {"content-type": "application/json"})
    return httpx.post(f"{url}/v1/completions", content=data, headers=headers, timeout=30, **kw)


def wait_idle(server, seconds: float = 5) -> bool:
    deadline = time.time() + seconds
    while (server.engine.admitted or server.engine.active) and time.time() < deadline:
        time.sleep(0.02)
    return server.engine.admitted == 0 and not server.engine.active


def still_serves(url: str) -> None:
    r = post(url, {"prompt": "ROMEO:", "max_tokens": 8, "temperature": 0})
    assert r.status_code == 200, r.text
    assert len(r.json()["choices"][0]["text"]) == 8 and r.json()["choices"][0]["finish_reason"] == "length"
    assert httpx.get(f"{url}/health").status_code == 200


@pytest.mark.parametrize(
    "extra",
    [
        {"seed": SEED_OVERFLOW},
        {"seed": -(2**63) - 1},
        {"seed": 10**30},
        {"max_tokens": 10**30},
        {"temperature": 10**400},
        {"top_k": 1.5},
        {"n": 10**30},
        {"stream_options": True, "stream": True},
        {"stream_options": {"include_usage": "yes"}, "stream": True},
        {"stream": "yes"},
        {"logprobs": 10**30},
        {"repetition_penalty": 1e300},
        {"repetition_penalty": 1e-300},
    ],
)
def test_out_of_range_values_are_4xx_and_the_engine_keeps_running(api, extra):
    url, server = api
    r = post(url, {"prompt": "ROMEO:", "max_tokens": 1, **extra})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == next(iter(extra)) or "stream" in extra
    still_serves(url)
    assert wait_idle(server)


@pytest.mark.parametrize(
    "field, value",
    [
        ("echo", True),
        ("logit_bias", {"5": 100}),
        ("frequency_penalty", 0.5),
        ("presence_penalty", -1),
        ("suffix", "END"),
        ("best_of", 3),
    ],
)
def test_an_openai_field_the_server_does_not_implement_is_a_400_naming_it(api, field, value):
    url, _ = api
    r = post(url, {"prompt": "ROMEO:", "max_tokens": 1, field: value})
    assert r.status_code == 400 and r.json()["error"]["param"] == field, r.text
    assert "not supported" in r.json()["error"]["message"]
    defaults = {"echo": False, "logit_bias": {}, "frequency_penalty": 0, "presence_penalty": 0.0, "best_of": 1}
    assert post(url, {"prompt": "ROMEO:", "max_tokens": 1, **defaults}).status_code == 200  # asking for nothing is fine


def test_max_completion_tokens_bounds_a_chat_reply(api):
    url, _ = api
    body = {"messages": [{"role": "user", "content": "the night"}], "max_completion_tokens": 3, "temperature": 0}
    r = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60)
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] <= 3, r.text


@pytest.mark.parametrize(
    "raw",
    [
        '{"prompt": "a", "max_tokens": ' + "9" * 4301 + "}",
        '{"prompt": "a", "temperature": 1' + "0" * 400 + "}",
        "[" * 50000 + "]" * 50000,
        '{"prompt": "a", "x": ' + "[" * 50000 + "]" * 50000 + "}",
    ],
    ids=["4301-digit-integer", "401-digit-integer", "nested-50k", "nested-50k-in-object"],
)
def test_pathological_json_is_400(api, raw):
    url, _ = api
    r = post(url, raw)
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error", r.text


def test_largest_seeds_work_with_n(api):
    url, _ = api
    for seed in (2**63 - 1, -(2**63)):
        r = post(url, {"prompt": "ROMEO:", "max_tokens": 5, "seed": seed, "n": 3})
        assert r.status_code == 200 and len(r.json()["choices"]) == 3, r.text


def test_huge_top_k_only_affects_its_own_request(api, lm):
    url, _ = api
    with httpx.stream(
        "POST",
        f"{url}/v1/completions",
        json={"prompt": "JULIET:", "max_tokens": 300, "stream": True, "temperature": 0},
        timeout=30,
    ) as other:
        lines = other.iter_lines()
        next(lines)
        r = post(url, {"prompt": "ROMEO:", "max_tokens": 20, "top_k": 2**64, "temperature": 0})
        assert r.status_code == 200 and r.json()["choices"][0]["finish_reason"] == "length", r.text
        assert r.json()["choices"][0]["text"] == lm.generate("ROMEO:", max_new_tokens=20, temperature=0)
        finishes = [json.loads(x[6:])["choices"][0]["finish_reason"] for x in lines if x.startswith("data: {")]
    assert finishes[-1] == "length"


def test_streams_that_are_never_read_give_their_slots_back(api):
    """80 cheap streams whose responses are dropped at once: capacity (8) must come back every time."""
    url, server = api
    body = {"prompt": "ROMEO:", "max_tokens": 1, "stream": True, "stream_options": {"include_usage": True}}
    for _ in range(80):
        with httpx.stream("POST", f"{url}/v1/completions", json=body, timeout=30) as r:
            assert r.status_code == 200
    assert wait_idle(server)
    still_serves(url)


@pytest.mark.parametrize("together", [False, True])
def test_a_job_that_cannot_start_ends_alone(lm, together):
    """A job the batch rejects (a token id outside the vocabulary) ends with 'error'; the others go on, also those
    that arrive with it (the engine admits the jobs waiting together, then one by one if that fails)."""
    engine = Engine(lm, max_batch=4)

    async def run():
        loop = asyncio.get_running_loop()
        good, other = (Job([1, 2, 3], SamplingParams(max_new_tokens=30, temperature=0), 0, loop) for _ in range(2))
        bad = Job([10**6], SamplingParams(max_new_tokens=30), 0, loop)
        if together:
            assert engine.submit([good, bad, other])
        else:
            assert engine.submit([good]) and engine.submit([bad]) and engine.submit([other])
        tokens = await asyncio.gather(*(drain(job) for job in (good, bad, other)))
        return good, bad, other, tokens

    try:
        good, bad, other, (good_tokens, bad_tokens, other_tokens) = asyncio.run(run())
        assert bad.row.finish_reason == "error" and bad_tokens == []
        assert good.row.finish_reason == other.row.finish_reason == "length"
        assert len(good_tokens) == 30 and other_tokens == good_tokens
        assert engine.healthy and engine.admitted == 0
    finally:
        engine.close()


async def drain(job: Job) -> list[Token]:
    return [t async for t in iterate(job.events)]


async def iterate(events: asyncio.Queue):
    while (item := await events.get()) is not None:
        yield item


def test_health_reports_a_stopped_engine(lm, serving):
    with serving(lm) as (url, server):
        assert httpx.get(f"{url}/health").status_code == 200
        server.engine.close()
        r = httpx.get(f"{url}/health")
        assert r.status_code == 503 and r.json()["status"] == "error"
        assert post(url, {"prompt": "ROMEO:"}).status_code == 503


def test_stop_strings_are_capped(api):
    url, _ = api
    r = post(url, {"prompt": "ROMEO:", "stop": ["a" * 250_000] * 4})
    assert r.status_code == 400 and r.json()["error"]["param"] == "stop"


class CountingStr(str):
    """A stop string that counts how often the matcher looks into it (a deterministic measure of work)."""

    looks = 0

    def __getitem__(self, key):
        CountingStr.looks += 1
        return str.__getitem__(self, key)


def test_stop_string_matching_does_not_grow_with_their_length():
    """Four 1000-character stop strings that keep nearly matching cost what four short ones do, per token."""

    def looks(length: int) -> int:
        stops = StopStrings(tuple(CountingStr("a" * (length - 1) + c) for c in "bcde"))
        CountingStr.looks = 0
        for _ in range(5_000):
            stops.feed(Token(0, "a"))
        return CountingStr.looks

    assert looks(1000) <= looks(10) <= 5_000 * 4 * 3


@pytest.mark.parametrize("seed", range(30))
def test_stop_strings_agree_with_a_plain_search(seed):
    import random

    rng = random.Random(seed)
    text = "".join(rng.choice("ab") for _ in range(60))
    stops = tuple({"".join(rng.choice("ab") for _ in range(rng.randint(1, 6))) for _ in range(rng.randint(1, 3))})
    matcher, emitted, stopped = StopStrings(stops), "", False
    for ch in text:
        out, stopped = matcher.feed(Token(0, ch))
        emitted += "".join(t.text for t in out)
        if stopped:
            break
    ends = [text.find(s) + len(s) for s in stops if s in text]
    if ends:  # the first stop string to complete ends the text just before it begins
        end = min(ends)
        first = max((s for s in stops if text.find(s) + len(s) == end), key=len)
        assert stopped and emitted == text[: end - len(first)]
    else:
        assert not stopped and emitted + "".join(t.text for t in matcher.flush()) == text


def test_a_chunked_body_over_the_limit_is_answered_413_before_it_is_all_sent(api):
    url, _ = api
    host, port = url.removeprefix("http://").split(":")
    chunk = b"10000\r\n" + b" " * 0x10000 + b"\r\n"  # 64 KiB chunks
    sent, answer = 0, b""
    with socket.create_connection((host, int(port))) as s:
        s.sendall(
            b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        while sent < 64 << 20 and not answer:
            try:
                s.sendall(chunk)
            except OSError:
                break
            sent += 0x10000
            if select.select([s], [], [], 0)[0]:
                answer = s.recv(4096)
        answer = answer or s.recv(4096)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:100]
    assert sent < 32 << 20  # answered long before the whole 64 MiB (socket buffers hold a few MiB)


def test_a_client_that_leaves_a_plain_request_frees_its_row(api):
    url, server = api
    host, port = url.removeprefix("http://").split(":")
    body = json.dumps({"prompt": "ROMEO:", "max_tokens": 5000, "temperature": 1.0}).encode()
    with socket.create_connection((host, int(port))) as s:
        s.sendall(
            b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        deadline = time.time() + 5
        while not server.engine.active and time.time() < deadline:
            time.sleep(0.01)
        assert server.engine.active
    assert wait_idle(server, 3)


@pytest.mark.parametrize("content_type", ["text/plain; application/json", "text/plain", "application/jsonx"])
def test_only_json_is_accepted(api, content_type):
    url, _ = api
    assert post(url, {"prompt": "a"}, headers={"content-type": content_type}).status_code == 415


def test_models_is_503_while_loading():
    from fastapi.testclient import TestClient

    from gpt.serving.catalog import Catalog
    from gpt.serving.server import Server, create_app

    assert TestClient(create_app(Server(Catalog("play")))).get("/v1/models").status_code == 503


def test_api_only_with_a_bad_model_exits_with_one_line(app_process):
    with app_process("--api-only", env={"MODEL_ID": "/no/such/model"}) as app:
        assert app.proc.wait(timeout=60) != 0
        lines = [line for line in app.output().splitlines() if line.strip()]
    assert "Traceback" not in app.output() and lines[-1].startswith("error:") and "no/such/model" in lines[-1]


def test_concurrent_streams_and_drops_leave_every_slot_free(api):
    """Clients that drop mid-stream, from several threads at once: every slot comes back."""
    url, server = api

    def drop():
        body = {"prompt": "ROMEO:", "max_tokens": 2000, "stream": True}
        with httpx.stream("POST", f"{url}/v1/completions", json=body, timeout=30) as r:
            if r.status_code == 200:
                for _ in r.iter_lines():
                    break

    threads = [threading.Thread(target=drop) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wait_idle(server)
    still_serves(url)


def test_a_real_fault_is_a_logged_json_500_and_the_server_goes_on(lm, serving, monkeypatch, capsys):
    with serving(lm) as (url, server):

        def fault(prompt):
            raise RuntimeError("disk on fire")

        monkeypatch.setattr(server.lm, "encode_prompt", fault)
        r = post(url, {"prompt": "ROMEO:"})
        assert r.status_code == 500 and r.json()["error"]["type"] == "server_error"
        assert "disk on fire" not in r.text and "disk on fire" in capsys.readouterr().out
        monkeypatch.undo()
        still_serves(url)


def crafted_folder(root, switches: dict | None = None, **config_changes):
    """A real small model folder (a GPT with these switches) whose config.json is then edited as an attacker would."""
    from gpt.models.model import GPT, GPTConfig
    from gpt.storage.folder import write_weights

    folder = root / "crafted"
    folder.mkdir()
    config = GPTConfig(vocab_size=20, block_size=16, n_layer=2, n_head=2, n_embd=32, **(switches or {}))
    write_weights(GPT(config), folder)
    (folder / "tokenizer.json").write_text(json.dumps({"type": "char", "chars": [chr(97 + i) for i in range(20)]}))
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(config | config_changes))
    return folder


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"n_layer": 100_000}, "n_layer must be from 1 to 1,024"),
        ({"n_embd": 1 << 16, "n_head": 1, "n_layer": 1000}, "over this loader's limit"),
        ({"vocab_size": 10**12}, "vocab_size must be from 1"),
        ({"n_positions": 10**9}, "block_size must be from 1"),
        ({"n_head": 0}, "n_head must be from 1"),
        ({"vocab_size": -5}, "vocab_size must be from 1"),
        ({"n_embd": "32"}, "n_embd must be a whole number"),
        ({"n_layer": 2.0}, "n_layer must be a whole number"),
        ({"resid_pdrop": 2}, "dropout must be a number in"),
        ({"bias": "no"}, "bias must be true or false"),
        ({"tie_word_embeddings": "no"}, "tie_word_embeddings must be true or false"),
        ({"tie_word_embeddings": False}, "does not match config.json .missing lm_head.weight"),
        ({"n_head": 3}, "not divisible by n_head"),
        ({"n_layer": 3}, "does not match config.json .missing transformer.h.2"),
        ({"n_embd": 64}, "does not match config.json"),
        ({"vocab_size": 21}, "wte.weight is .20, 32., config.json needs .21, 32."),
        ({"model_type": "mistral"}, "this library runs gpt2, llama and qwen3 ones"),
        ({"activation_function": "gelu_new"}, "GPT-2 variant"),
        ({"model_type": "gpt-window", "arch": "lstm", "block_size": 3, "n_hidden": 8}, "arch must be one of"),
        ({"model_type": "gpt-window", "arch": "wavenet", "block_size": 6, "n_hidden": 8}, "power of two"),
        ({"model_type": "gpt-window", "arch": "mlp", "block_size": 3, "n_hidden": 10**9}, "n_hidden must be from 1"),
        ({"model_type": "gpt-window", "arch": "mlp", "block_size": 3, "n_hidden": "8"}, "n_hidden must be a whole"),
        ({"model_type": "gpt-window", "arch": "mlp", "block_size": 3}, "lacks n_hidden"),
        ({"model_type": "gpt-window", "arch": "mlp", "block_size": 3, "n_hidden": 8}, "does not match config.json"),
    ],
)
def test_crafted_configs_are_refused_before_the_model_is_built(tmp_path, changes, message):
    from gpt.storage.folder import ModelFileError

    with pytest.raises(ModelFileError, match=message):
        gpt.load(crafted_folder(tmp_path, **changes), device="cpu")


MODERN = {"rotary": True, "rms_norm": True, "mlp": "swiglu"}


@pytest.mark.parametrize(
    "switches, changes, message",
    [
        (MODERN, {"num_key_value_heads": 1}, "llama variant this library does not run: num_key_value_heads 1"),
        (MODERN, {"hidden_act": "gelu"}, "hidden_act 'gelu' .needs 'silu'"),
        (MODERN, {"intermediate_size": 100}, "intermediate_size 100 .needs 128"),
        (MODERN, {"rope_parameters": {"rope_type": "yarn", "rope_theta": 1e4, "factor": 4}}, "rope_type 'yarn'"),
        (MODERN, {"hidden_size": "32"}, "n_embd must be a whole number"),
        (MODERN, {"num_hidden_layers": 3}, "does not match config.json .missing model.layers.2"),
        (MODERN, {"model_type": "qwen3"}, "does not match config.json .missing model.layers.0.self_attn.k_norm"),
        ({**MODERN, "qk_norm": True}, {"model_type": "llama"}, "unexpected model.layers.0.self_attn.k_norm"),
        ({"mlp": "relu2"}, {"mlp": "tanh"}, "mlp must be one of gelu, swiglu, relu2"),
        ({"mlp": "relu2"}, {"rotary": "yes"}, "rotary must be true or false"),
        ({"rotary": True, "mlp": "relu2"}, {"n_head": 32}, "rotary positions need an even head size"),
    ],
)
def test_crafted_configs_of_the_modern_block_are_refused(tmp_path, switches, changes, message):
    from gpt.storage.folder import ModelFileError

    with pytest.raises(ModelFileError, match=message):
        gpt.load(crafted_folder(tmp_path, switches, **changes), device="cpu")


def test_a_config_that_is_a_list_is_refused(tmp_path):
    from gpt.storage.folder import ModelFileError

    folder = crafted_folder(tmp_path)
    (folder / "config.json").write_text("[1, 2, 3]")
    with pytest.raises(ModelFileError, match="config.json must be a JSON object"):
        gpt.load(folder, device="cpu")


def load_in_a_process(folder) -> tuple[str, int]:
    """gpt.load of a folder in a fresh process: the refusal it printed, and its peak memory in MiB."""
    import subprocess
    import sys

    code = (
        "import resource, gpt\n"
        "from gpt.storage.folder import ModelFileError\n"
        f"try:\n    gpt.load({str(folder)!r}, device='cpu')\nexcept ModelFileError as e:\n    print('refused:', e)\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120).stdout.split("\n")
    return out[0], int(out[1])


def test_refusing_a_huge_config_allocates_nothing_big(tmp_path):
    """A config claiming 1000 layers of width 4096 (about 200 GB) is refused with memory use staying small."""
    refusal, peak = load_in_a_process(crafted_folder(tmp_path, n_layer=1000, n_embd=4096, n_head=32))
    assert refusal.startswith("refused:") and "over this loader's limit" in refusal
    assert peak < 1024  # MiB of peak RSS: torch itself, nothing the size of the model


def test_a_large_config_beside_small_weights_is_refused_before_it_is_built(tmp_path):
    """64 layers of width 1,024 (805M parameters, inside the limits) beside a 100 KB safetensors: refused from the
    header, with memory use staying small."""
    refusal, peak = load_in_a_process(crafted_folder(tmp_path, n_layer=64, n_embd=1024, n_head=8))
    assert refusal.startswith("refused:") and "from different models" in refusal, refusal
    assert peak < 1024


@pytest.mark.parametrize(
    "change, message",
    [
        (
            lambda t: (
                t | {"transformer.h.0.attn.c_attn.weight": t["transformer.h.0.attn.c_attn.weight"] * float("nan")}
            ),
            "NaN",
        ),
        (lambda t: t | {"transformer.wte.weight": t["transformer.wte.weight"].clone().fill_(float("inf"))}, "infinite"),
        (lambda t: {k: v.to(torch.int64) for k, v in t.items()}, "as int64"),
        (lambda t: {k: v.double() for k, v in t.items()}, "as float64"),
    ],
    ids=["nan", "inf", "int64", "float64"],
)
def test_weights_that_are_not_finite_floats_are_refused(tmp_path, change, message):
    from safetensors.torch import load_file, save_file

    from gpt.storage.folder import ModelFileError

    folder = crafted_folder(tmp_path)
    weights = folder / "model.safetensors"
    save_file(change(load_file(weights)), weights)
    with pytest.raises(ModelFileError, match=message):
        gpt.load(folder, device="cpu")


def test_a_huge_json_file_in_a_folder_is_refused_unread(tmp_path):
    from gpt.storage.folder import ModelFileError

    folder = crafted_folder(tmp_path)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "padding": "x" * (2 << 20)}))
    with pytest.raises(ModelFileError, match=r"config.json is 2.0 MB, more than its 1 MB limit"):
        gpt.load(folder, device="cpu")
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "tokenizer.json").write_text(" " * (65 << 20))
    with pytest.raises(ValueError, match=r"tokenizer.json is 65.0 MB, more than its 64 MB limit"):
        gpt.load(folder, device="cpu")


def test_a_full_disk_while_training_is_one_line_that_says_what_to_do(tmp_path, play_file, tiny_args, monkeypatch):
    from safetensors import SafetensorError

    import gpt.storage.atomic
    from gpt.training.train import main

    def full(*args, **kwargs):
        raise SafetensorError("Error while serializing: IoError(No space left on device (os error 28))")

    monkeypatch.setattr(gpt.storage.atomic, "save_file", full)
    with pytest.raises(SystemExit) as e:
        main(["--data", str(play_file), "--out", str(tmp_path / "m"), *tiny_args, "--max-steps", "2"])
    message = str(e.value)
    assert message.startswith("error: cannot write ") and "No space left on device" in message
    assert "free some space" in message and "\n" not in message


# The app: with a key, every way in asks for it; visitors load only what the operator offers.

GRADIO_CALLS = [
    ("/complete", ["ROMEO:", False, "play", 0.8, 0, 1.0, 5, 1.0, ""]),
    ("/chat", ["Good morrow.", [], "play", 0.8, 0, 1.0, 5, 1.0, ""]),
    ("/attention", ["ROMEO:", 0, 0, "play"]),
    ("/load_model", ["play"]),
]


@pytest.fixture(scope="module")
def keyed_app(tiny_model, app_process):
    with app_process("--api-key", "s3cret", env={"MODEL_ID": str(tiny_model)}) as app:
        app.wait_ready()
        yield app.url


@pytest.mark.parametrize("api_name, args", GRADIO_CALLS, ids=[c[0] for c in GRADIO_CALLS])
def test_with_a_key_every_gradio_endpoint_needs_it(keyed_app, api_name, args):
    from gradio_client import Client

    for path in (f"/gradio_api/call{api_name}", "/gradio_api/queue/join"):
        r = httpx.post(f"{keyed_app}{path}", json={"data": args, "fn_index": 0, "session_hash": "x"}, timeout=10)
        assert r.status_code == 401, (path, r.status_code, r.text[:200])
    with pytest.raises(Exception, match="credentials|login|Not authenticated"):
        Client(keyed_app, verbose=False).predict(*args, api_name=api_name)
    with pytest.raises(Exception, match="login"):
        Client(keyed_app, auth=("visitor", "wrong"), verbose=False)
    assert Client(keyed_app, auth=("visitor", "s3cret"), verbose=False).predict(*args, api_name=api_name) is not None


@pytest.mark.parametrize(
    "method, path, body",
    [
        ("post", "/v1/completions", {"prompt": "a"}),
        ("post", "/v1/chat/completions", {"messages": []}),
        ("get", "/v1/models", None),
        ("get", "/docs", None),
        ("get", "/openapi.json", None),
        ("get", "/redoc", None),
    ],
)
def test_with_a_key_every_v1_route_needs_it(keyed_app, method, path, body):
    r = httpx.request(method, f"{keyed_app}{path}", json=body, timeout=10)
    assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
    ok = httpx.request(method, f"{keyed_app}{path}", json=body, headers={"authorization": "Bearer s3cret"})
    assert ok.status_code != 401


def test_with_a_key_health_stays_open(keyed_app):
    assert httpx.get(f"{keyed_app}/health").status_code == 200


@pytest.mark.parametrize("name", ["/etc", "/", "../weights/names", "openai-community/gpt2", "~", "carol/missing"])
@pytest.mark.parametrize("api_name", ["/load_model", "/complete"])
def test_visitors_cannot_load_what_the_operator_did_not_offer(app_url, name, api_name):
    from gradio_client import Client

    args = [name] if api_name == "/load_model" else ["ROMEO:", False, name, 0.8, 0, 1.0, 5, 1.0, ""]
    with pytest.raises(Exception) as refused:
        Client(app_url, verbose=False).predict(*args, api_name=api_name)
    message = str(refused.value)
    assert any(refusal in message for refusal in ("not in the list of choices", "not one of the models", "400 Bad"))
    assert "config.json" not in message and "no such" not in message and "Hub" not in message


def test_the_picker_lists_short_names_only(app_url):
    config = httpx.get(f"{app_url}config", timeout=10).json()
    pickers = [c["props"] for c in config["components"] if c.get("type") == "dropdown"]
    labels, choices = zip(*pickers[0]["choices"])
    assert list(choices) == ["names", "names-mlp", "carol/app-model", "play"] and pickers[0]["value"] == "play"
    assert labels == ("names (base)", "names-mlp (base)", "carol/app-model", "play (base)")  # a folder says its kind
    assert not any(c.startswith("/") for c in choices) and pickers[0]["allow_custom_value"] is False


def test_a_broken_offered_model_is_reported_without_server_paths(tmp_path, tiny_model, app_process):
    from gradio_client import Client

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{}")
    with app_process(env={"MODEL_ID": str(tiny_model), "GPT_MODELS": str(broken)}) as app:
        app.wait_ready()
        with pytest.raises(Exception) as refused:
            Client(app.url, verbose=False).predict("broken", api_name="/load_model")
    assert "broken" in str(refused.value) and str(tmp_path) not in str(refused.value)


def test_allow_any_model_is_the_operators_choice(tiny_model, names_model, app_process):
    from gradio_client import Client

    with app_process("--allow-any-model", env={"MODEL_ID": str(tiny_model)}) as app:
        app.wait_ready()
        _, _, info, *_ = Client(app.url, verbose=False).predict(str(names_model), api_name="/load_model")
    assert info["document_mode"] is True
