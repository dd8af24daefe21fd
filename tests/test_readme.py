"""The README's Python examples run as written on a fresh clone (with the shipped models, no network)."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
BLOCKS = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
# The OpenAI client example needs a running server: tests/test_server.py drives that client against one.
OFFLINE = [b for b in BLOCKS if "OpenAI(" not in b]


def test_the_readme_has_python_examples_and_all_but_the_served_one_run_here():
    assert len(BLOCKS) >= 3 and len(OFFLINE) == len(BLOCKS) - 1


@pytest.mark.parametrize("block", OFFLINE, ids=[b.splitlines()[0][:40] for b in OFFLINE])
def test_a_readme_python_example_runs_as_written(block, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    r = subprocess.run([sys.executable, "-c", block], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip(), "an example that prints nothing shows nothing"
