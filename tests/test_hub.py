"""Publish, download and deploy with the real huggingface_hub client against the local Hub server."""

import shutil
from pathlib import Path

import pytest
import torch
import yaml
from huggingface_hub import CommitOperationDelete, HfApi, SpaceCard

import gpt
from gpt.storage.folder import MODEL_FILES, ModelFileError
from gpt.storage.hub import ModelNotFoundError, app_files, deploy, pinned_version, push

pytestmark = pytest.mark.slow  # the slow tier: trains, serves or starts processes

TOKEN = "hf_local_test_token"
ROOT = Path(__file__).resolve().parents[1]
GRADIO = pinned_version(ROOT / "requirements.txt", "gradio")


@pytest.fixture
def hub_cli(cli):
    """cli with the test token in HF_TOKEN (token=False: none at all)."""
    return lambda *args, token=True, **env: cli(
        *args, env={**env, "HF_TOKEN": TOKEN} if token else env, drop=() if token else ("HF_TOKEN",)
    )


@pytest.fixture
def token(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)


def fresh_cache(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "cache"))


def test_push_then_load_by_repo_id_gives_the_same_model(hub, tiny_model, tmp_path, monkeypatch, hub_cli):
    r = hub_cli("-m", "gpt.hub", "push", str(tiny_model), "--repo", "alice/play", "--message", "first model")
    assert r.returncode == 0, r.stderr
    assert "alice/play" in r.stdout and "commit" in r.stdout
    files = hub.files("model", "alice/play")
    assert {f for f in MODEL_FILES} <= set(files)
    card = files["README.md"].decode()
    meta = yaml.safe_load(card.split("---")[1])
    assert meta["pipeline_tag"] == "text-generation" and meta["license"] == "mit"
    assert 'gpt.load("alice/play")' in card and "best validation loss" in card and "## Samples" in card

    fresh_cache(tmp_path, monkeypatch)
    local, remote = gpt.load(tiny_model, device="cpu"), gpt.load("alice/play", device="cpu")
    assert str(remote.folder).startswith(str(tmp_path / "cache"))
    assert remote.generate("ROMEO:", max_new_tokens=50, temperature=0) == local.generate(
        "ROMEO:", max_new_tokens=50, temperature=0
    )
    ids = torch.tensor([local.encode_prompt("JULIET: the night")])
    with torch.no_grad():
        assert torch.equal(remote.model(ids)[0], local.model(ids)[0])


def test_pinned_revision_branch_and_offline_cache(hub, token, tiny_model, names_model, tmp_path, monkeypatch, hub_cli):
    _, first = push(tiny_model, "alice/evolving")
    _, second = push(names_model, "alice/evolving", message="now a names model")
    assert first != second
    fresh_cache(tmp_path, monkeypatch)
    assert gpt.load("alice/evolving", device="cpu").tokenizer.documents
    pinned = gpt.load("alice/evolving", revision=first, device="cpu")
    assert not pinned.tokenizer.documents
    _, on_branch = push(tiny_model, "alice/evolving", revision="experiment")
    assert hub.repos[("model", "alice/evolving")].branches["experiment"] == on_branch
    assert hub.repos[("model", "alice/evolving")].branches["main"] == second

    cache = {"HF_HUB_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1"}
    r = hub_cli("-m", "gpt.sample", "alice/evolving", "--max-new-tokens", "20", "--seed", "0", **cache)
    assert r.returncode == 0, r.stderr
    r = hub_cli("-m", "gpt.sample", "alice/never-downloaded", **cache)
    assert r.returncode != 0 and "not in the local Hugging Face cache" in r.stderr and "Traceback" not in r.stderr


def test_errors_are_clear(hub, token, tiny_model, tmp_path, monkeypatch, hub_cli):
    r = hub_cli("-m", "gpt.hub", "push", str(tiny_model), "--repo", "not a repo")
    assert r.returncode != 0 and "not a valid repo id" in r.stderr and "Traceback" not in r.stderr
    r = hub_cli("-m", "gpt.hub", "push", str(tiny_model), "--repo", "alice/x", token=False)
    assert r.returncode != 0 and "no Hugging Face token" in r.stderr and "hf auth login" in r.stderr
    fresh_cache(tmp_path, monkeypatch)
    with pytest.raises(ModelNotFoundError, match="no such model repo"):
        gpt.load("alice/does-not-exist")
    push(tiny_model, "alice/broken")
    HfApi(token=TOKEN).create_commit("alice/broken", [CommitOperationDelete("tokenizer.json")], commit_message="oops")
    with pytest.raises(ModelFileError, match="tokenizer.json missing"):
        gpt.load("alice/broken")
    with pytest.raises(ModelNotFoundError, match="revision 'nope' does not exist"):
        gpt.load("alice/broken", revision="nope")


def front_matter(card: bytes) -> dict:
    return SpaceCard(card.decode()).data.to_dict()


