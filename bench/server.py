"""The model server under load: 1, 4 and 16 concurrent streaming clients, aggregate tokens/s and latency.

python bench/server.py [--model weights/shakespeare-char] [--tokens 200]
Starts `python app.py --api-only` on a free port, then drives it with streaming /v1/completions requests from
one asyncio client (a light load generator). Requirement: with 16 clients the aggregate is at least 5x the
single-client figure.
"""

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def one_request(client: httpx.AsyncClient, url: str, tokens: int, seed: int) -> tuple[int, float, float]:
    """Characters (= tokens) received, time to first token, total time."""
    body = {"prompt": "ROMEO:\n", "max_tokens": tokens, "temperature": 0.8, "top_k": 40, "seed": seed, "stream": True}
    start, first, count = time.perf_counter(), None, 0
    async with client.stream("POST", f"{url}/v1/completions", json=body, timeout=300) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if line.startswith("data: {"):
                chars = sum(len(c["text"]) for c in json.loads(line[6:])["choices"])
                count += chars
                first = first or (time.perf_counter() - start if chars else None)
    return count, first or 0.0, time.perf_counter() - start


async def concurrent_requests(url: str, n: int, tokens: int) -> list[tuple[int, float, float]]:
    """n streaming clients at once, from one event loop so the load generator stays light."""
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=n)) as client:
        return await asyncio.gather(*(one_request(client, url, tokens, i) for i in range(n)))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=str(ROOT / "weights" / "shakespeare-char"))
    p.add_argument("--tokens", type=int, default=200, help="new tokens per request")
    p.add_argument("--clients", default="1,4,16")
    args = p.parse_args()
    port = free_port()
    env = {**os.environ, "MODEL_ID": args.model, "GRADIO_SERVER_PORT": str(port)}
    server = subprocess.Popen([sys.executable, "app.py", "--api-only"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        asyncio.run(concurrent_requests(url, 1, 20))  # warm-up
        print(f"model: {args.model}; {args.tokens} new tokens per request, streaming; {os.cpu_count()} CPU cores")
        single = None
        for n in [int(c) for c in args.clients.split(",")]:
            start = time.perf_counter()
            results = asyncio.run(concurrent_requests(url, n, args.tokens))
            wall = time.perf_counter() - start
            aggregate = sum(r[0] for r in results) / wall
            single = single or aggregate
            ttft = statistics.median(r[1] for r in results) * 1000
            total = statistics.median(r[2] for r in results)
            print(f"{n:>3} clients: {aggregate:8.0f} tok/s aggregate ({aggregate / single:4.1f}x one client), "
                  f"per request: first token {ttft:6.0f} ms, whole {total:5.2f} s")  # fmt: skip
    finally:
        server.terminate()
        server.wait(timeout=20)


if __name__ == "__main__":
    main()
