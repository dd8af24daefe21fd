"""The model server under load, on loopback only: throughput and latency, admission, dropped clients, a soak.

python bench/server.py [--model weights/shakespeare-char] [--tokens 200] [--clients 1,8,32,64] [--soak 180]

Starts `python app.py --api-only` on a free port and drives it with streaming /v1/completions requests from one
asyncio client. The client shares the machine's cores with the server, so it is kept light: plain asyncio streams,
one connection a request, the chunked body decoded by hand (httpx's line iterator took a third of a core at 16
clients on 2 cores, CPU the server's decode step then lacked). Every loop is bounded in count and time. It prints:
- per concurrency: aggregate tok/s, its ratio to one client, time to first token (p50/p99) and whole request (p50);
- admission: with every slot and waiting place taken, how fast the extra requests get their 429;
- dropped clients: after 30 streams are dropped mid-way, the requests the server still holds and the speed of the
  next request against one client's;
- soak: the server's RSS after warm-up and after --soak seconds of moderate load (8 clients), and the change.
"""

import argparse
import asyncio
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: str, *args: str) -> tuple[subprocess.Popen, str]:
    """`python app.py --api-only ARGS` on a free port, once /health says it is ready and (unless --no-compile) that
    its background compile is done, so that the figures are the compiled server's."""
    port = free_port()
    env = {**os.environ, "MODEL_ID": model, "GRADIO_SERVER_PORT": str(port)}
    proc = subprocess.Popen(
        [sys.executable, "app.py", "--api-only", *args], cwd=ROOT, env=env, stdout=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"

    def compiled(health: httpx.Response) -> bool:
        return health.json()["compiled"] or "--no-compile" in args

    wait_ready(proc, url, compiled, "the server did not start")
    return proc, url


def wait_ready(proc: subprocess.Popen, url: str, ready: Callable[[httpx.Response], bool], failed: str) -> None:
    """Poll a server's /health until it answers 200 and `ready` (at most 10 minutes); else end it and exit."""
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        try:
            health = httpx.get(f"{url}/health", timeout=1)
            if health.status_code == 200 and ready(health):
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    sys.exit(f"error: {failed}")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def sse_events(reader: asyncio.StreamReader) -> AsyncIterator[bytes]:
    """The events of a chunked text/event-stream body, once the response head has been read."""
    buffer = b""
    while size := int((await reader.readline()).strip() or b"0", 16):
        buffer += (await reader.readexactly(size + 2))[:-2]
        *events, buffer = buffer.split(b"\n\n")
        for event in events:
            yield event


def sampled(tokens: int, seed: int) -> dict:
    return {"prompt": "ROMEO:\n", "max_tokens": tokens, "temperature": 0.8, "top_k": 40, "seed": seed}


async def one_request(url: str, body: dict, drop_after: int = 0) -> tuple[str, float, float]:
    """(text received, time to first token, total time) of one streaming /v1/completions request; drop_after > 0
    hangs up after that many chunks."""
    payload = json.dumps({**body, "stream": True}).encode()
    host, port = url.removeprefix("http://").split(":")
    start, first, text, chunks = time.perf_counter(), None, "", 0
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        request = b"POST /v1/completions HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n" % host.encode()
        writer.write(request + b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(payload) + payload)
        head = (await reader.readuntil(b"\r\n\r\n")).lower()
        if not head.startswith(b"http/1.1 200") or b"transfer-encoding: chunked" not in head:
            raise RuntimeError(f"unexpected response: {head[:200]!r}")
        async for event in sse_events(reader):
            if event.startswith(b"data: {"):
                chunk = "".join(c["text"] for c in json.loads(event[6:])["choices"])
                text += chunk
                first = first or (time.perf_counter() - start if chunk else None)
                chunks += 1
                if drop_after and chunks >= drop_after:
                    break
    finally:
        writer.close()
    return text, first or 0.0, time.perf_counter() - start


async def concurrent_requests(url: str, n: int, tokens: int, drop_after: int = 0) -> list[tuple[str, float, float]]:
    return await asyncio.gather(*(one_request(url, sampled(tokens, i), drop_after) for i in range(n)))


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


def throughput(url: str, clients: list[int], tokens: int) -> float:
    single = None
    for n in clients:
        start = time.perf_counter()
        results = asyncio.run(concurrent_requests(url, n, tokens))
        wall = time.perf_counter() - start
        aggregate = sum(len(r[0]) for r in results) / wall
        single = single or aggregate
        ttft = [r[1] * 1000 for r in results]
        print(
            f"{n:>3} clients: {aggregate:7.0f} tok/s ({aggregate / single:4.1f}x one client) | first token p50 "
            f"{percentile(ttft, 0.5):5.0f} ms, p99 {percentile(ttft, 0.99):5.0f} ms | whole request p50 "
            f"{statistics.median(r[2] for r in results):5.2f} s"
        )
    return single


async def admission(url: str, capacity: int, extra: int) -> None:
    """Fill every place with long streams, then time the extra requests' answers."""
    body = {"prompt": "ROMEO:\n", "max_tokens": 2000, "stream": True}
    limits = httpx.Limits(max_connections=capacity + extra)
    async with httpx.AsyncClient(limits=limits) as client, contextlib.AsyncExitStack() as streams:
        for _ in range(capacity):
            await streams.enter_async_context(client.stream("POST", f"{url}/v1/completions", json=body, timeout=60))
        times, codes = [], []
        for _ in range(extra):
            start = time.perf_counter()
            r = await client.post(f"{url}/v1/completions", json={"prompt": "ROMEO:", "max_tokens": 5}, timeout=30)
            times.append((time.perf_counter() - start) * 1000)
            codes.append(r.status_code)
    print(
        f"admission: {capacity} places full; {codes.count(429)}/{extra} extra requests got 429, in "
        f"p50 {percentile(times, 0.5):.1f} ms, p99 {percentile(times, 0.99):.1f} ms"
    )


def held_requests(url: str, seconds: float = 5) -> int:
    deadline = time.time() + seconds
    while True:
        held = httpx.get(f"{url}/health").json()["requests"]
        if held == 0 or time.time() > deadline:
            return held
        time.sleep(0.05)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=str(ROOT / "weights" / "shakespeare-char"))
    p.add_argument("--tokens", type=int, default=200, help="new tokens per request")
    p.add_argument("--clients", default="1,8,32,64")
    p.add_argument("--soak", type=float, default=180, help="seconds of moderate load for the RSS check (0: skip)")
    args = p.parse_args()
    proc, url = start_server(args.model)
    try:
        asyncio.run(concurrent_requests(url, 1, 20))  # warm-up
        print(
            f"model: {args.model}; {args.tokens} new tokens per request, streaming; {os.cpu_count()} CPU cores; "
            f"server: 16 rows, 64 waiting"
        )
        single = throughput(url, [int(c) for c in args.clients.split(",")], args.tokens)

        asyncio.run(concurrent_requests(url, 30, 2000, drop_after=3))
        held = held_requests(url)
        start = time.perf_counter()
        text, _, _ = asyncio.run(concurrent_requests(url, 1, args.tokens))[0]
        after = len(text) / (time.perf_counter() - start)
        print(
            f"dropped clients: 30 streams dropped mid-way; requests still held {held}; next request "
            f"{after:.0f} tok/s ({after / single:.2f}x one client before)"
        )

        if args.soak:
            asyncio.run(concurrent_requests(url, 8, args.tokens))
            warm = rss_mib(proc.pid)
            deadline, rounds = time.time() + args.soak, 0
            while time.time() < deadline:
                asyncio.run(concurrent_requests(url, 8, args.tokens))
                rounds += 1
            end = rss_mib(proc.pid)
            print(
                f"soak: {args.soak:.0f} s of 8 clients ({rounds * 8} requests); RSS {warm:.0f} MiB after warm-up, "
                f"{end:.0f} MiB after ({(end - warm) / warm:+.1%})"
            )
    finally:
        proc.terminate()
        proc.wait(timeout=20)

    proc, url = start_server(args.model, "--max-batch", "4", "--max-waiting", "4")
    try:
        asyncio.run(admission(url, 8, 20))
    finally:
        proc.terminate()
        proc.wait(timeout=20)


if __name__ == "__main__":
    main()
