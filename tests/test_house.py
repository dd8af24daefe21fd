"""The shape of the library: the model stands alone, imports run one way, and the layers keep to their jobs."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def imports_of(path: Path) -> set[str]:
    """Top-level module names a file imports, at any depth of the file (lazy imports count too)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def library_files() -> dict[str, Path]:
    """Every module of the library by its dotted name (gpt.models.model, gpt.ui.chat_tab)."""
    found = {}
    for p in (ROOT / "gpt").rglob("*.py"):
        parts = p.relative_to(ROOT).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    return found


def library_graph() -> dict[str, set[str]]:
    files = {name: p for name, p in library_files().items() if name != "gpt"}
    return {name: {m for m in imports_of(p) if m in files and m != name} for name, p in files.items()}


def test_the_library_imports_form_no_circle():
    graph, done, path = library_graph(), set(), []

    def visit(name):
        assert name not in path, f"import circle: {' -> '.join(path[path.index(name) :] + [name])}"
        if name in done:
            return
        path.append(name)
        for dep in graph[name]:
            visit(dep)
        path.pop()
        done.add(name)

    for name in graph:
        visit(name)


@pytest.mark.parametrize("module, allowed", [("models.model", {"torch"}), ("serving.server", None)])
def test_the_model_needs_torch_only_and_the_server_no_gradio(module, allowed):
    path = ROOT / "gpt" / f"{module.replace('.', '/')}.py"
    third_party = {m.split(".")[0] for m in imports_of(path)} - set(sys.stdlib_module_names)
    if allowed is not None:
        assert third_party <= allowed, f"{path.name} imports {sorted(third_party - allowed)}"
    code = (
        f"import sys, gpt.{module}; print(sorted(m for m in ('gradio', 'app', 'huggingface_hub') if m in sys.modules))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr
    banned = ["gradio", "app"] + (["huggingface_hub"] if module == "models.model" else [])
    assert not set(eval(r.stdout)) & set(banned), f"importing gpt.{module} loads {r.stdout.strip()}"


def test_no_library_module_imports_the_app():
    offenders = [name for name, p in library_files().items() if "app" in imports_of(p)]
    assert not offenders


def test_only_the_ui_imports_gradio_and_the_api_path_never_loads_it():
    outside = [n for n, p in library_files().items() if not n.startswith("gpt.ui") and "gradio" in imports_of(p)]
    assert not outside, f"{outside} import gradio: the UI lives in gpt/ui/"
    code = "import sys, app; print('gradio' in sys.modules)"  # app.py --api-only imports nothing more than this
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "False", r.stdout + r.stderr


def test_every_module_keeps_to_one_concern_of_at_most_450_lines():
    sizes = {name: len(p.read_text().splitlines()) for name, p in library_files().items()}
    sizes["app"] = len((ROOT / "app.py").read_text().splitlines())
    over = {name: n for name, n in sizes.items() if n > (150 if name == "app" else 450)}
    assert not over, f"split these by concern: {over}"


def test_gpt_from_pretrained_points_to_gpt_load():
    from gpt.models.model import GPT

    with pytest.raises(NotImplementedError, match=r"gpt\.load\("):
        GPT.from_pretrained("owner/name")


# python -m gpt.<command>, for each of these
COMMANDS = set("train sample eval hub folder conversations preferences names_task micrograd microgpt".split())


def test_gpt_holds_sub_packages_by_concern_and_at_its_top_only_the_commands_users_type():
    import importlib

    packages = {p.name for p in (ROOT / "gpt").iterdir() if (p / "__init__.py").is_file()}
    assert packages == {"models", "training", "posttraining", "serving", "storage", "ui"}
    top = {p.stem for p in (ROOT / "gpt").glob("*.py")} - {"__init__"}
    assert top == COMMANDS
    for name in top:  # `python -m gpt.train` and the rest run the command that lives in its sub-package
        main = importlib.import_module(f"gpt.{name}").main
        assert main.__module__.split(".")[1] in packages and main.__module__.endswith(f".{name}"), name
