import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
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
# The app compiles its decoding in the background (tens of seconds of CPU per model) unless GPT_COMPILE=0: the app
# processes of the tests do not, except where a test asks for it.
# Compiled decoding is tested where it is asked for (compile=True in test_generate.py, test_weights.py).
os.environ["GPT_COMPILE"] = "0"
# Each test process (the xdist workers and the apps and commands they start) computes on one thread: they share the
# cores, and torch's threads that wait on one another on a busy machine lose most of their time (a quarter of the
# suite's). The tests of a time budget's threads give a run the machine's default back (drop=("OMP_NUM_THREADS",)).
os.environ["OMP_NUM_THREADS"] = "1"
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SPEAKERS = ["ROMEO", "JULIET", "NURSE", "FRIAR", "TYBALT"]
WORDS = "the my thou art and to of love night what shall i not be is with death fair sweet".split()


def make_play(n_speeches: int, seed: int = 0) -> str:
    """A small made-up play in Tiny Shakespeare's shape: a speaker line ending in ':', then verse."""
    rng = random.Random(seed)
    parts = [
        "PROLOGUE:\nThe quick brown fox jumps over the lazy dog; THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG.\n"
        "Sphinx of black quartz, judge my vow! 'Tis 'so'-and-so: (or not)?\n"
    ]
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


ACCENTED = "café naïve façade señor über smörgåsbord œuvre Zürich 日本語 東京 🙂 🚀 — “quoted” ‘single’".split()


def make_own_text(n_paragraphs: int, seed: int = 0) -> str:
    """Running prose (not a play) in many scripts: accents, CJK, emoji, curly quotes and dashes."""
    rng = random.Random(seed)
    words = WORDS + ACCENTED
    return "\n\n".join(
        " ".join(rng.choice(words) for _ in range(rng.randint(8, 20))).capitalize() + "." for _ in range(n_paragraphs)
    )


def make_code(n_functions: int, seed: int = 0) -> str:
    """Python-like source: indentation, comments and `#` lines (which Markdown would turn into headings)."""
    rng = random.Random(seed)
    names = ["parse", "load", "count", "merge", "split", "check", "build", "total"]
    parts = []
    for i in range(n_functions):
        f, a, b = rng.choice(names), rng.choice("xyz"), rng.choice("abc")
        parts.append(
            f"# {f} the {a} values\ndef {f}_{i}({a}, {b}=None):\n    if {a} > {rng.randint(0, 9)}:\n"
            f"        return {a} - {b}\n    return [{a} for {a} in range({rng.randint(1, 9)})]\n"
        )
    return "\n".join(parts)


@pytest.fixture(scope="session")
def own_text_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "journal.txt"
    path.write_text(make_own_text(700), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def code_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "code.txt"
    path.write_text(make_code(400))
    return path


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


# The tiers are declared where the tests are: a module of slow tests says `pytestmark = pytest.mark.slow` (the browser
# module `browser`), a slow test in a quick module carries @pytest.mark.slow, and a fixture that trains a model, starts
# a process or compiles is made with @slow_fixture, which puts every test that uses it (directly or through another
# fixture) in the slow tier. The rest is the unit tier on a random model, for quick runs:
# python -m pytest -m "not slow and not browser". The README's command runs every tier.
SLOW_FIXTURES: set[str] = set()


def slow_fixture(*args, **kwargs):
    """pytest.fixture for a fixture whose tests belong to the slow tier."""

    def declare(function):
        SLOW_FIXTURES.add(function.__name__)
        return pytest.fixture(*args, **kwargs)(function)

    return declare


def pytest_collection_modifyitems(items):
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())) and not item.get_closest_marker("browser"):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def toy_chat_model(tmp_path_factory) -> Path:
    """A random chat model over three letters and a newline, its turn tokens too (post-training tests' toy)."""
    import torch

    from gpt.models.model import GPT, GPTConfig
    from gpt.models.tokenizer import CharTokenizer
    from gpt.storage.folder import save_folder

    tokenizer = CharTokenizer(list("\nabc")).with_turns()
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, block_size=24, n_layer=2, n_head=2, n_embd=32))
    folder = tmp_path_factory.mktemp("toy") / "chat"
    save_folder(model.eval(), tokenizer, folder)
    return folder


