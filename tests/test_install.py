"""`pip install .` and `pip install git+<repo>` give an importable gpt package and its commands, from any folder."""

import site
import subprocess
import venv
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # the slow tier: trains, serves or starts processes

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def env_python(tmp_path_factory):
    """A fresh virtual environment that sees the dependencies installed where the tests run but not this checkout.

    Inside a virtual environment, system_site_packages reaches only the base interpreter's packages, so the running
    interpreter's own site-packages are added by a .pth file (they come after the new environment's, which wins).
    """
    where = tmp_path_factory.mktemp("venv")
    venv.create(where, system_site_packages=True, with_pip=True)
    python = where / "bin" / "python"
    code = "import site; print(site.getsitepackages()[0])"
    found = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True)
    new_site = Path(found.stdout.strip())
    (new_site / "outer.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    return python


def run(python, *args, cwd):
    return subprocess.run([str(python), *args], capture_output=True, text=True, cwd=cwd, timeout=300)


@pytest.mark.parametrize("source", ["path", "git"])
def test_pip_install_gives_the_package_and_its_commands(env_python, tmp_path, source):
    target = str(ROOT) if source == "path" else f"git+file://{ROOT}"
    r = run(env_python, "-m", "pip", "install", "--quiet", "--force-reinstall", "--no-deps", target, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    r = run(env_python, "-c", "import gpt; print(gpt.__file__)", cwd=tmp_path)
    assert r.returncode == 0 and "site-packages" in r.stdout and str(ROOT) not in r.stdout, r.stdout + r.stderr
    r = run(
        env_python,
        "-m",
        "gpt.sample",
        str(ROOT / "weights" / "names"),
        "--num-samples",
        "2",
        "--seed",
        "0",
        cwd=tmp_path,
    )
    assert r.returncode == 0 and r.stdout.strip(), r.stderr
    commands = ("gpt-train", "gpt-sample", "gpt-eval", "gpt-hub", "gpt-folder")
    commands = commands if source == "git" else commands[:1]  # a commit's install runs each; a folder's, the first
    running = {  # all at once: each spends its time importing torch
        c: subprocess.Popen(
            [str(env_python.parent / c), "--help"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=tmp_path,
        )
        for c in commands
    }
    for command, proc in running.items():
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0 and f"usage: {command}" in out, (command, err)  # named as it was called


def test_pip_install_keeps_the_cpu_torch_already_there(env_python, tmp_path):
    """With the CPU torch installed first (the README's route), `pip install .` with its dependencies would install
    this package and no CUDA torch, triton or nvidia packages (a dry run, reported as JSON)."""
    import json

    report = tmp_path / "report.json"
    r = run(
        env_python,
        *"-m pip install --dry-run --quiet --report".split(),
        str(report),
        str(ROOT),
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    names = [item["metadata"]["name"].lower() for item in json.loads(report.read_text())["install"]]
    assert "gpt" in names and not [n for n in names if n in ("torch", "triton") or n.startswith("nvidia")], names
