import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# huggingface_hub reads these when it is imported: the tests talk to a local Hub (hub_server.py) and keep their own
# cache, never the user's.
HUB_PORT = _free_port()
os.environ["HF_ENDPOINT"] = f"http://127.0.0.1:{HUB_PORT}"
os.environ["HF_HOME"] = tempfile.mkdtemp(prefix="gpt-tests-hf-")
for _name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE", "HF_HUB_CACHE", "MODEL_ID"):
    os.environ.pop(_name, None)
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SPEAKERS = ["ROMEO", "JULIET", "NURSE", "FRIAR", "TYBALT"]
WORDS = "the my thou art and to of love night what shall i not be is with death fair sweet".split()


def make_play(n_speeches: int, seed: int = 0) -> str:
    """A small made-up play in Tiny Shakespeare's shape: a speaker line ending in ':', then verse."""
    rng = random.Random(seed)
    parts = ["PROLOGUE:\nThe quick brown fox jumps over the lazy dog; THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG.\n"
             "Sphinx of black quartz, judge my vow! 'Tis 'so'-and-so: (or not)?\n"]  # fmt: skip
    for _ in range(n_speeches):
        verse = "\n".join(
            " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 8))).capitalize() + rng.choice(",.;!?")
            for _ in range(rng.randint(1, 3))
        )
        parts.append(f"{rng.choice(SPEAKERS)}:\n{verse}\n")
    return "\n".join(parts)


def make_names(n: int, seed: int = 0) -> str:
    rng = random.Random(seed)
    syllables = ["an", "na", "el", "la", "ma", "ri", "jo", "em", "ly", "ka", "ro", "se"]
    return "\n".join("".join(rng.choice(syllables) for _ in range(rng.randint(1, 3))) for _ in range(n)) + "\n"


@pytest.fixture(scope="session")
def play_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "play.txt"
    path.write_text(make_play(600))
    return path


@pytest.fixture(scope="session")
def names_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "names.txt"
    path.write_text(make_names(400))
    return path


TINY = ["--n-layer", "2", "--n-head", "2", "--n-embd", "32", "--block-size", "32", "--batch-size", "16"]


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, play_file) -> Path:
    """A small model trained on the made-up play, shared by the tests that only read it."""
    from gpt.train import main

    out = tmp_path_factory.mktemp("models") / "play"
    main(["--data", str(play_file), "--out", str(out), *TINY, "--max-steps", "150", "--eval-interval", "50",
          "--eval-steps", "4", "--lr", "3e-3"])  # fmt: skip
    return out


@pytest.fixture(scope="session")
def names_model(tmp_path_factory, names_file) -> Path:
    from gpt.train import main

    out = tmp_path_factory.mktemp("models") / "names"
    main(["--data", str(names_file), "--out", str(out), "--docs", "--n-layer", "2", "--n-head", "2", "--n-embd", "32",
          "--block-size", "16", "--batch-size", "32", "--max-steps", "150", "--eval-interval", "50", "--lr", "3e-3",
          "--eval-steps", "4"])  # fmt: skip
    return out


@pytest.fixture(scope="session")
def app_url(tiny_model):
    """`python app.py` serving the tiny model, as a user starts it."""
    port = _free_port()
    env = {**os.environ, "GRADIO_SERVER_PORT": str(port), "MODEL_ID": str(tiny_model), "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "app.py"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    url = f"http://127.0.0.1:{port}/"
    start = time.time()
    while time.time() - start < 60:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert proc.poll() is None, proc.stdout.read()
            time.sleep(0.2)
    ready = time.time() - start
    yield url
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)
    assert ready < 30, f"app took {ready:.1f}s to start"


@pytest.fixture(scope="session")
def hub():
    """The local Hub-compatible server that HF_ENDPOINT points at."""
    from hub_server import HubServer

    with HubServer(HUB_PORT) as server:
        yield server