@pytest.fixture(scope="session")
def random_model(tmp_path_factory) -> Path:
    """A model folder with random weights over the made-up play's characters, made in milliseconds (as nanochat's
    MockModel): for tests of decoding, sampling and serving that need a model, not a good one."""
    import torch

    from gpt.models.model import GPT, GPTConfig
    from gpt.models.tokenizer import CharTokenizer
    from gpt.storage.folder import save_folder

    tokenizer = CharTokenizer.from_text(make_play(600))
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, block_size=32, n_layer=2, n_head=2, n_embd=32))
    out = tmp_path_factory.mktemp("models") / "random"
    save_folder(model.eval(), tokenizer, out)
    return out


TINY = ["--n-layer", "2", "--n-head", "2", "--n-embd", "32", "--block-size", "32", "--batch-size", "16"]


@slow_fixture(scope="session")
def tiny_model(tmp_path_factory, play_file) -> Path:
    """A small model trained on the made-up play, shared by the tests that only read it."""
    from gpt.training.train import main

    out = tmp_path_factory.mktemp("models") / "play"
    main(
        [
            "--data",
            str(play_file),
            "--out",
            str(out),
            *TINY,
            *"--max-steps 150 --eval-interval 50 --eval-steps 4 --lr 3e-3".split(),
        ]
    )
    return out


@slow_fixture(scope="session")
def names_model(tmp_path_factory, names_file) -> Path:
    from gpt.training.train import main

    out = tmp_path_factory.mktemp("models") / "names"
    main(
        [
            "--data",
            str(names_file),
            "--out",
            str(out),
            *"--docs --n-layer 2 --n-head 2 --n-embd 32 --block-size 16 --batch-size 32 --max-steps 150".split(),
            *"--eval-interval 50 --lr 3e-3 --eval-steps 4".split(),
        ]
    )
    return out


@slow_fixture(scope="session")
def mlp_model(tmp_path_factory, names_file) -> Path:
    """A rung of the makemore ladder (a window model) trained on the same names."""
    from gpt.training.train import main

    out = tmp_path_factory.mktemp("models") / "names-mlp"
    main(
        [
            "--data",
            str(names_file),
            "--out",
            str(out),
            *"--docs --arch mlp --block-size 3 --n-embd 8 --n-hidden 32 --batch-size 32 --max-steps 100".split(),
            *"--eval-interval 50 --lr 1e-2 --eval-steps 4".split(),
        ]
    )
    return out


@slow_fixture(scope="session")
def bpe_model(tmp_path_factory, own_text_file) -> Path:
    """A byte-level BPE model of the text in many scripts."""
    from gpt.training.train import main

    out = tmp_path_factory.mktemp("models") / "journal"
    main(
        [
            *["--data", str(own_text_file), "--out", str(out), "--tokenizer", "bpe", "--vocab-size", "400", *TINY],
            *"--max-steps 150 --eval-interval 50 --eval-steps 4 --lr 3e-3".split(),
        ]
    )
    return out


@slow_fixture(scope="session")
def code_model(tmp_path_factory, code_file) -> Path:
    """A character model of code: running text that is not a play."""
    from gpt.training.train import main

    out = tmp_path_factory.mktemp("models") / "code"
    steps = "--max-steps 60 --eval-interval 30 --eval-steps 4".split()
    main(["--data", str(code_file), "--out", str(out), *TINY, *steps])
    return out


class AppProcess:
    """`python app.py ARGS` as a user starts it, on a free port; its output goes to a file (a pipe could fill up)."""

    def __init__(self, *args: str, env: dict | None = None):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tempfile.NamedTemporaryFile("w+", prefix="gpt-app-", suffix=".log", delete=False)
        env = {**os.environ, "GRADIO_SERVER_PORT": str(self.port), "PYTHONPATH": str(ROOT), **(env or {})}
        self.proc = subprocess.Popen(
            [sys.executable, "app.py", *args], cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT, text=True
        )

    def output(self) -> str:
        return Path(self.log.name).read_text()

    def wait_ready(self, timeout: float = 60) -> float:
        """Seconds until /health answers 200; fails with the app's output if it exits or never gets there."""
        import httpx

        start = time.time()
        while time.time() - start < timeout:
            assert self.proc.poll() is None, f"the app exited ({self.proc.returncode}):\n{self.output()}"
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return time.time() - start
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"the app was not ready in {timeout}s:\n{self.output()}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def __enter__(self) -> "AppProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _cli(*args: str, env: dict | None = None, drop: tuple[str, ...] = (), timeout: float = 300):
    """`python ARGS` from the repository root, as a user runs the commands; output captured."""
    full = {k: v for k, v in {**os.environ, **(env or {})}.items() if k not in drop}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=full, cwd=ROOT, timeout=timeout)


