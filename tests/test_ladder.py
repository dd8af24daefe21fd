"""The makemore ladder: bigram, MLP and WaveNet train, save, resume, score and sample with the GPT's tools."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import gpt
import gpt.training.train
from gpt.models.window import ARCHS, WindowCache, WindowConfig
from gpt.storage.folder import build_model
from gpt.training.eval import validation_loss

pytestmark = pytest.mark.slow  # the slow tier: trains, serves or starts processes

SHAPES = {
    "bigram": [],
    "mlp": ["--block-size", "3", "--n-embd", "8", "--n-hidden", "32"],
    "wavenet": ["--block-size", "4", "--n-embd", "8", "--n-hidden", "32"],
}


def train(data: Path, out: Path, arch: str, *extra: str) -> None:
    gpt.training.train.main(
        [
            "--data",
            str(data),
            "--out",
            str(out),
            "--docs",
            "--arch",
            arch,
            *SHAPES[arch],
            *"--batch-size 16 --lr 1e-2 --warmup-steps 2 --eval-interval 10 --eval-steps 2".split(),
            *extra,
        ]
    )


@pytest.fixture(scope="module", params=ARCHS)
def trained(request, tmp_path_factory, names_file) -> tuple[str, Path]:
    out = tmp_path_factory.mktemp("ladder") / request.param
    train(names_file, out, request.param, "--max-steps", "40")
    return request.param, out


def test_each_rung_learns_and_saves_a_folder_for_this_library(trained, names_file):
    arch, out = trained
    metrics = json.loads((out / "metrics.json").read_text())
    losses = [c["val_loss"] for c in metrics["curve"]]
    assert losses[-1] < losses[0] - 0.15
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "gpt-window" and config["arch"] == arch
    lm = gpt.load(out, device="cpu")
    assert lm.windowed and not lm.model.training
    card = (out / "README.md").read_text()
    assert "for the `gpt` library" in card and "pipeline(" not in card and f"arch={arch}" in card
    assert metrics["run"]["exact_val_loss"] == pytest.approx(validation_loss(lm, names_file.read_text())[0])
    assert metrics["run"]["data"] == names_file.name  # the record names the file, not this machine's folders


def test_batchnorm_statistics_are_saved_and_used_in_eval(trained):
    """The running statistics reach the folder, and in eval mode a window's logits do not depend on its batch."""
    arch, out = trained
    lm = gpt.load(out, device="cpu")
    stats = {k: v for k, v in load_file(str(out / "model.safetensors")).items() if "running_mean" in k}
    assert (arch == "bigram") == (not stats)
    assert all(v.abs().sum() > 0 for v in stats.values())  # moved away from their initial zeros
    x = torch.tensor([[0, 3, 5, 2, 7, 1]])
    alone = lm.model(x)[0]
    crowd = lm.model(torch.cat([x, torch.randint(lm.tokenizer.vocab_size, (7, 6))]))[0][:1]
    # Equal up to rounding: BLAS may round a 1-row and an 8-row matmul differently (2e-6 on an AMD EPYC); batch
    # statistics would move these logits by 2-5.
    torch.testing.assert_close(alone, crowd, rtol=0, atol=1e-4)


def test_decoding_with_the_window_cache_equals_rerunning_the_whole_sequence(trained):
    _, out = trained
    model = gpt.load(out, device="cpu").model
    seq = torch.randint(model.config.vocab_size, (3, 12), generator=torch.Generator().manual_seed(0))
    full = model(seq)[0]
    cache = WindowCache.empty(model.config, 3)
    stepped = torch.cat(
        [model(seq[:, :5], cache=cache)[0]] + [model(seq[:, t : t + 1], cache=cache)[0] for t in range(5, 12)], dim=1
    )
    torch.testing.assert_close(stepped, full)


def test_sampling_repeats_with_a_seed_and_batches_match_single_runs(trained):
    _, out = trained
    lm = gpt.load(out, device="cpu")
    batch = lm.generate_batch(["", "e", "ma"], max_new_tokens=20, temperature=1.0, seed=5)
    assert batch == lm.generate_batch(["", "e", "ma"], max_new_tokens=20, temperature=1.0, seed=5)
    assert batch[1] == lm.generate("e", max_new_tokens=20, temperature=1.0, seed=6)
    assert any(batch) and all(set(s) <= set(lm.tokenizer.chars) for s in batch)


@pytest.mark.parametrize("arch", ["mlp", "wavenet"])
def test_resume_equals_an_uninterrupted_run_including_batchnorm_statistics(tmp_path, names_file, arch):
    train(names_file, tmp_path / "full", arch, "--max-steps", "20")
    train(names_file, tmp_path / "split", arch, "--max-steps", "10", "--lr-decay-steps", "20")
    gpt.training.train.main(["--out", str(tmp_path / "split"), "--resume", "--max-steps", "20"])
    full, split = (load_file(str(tmp_path / p / "checkpoint" / "state-20.safetensors")) for p in ("full", "split"))
    assert full.keys() == split.keys() and any("running_var" in k for k in full)
    for key in full:
        if key.startswith("model."):
            assert torch.equal(full[key], split[key]), key