def test_deploy_a_space_serving_a_hub_model(hub, token, hub_cli):
    r = hub_cli("-m", "gpt.hub", "deploy", "--space", "alice/chat", "--model", "alice/play", "--hardware", "zero-a10g")
    assert r.returncode == 0, r.stderr
    assert "spaces/alice/chat" in r.stdout
    files = hub.files("space", "alice/chat")
    data = {"gpt/training/presets.json", "gpt/ui/static/style.css", "gpt/ui/static/head.html"}  # what the code reads
    expected = {".gitattributes", "README.md", "app.py", "requirements.txt", *data} | {
        p.relative_to(ROOT).as_posix() for p in (ROOT / "gpt").rglob("*.py") if "__pycache__" not in p.parts
    }
    assert set(files) == expected
    meta = front_matter(files["README.md"])
    assert meta["sdk"] == "gradio" and meta["sdk_version"] == GRADIO
    assert files["requirements.txt"] == (ROOT / "requirements.txt").read_bytes()  # gradio[mcp]==GRADIO with the rest
    assert meta["app_file"] == "app.py" and meta["python_version"] == "3.11"
    assert meta["models"] == ["alice/play"] and meta["preload_from_hub"][0].startswith("alice/play config.json")
    assert meta["short_description"] and meta["license"] == "mit"
    assert hub.repos[("space", "alice/chat")].variables == {"MODEL_ID": "alice/play"}
    assert files["app.py"] == (ROOT / "app.py").read_bytes()


def test_deploy_a_space_with_a_bundled_model(hub, token, tiny_model, tmp_path):
    bundle = tmp_path / "play"
    shutil.copytree(tiny_model, bundle, ignore=shutil.ignore_patterns("checkpoint"))
    url = deploy("alice/bundled", app_files(ROOT), "MODEL_ID", bundle=bundle)
    assert url.endswith("/spaces/alice/bundled")
    files = hub.files("space", "alice/bundled")
    assert {f"weights/play/{f}" for f in MODEL_FILES} <= set(files)
    assert not any("/checkpoint/" in f or f.startswith(("tests/", "bench/")) for f in files)
    assert "gpt/training/presets.json" in files  # the package's data travels with its code
    assert "models" not in front_matter(files["README.md"])
    assert hub.repos[("space", "alice/bundled")].variables == {"MODEL_ID": "weights/play"}


def test_deploy_checks_the_model_first(hub, token, hub_cli):
    for model, message in [("alice/missing", "no such model repo"), ("alice/play@nope", "revision 'nope' does not")]:
        r = hub_cli("-m", "gpt.hub", "deploy", "--space", "alice/never", "--model", model)
        assert r.returncode != 0 and message in r.stderr and "Traceback" not in r.stderr
    assert ("space", "alice/never") not in hub.repos


def test_deploy_pins_a_revision_and_redeploys_exactly(hub, token, tiny_model):
    _, commit = push(tiny_model, "alice/pinned")
    deploy("alice/switch", app_files(ROOT), "MODEL_ID", bundle=tiny_model)
    assert any(f.startswith("weights/") for f in hub.files("space", "alice/switch"))
    deploy("alice/switch", app_files(ROOT), "MODEL_ID", model=f"alice/pinned@{commit}")
    files = hub.files("space", "alice/switch")
    assert not any(f.startswith("weights/") for f in files)
    assert set(files) == {".gitattributes", "README.md", *app_files(ROOT)}
    assert hub.repos[("space", "alice/switch")].variables["MODEL_ID"] == f"alice/pinned@{commit}"
    assert front_matter(files["README.md"])["models"] == ["alice/pinned"]


def test_private_models_need_a_token_and_a_space_can_get_one(hub, token, tiny_model, tmp_path, monkeypatch, hub_cli):
    push(tiny_model, "alice/secret", private=True)
    fresh_cache(tmp_path, monkeypatch)
    monkeypatch.delenv("HF_TOKEN")
    with pytest.raises(ModelNotFoundError, match="private: log in, or pass a token"):
        gpt.load("alice/secret", device="cpu")
    assert gpt.load("alice/secret", device="cpu", token=TOKEN).generate("ROMEO:", max_new_tokens=5)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    r = hub_cli("-m", "gpt.hub", "deploy", "--space", "alice/private-chat", "--model", "alice/secret", "--share-token")
    assert r.returncode == 0, r.stderr
    assert hub.repos[("space", "alice/private-chat")].secrets == {"HF_TOKEN": TOKEN}
    deploy("alice/public-chat", app_files(ROOT), "MODEL_ID", model="alice/secret")
    assert hub.repos[("space", "alice/public-chat")].secrets == {}