@slow_fixture(scope="session")
def cli():
    """cli(*args, env={...}, drop=(names,)) -> CompletedProcess of `python ARGS` run in the repository root."""
    return _cli


def _refused(*args: str) -> subprocess.CompletedProcess:
    """`python -m MODULE ARGS` run in this process as __main__, from the repository root: the exit code, stdout and
    stderr the command gives. For refusals that come before any work: a test of one skips a Python start-up (torch's
    import, ~4 CPU-seconds). Each command's refusal from a real process is tested too (cli)."""
    import contextlib
    import io
    import runpy

    import torch

    assert args[0] == "-m", args
    out, err, code = io.StringIO(), io.StringIO(), 0
    argv, threads = sys.argv, torch.get_num_threads()
    sys.argv = [args[1], *args[2:]]
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), contextlib.chdir(ROOT):
            try:
                runpy.run_module(args[1], run_name="__main__", alter_sys=True)
            except SystemExit as e:  # as Python ends: a message goes to stderr with code 1
                code = e.code if isinstance(e.code, int) else 0 if e.code is None else 1
                if isinstance(e.code, str):
                    print(e.code, file=sys.stderr)
    finally:
        sys.argv = argv
        torch.set_num_threads(threads)
    return subprocess.CompletedProcess(list(args), code, out.getvalue(), err.getvalue())


@pytest.fixture(scope="session")
def refused():
    """refused(*args) -> CompletedProcess of `python ARGS` (-m MODULE ...) run in this process: for refusals."""
    return _refused


@pytest.fixture(scope="session")
def tiny_args() -> list[str]:
    """Flags for a model small enough to train in seconds."""
    return list(TINY)


@pytest.fixture
def free_port() -> int:
    return _free_port()


@slow_fixture(scope="session")
def app_process():
    """app_process(*args, env={...}) -> an AppProcess (a context manager that stops it)."""
    return AppProcess


@pytest.fixture(scope="session")
def app_url(tiny_model, names_model, mlp_model):
    """`python app.py` serving the tiny model, with the names model, an MLP rung and one Hub repo on offer."""
    env = {"MODEL_ID": str(tiny_model), "GPT_MODELS": f"{names_model},{mlp_model},carol/app-model"}
    with AppProcess(env=env) as app:
        ready = app.wait_ready()
        yield app.url + "/"
    assert ready < 30, f"app took {ready:.1f}s to start"


@contextmanager
def _serving(lm, max_tokens: int = 2048, **catalog_settings):
    """The API for an already-loaded model named "play", on a free port, in this process; gives the URL and the
    model as served (its LM and engine, for tests to look at)."""
    import uvicorn

    from gpt.serving.catalog import Catalog
    from gpt.serving.server import Server, create_app

    catalog = Catalog("play", **catalog_settings)
    served = catalog.put("play", lm)
    server = Server(catalog, max_tokens=max_tokens)
    port = _free_port()
    uv = uvicorn.Server(uvicorn.Config(create_app(server), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    while not uv.started:
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}", served
    finally:
        uv.should_exit = True
        thread.join(timeout=10)
        catalog.close()


@slow_fixture(scope="session")
def serving():
    """serving(lm, max_tokens=, **Catalog settings) -> context manager giving (url, the model as served)."""
    return _serving


@slow_fixture(scope="session")
def hub():
    """The local Hub-compatible server that HF_ENDPOINT points at."""
    from hub_server import HubServer

    with HubServer(HUB_PORT) as server:
        yield server
