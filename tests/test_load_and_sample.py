import shutil

import pytest

import gpt
from gpt.storage.folder import ModelFileError
from gpt.storage.hub import ModelNotFoundError

pytestmark = pytest.mark.slow  # the slow tier: trains, serves or starts processes


@pytest.fixture
def sample(cli):
    return lambda *args: cli("-m", "gpt.sample", *args, env={"HF_HUB_OFFLINE": "1"})


def test_load_gives_a_working_lm(tiny_model):
    lm = gpt.load(str(tiny_model), device="cpu")
    assert lm.device.type == "cpu" and lm.model.config.vocab_size == lm.tokenizer.vocab_size
    assert isinstance(lm.generate("ROMEO:", max_new_tokens=10, seed=0), str)


def test_missing_files_and_bad_names(tmp_path, tiny_model):
    folder = tmp_path / "copy"
    shutil.copytree(tiny_model, folder)
    (folder / "tokenizer.json").unlink()
    with pytest.raises(ModelFileError, match="tokenizer.json missing"):
        gpt.load(folder)
    with pytest.raises(ModelNotFoundError, match="neither a model folder nor a Hub repo id"):
        gpt.load(tmp_path / "nowhere")
    with pytest.raises(ModelNotFoundError, match="neither a model folder nor a Hub repo id"):
        gpt.load("not a repo id!")


def test_sample_cli(tiny_model, sample):
    r = sample(str(tiny_model), "--prompt", "ROMEO:", "--max-new-tokens", "40", "--temperature", "0")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("ROMEO:") and len(r.stdout.rstrip("\n")) >= 40
    streamed = sample(str(tiny_model), "--prompt", "ROMEO:", "--max-new-tokens", "40", "--temperature", "0", "--stream")
    assert streamed.stdout == r.stdout
    seeded = [
        sample(str(tiny_model), "--max-new-tokens", "30", "--seed", "3", "--num-samples", "2").stdout for _ in range(2)
    ]
    assert seeded[0] == seeded[1] and len(set(seeded[0].split("\n---\n"))) == 2


def test_sample_cli_compiled_writes_what_it_writes_uncompiled(tiny_model, sample):
    args = [str(tiny_model), "--prompt", "ROMEO:", "--max-new-tokens", "100", "--seed", "2"]
    compiled, plain = sample(*args, "--compile"), sample(*args)
    assert compiled.returncode == 0 and "uncompiled" not in compiled.stderr, compiled.stderr
    assert compiled.stdout == plain.stdout and len(compiled.stdout) > 100


@pytest.mark.parametrize(
    "args, message",
    [
        (["--top-p", "1.5"], "top_p"),
        (["--max-new-tokens", "-3"], "max_new_tokens"),
        (["--prompt", "ROMEO#"], "'#'"),
    ],
)
def test_sample_cli_bad_input(tiny_model, args, message, refused):
    r = refused("-m", "gpt.sample", str(tiny_model), *args)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and message in r.stderr


def test_sample_cli_missing_model(tmp_path, sample):
    r = sample(str(tmp_path / "none"))
    assert r.returncode != 0 and "neither a model folder nor a Hub repo id" in r.stderr and "Traceback" not in r.stderr