@pytest.mark.parametrize(
    "arch, settings",
    [
        ("bigram", {}),
        ("mlp", {"block_size": 3, "n_embd": 10, "n_hidden": 200}),
        ("wavenet", {"block_size": 8, "n_embd": 24, "n_hidden": 128}),
    ],
)
def test_parameter_counts_match_the_lectures(arch, settings):
    config = WindowConfig(arch=arch, vocab_size=27, **settings)
    model = build_model(config)
    assert sum(p.numel() for p in model.parameters()) == config.num_params()
    assert config.num_params() == {"bigram": 729, "mlp": 12097, "wavenet": 76579}[arch]


def test_bad_ladder_settings_are_one_line_errors(refused, names_file, tmp_path):
    r = refused(
        "-m",
        "gpt.train",
        "--data",
        str(names_file),
        "--out",
        str(tmp_path / "m"),
        *"--arch wavenet --block-size 6".split(),
    )
    assert (
        r.returncode == 1 and r.stderr.strip() == "error: --block-size 6: wavenet needs a power of two (it fuses pairs)"
    )
    r = refused(
        "-m", "gpt.train", "--data", str(names_file), "--out", str(tmp_path / "m"), "--arch", "mlp", "--dropout", "0.1"
    )
    assert r.returncode == 1 and "--dropout, --bias and the block's switches are for --arch gpt" in r.stderr


def test_the_api_and_the_sampling_cli_serve_a_rung(trained, serving, cli):
    """Batched streaming through the engine, several requests at once, each equal to the library's own sample."""
    import concurrent.futures

    import httpx

    _, out = trained
    lm = gpt.load(out, device="cpu")
    with serving(lm) as (url, _):

        def name(seed: int) -> str:
            body = {"model": "play", "prompt": "", "max_tokens": 30, "temperature": 1.0, "seed": seed}
            r = httpx.post(f"{url}/v1/completions", json=body, timeout=60)
            assert r.status_code == 200, r.text
            return r.json()["choices"][0]["text"]

        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            names = list(pool.map(name, range(4)))
    assert names == [lm.generate("", max_new_tokens=30, temperature=1.0, seed=s) for s in range(4)]
    r = cli("-m", "gpt.sample", str(out), *"--prompt ma --seed 3 --max-new-tokens 30 --temperature 1 --top-k 0".split())
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "ma" + lm.generate("ma", max_new_tokens=30, temperature=1.0, seed=3)


def test_the_app_speaks_of_a_rung_in_whole_numbers_and_hides_what_it_lacks(trained):
    from gpt.serving.catalog import Catalog
    from gpt.ui.context import Context
    from gpt.ui.model_tab import ModelTab, model_texts
    from gpt.ui.playground_tab import Playground

    arch, folder = trained
    ctx = Context(Catalog.from_settings(str(folder), None, None))
    lm = ctx.lm(arch)
    n, window = lm.model.num_params(), lm.model.config.block_size
    assert f"({n:,} parameters" in model_texts(arch, lm)["current"]  # whole, not "0.00M"
    refusal = Playground(ctx).check_attention("em", 0, 0, arch)[3]
    unit = "character" if window == 1 else "characters"  # the bigram reads "a window of 1 character"
    assert f"a fixed window of {window} {unit}." in refusal["message"] and not refusal["is_valid"]
    update = ModelTab(ctx).choose_model(arch)
    layer, head, all_heads, show_attention = update[5:9]
    assert not any(u["visible"] for u in (layer, head, all_heads, show_attention))
    ctx.catalog.close()


def test_the_post_training_rung_answers_one_request_with_each_stage():
    import asyncio

    from conftest import ROOT

    from gpt.posttraining.names_task import parse
    from gpt.serving.catalog import Catalog
    from gpt.ui.context import Context
    from gpt.ui.ladder_tab import Ladder, check_request

    weights = ROOT / "weights"
    folders = ",".join(str(weights / n) for n in ("names-assistant", "names-assistant-sft", "names-assistant-base"))
    ladder = Ladder(Context(Catalog.from_settings(folders, None, None)))
    assert ladder.assistant_stages() == ["names-assistant-base", "names-assistant-sft", "names-assistant"]
    request = 'A name that starts with "ma" and has 6 letters.'
    rows = asyncio.run(ladder.post_training(request, "3")).splitlines()[2:]
    assert [r.split(" | ")[1] for r in rows] == ladder.assistant_stages()
    for row in rows:
        answer, verdict = row.split(" | ")[2:4]
        assert answer.startswith("ma") or "starts" in verdict  # the base is prompted with the letters
        assert (verdict == "yes") == parse(request).met(answer)
    assert not check_request("A name that has 2 letters.", "3")[0]["is_valid"]
    assert "from 3 to 12" in check_request("A name that has 2 letters.", "3")[0]["message"]
    ladder.ctx.catalog.close()