def test_repo_id_with_a_revision_loads_everywhere(hub, token, tiny_model, names_model, tmp_path, monkeypatch, hub_cli):
    _, first = push(tiny_model, "alice/at-revision")
    push(names_model, "alice/at-revision")
    fresh_cache(tmp_path, monkeypatch)
    assert not gpt.load(f"alice/at-revision@{first}", device="cpu").tokenizer.documents
    assert gpt.load(f"alice/at-revision@{first}", device="cpu").model.config.block_size == 32
    r = hub_cli("-m", "gpt.sample", f"alice/at-revision@{first}", "--max-new-tokens", "5", "--prompt", "ROMEO:")
    assert r.returncode == 0 and r.stdout.startswith("ROMEO:"), r.stderr


@pytest.mark.parametrize(
    "name, revision, message",
    [
        ("alice/nothing-here", None, "no such model repo"),
        ("alice/play", "nope", "revision 'nope' does not exist"),
        ("not/a/repo", None, "neither a model folder nor a Hub repo id"),
    ],
)
def test_load_errors_name_what_was_tried(hub, token, tmp_path, monkeypatch, name, revision, message):
    fresh_cache(tmp_path, monkeypatch)
    with pytest.raises(ModelNotFoundError, match=message):
        gpt.load(name, revision=revision)


def test_load_offline_and_uncached_says_so(tmp_path, monkeypatch):
    from huggingface_hub import constants

    fresh_cache(tmp_path, monkeypatch)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelNotFoundError, match="not in the local Hugging Face cache"):
        gpt.load("alice/never-seen")


def test_push_without_a_network_is_one_line(tiny_model, hub_cli):
    """No Hub to reach (nothing listens at the endpoint): one line and a non-zero exit, as loading says offline."""
    r = hub_cli("-m", "gpt.hub", "push", str(tiny_model), "--repo", "alice/offline", HF_ENDPOINT="http://127.0.0.1:9")
    assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.strip().count("\n") == 0 and "cannot reach the Hub at http://127.0.0.1:9" in r.stderr


def push_lines(repo: str, lines: list[str], column: str = "line") -> str:
    """A dataset repo whose one data file holds the lines as rows of `column`; the commit's sha."""
    import json

    api = HfApi(token=TOKEN)
    api.create_repo(repo, repo_type="dataset", exist_ok=True)
    rows = "".join(json.dumps({column: line, "n": i}) + "\n" for i, line in enumerate(lines)).encode()
    return api.upload_file(path_or_fileobj=rows, path_in_repo="data/train.jsonl", repo_id=repo, repo_type="dataset").oid


def test_data_from_a_hub_dataset_trains_as_the_same_text_in_a_file(hub, token, tmp_path):
    """--data owner/name reads the dataset through `datasets`: the same splits, losses and record as a file of its
    rows, the card's metadata naming the dataset."""
    import json

    from conftest import make_play

    from gpt.training.train import main

    lines = make_play(200).split("\n")
    push_lines("alice/play", lines)
    (tmp_path / "play.txt").write_text("\n".join(lines))
    tiny = "--max-steps 4 --eval-interval 2 --eval-steps 2 --n-layer 1 --n-head 2 --n-embd 16 --block-size 16".split()
    main(["--data", "alice/play", "--text-column", "line", "--out", str(tmp_path / "hub"), *tiny])
    main(["--data", str(tmp_path / "play.txt"), "--out", str(tmp_path / "file"), *tiny])
    hub_run, file_run = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("hub", "file"))
    assert [e["val_loss"] for e in hub_run["curve"]] == [e["val_loss"] for e in file_run["curve"]]
    assert hub_run["run"]["exact_val_loss"] == file_run["run"]["exact_val_loss"]
    record = hub_run["run"]["text"]
    assert record.pop("file") == "alice/play" and record.pop("dataset") == "alice/play"
    assert record == {k: v for k, v in file_run["run"]["text"].items() if k != "file"}
    card = (tmp_path / "hub" / "README.md").read_text()
    assert "datasets:\n- alice/play" in card and "Data: `alice/play` on the Hub" in card


def test_a_hub_dataset_revision_and_its_errors(hub, token):
    from gpt.training.data import DataError, read_text

    first = push_lines("alice/versions", ["one", "two"])
    push_lines("alice/versions", ["three"])
    assert read_text("alice/versions", "line") == "three"
    assert read_text(f"alice/versions@{first}", "line") == "one\ntwo"
    with pytest.raises(DataError, match=r"no column 'text' \(it has line, n\): give --text-column"):
        read_text("alice/versions")
    with pytest.raises(DataError, match="column 'n' holds other values than text"):
        read_text("alice/versions", "n")
    with pytest.raises(DataError, match="alice/missing: no such file, nor a Hub dataset that can be read"):
        read_text("alice/missing")


def test_a_missing_hub_dataset_is_one_line_from_the_trainer(tmp_path, cli):
    r = cli("-m", "gpt.train", "--data", "alice/not-there", "--out", str(tmp_path / "m"), env={"HF_HUB_OFFLINE": "1"})
    assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.strip().count("\n") == 0 and "alice/not-there: no such file, nor a Hub dataset" in r.stderr
