"""--init-from: fine-tune a trained folder or Hub model on new text, keeping its shape and tokenizer."""

import json

from conftest import make_play
from huggingface_hub import ModelCard

STEPS = "--max-steps 20 --eval-interval 10 --eval-steps 4".split()


def fine_tune(cli, base, data, out, *flags):
    return cli("-m", "gpt.train", "--init-from", str(base), "--data", str(data), "--out", str(out), *STEPS, *flags)


def test_a_fine_tune_starts_from_the_base_keeps_its_shape_and_names_it(tmp_path, tiny_model, cli):
    text = tmp_path / "more.txt"
    text.write_text(make_play(300, seed=7))
    r = fine_tune(cli, tiny_model, text, tmp_path / "tuned")
    assert r.returncode == 0, r.stderr[-2000:]
    tuned = tmp_path / "tuned"
    base_config, config = (json.loads((f / "config.json").read_text()) for f in (tiny_model, tuned))
    dropout = ("embd_pdrop", "resid_pdrop", "attn_pdrop")  # the fine-tune's own (the finetune preset's 0.1)
    assert {k: v for k, v in config.items() if k not in dropout} == {
        k: v for k, v in base_config.items() if k not in dropout
    }
    assert (tuned / "tokenizer.json").read_text() == (tiny_model / "tokenizer.json").read_text()
    metrics = json.loads((tuned / "metrics.json").read_text())
    assert metrics["curve"][0]["val_loss"] < 3.0  # a fresh model starts near ln(vocabulary) = 4.1
    assert metrics["run"]["settings"]["lr"] == 3e-4  # the finetune preset
    card = (tuned / "README.md").read_text()
    meta = ModelCard(card).data.to_dict()
    assert f"fine-tuned from `{tiny_model.name}`" in card and "fine-tuned" in meta["tags"] and "base_model" not in meta
    assert str(tiny_model.parent) not in card + (tuned / "metrics.json").read_text()  # no machine paths anywhere
    assert f"python -m gpt.hub push {tiny_model.name} --repo you/{tiny_model.name}" in card  # how to name the base


def test_characters_the_base_does_not_know_and_a_new_shape_are_one_line_errors(tmp_path, tiny_model, refused):
    text = tmp_path / "accents.txt"
    text.write_text(make_play(300, seed=7) + "Café crème, señor.\n")
    r = fine_tune(refused, tiny_model, text, tmp_path / "x")
    assert r.returncode != 0 and "'é'" in r.stderr and "'ñ'" in r.stderr and "Traceback" not in r.stderr
    r = fine_tune(refused, tiny_model, text, tmp_path / "y", "--n-layer", "3")
    assert r.returncode != 0 and "a fine-tune keeps its shape" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_a_fine_tune_from_a_hub_repo_id_names_it_as_base_model(hub, tmp_path, tiny_model, cli, monkeypatch):
    from test_hub import TOKEN

    from gpt.storage.hub import push

    monkeypatch.setenv("HF_TOKEN", TOKEN)
    push(tiny_model, "alice/base-play")
    text = tmp_path / "more.txt"
    text.write_text(make_play(300, seed=8))
    r = fine_tune(cli, "alice/base-play", text, tmp_path / "tuned")
    assert r.returncode == 0, r.stderr[-2000:]
    meta = ModelCard((tmp_path / "tuned" / "README.md").read_text()).data.to_dict()
    assert meta["base_model"] == "alice/base-play"
