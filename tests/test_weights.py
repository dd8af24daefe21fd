"""The shipped models in weights/: they load, agree with themselves, and write what they were trained on."""

import json
import re
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

import gpt
from gpt.models.tokenizer import END, CharTokenizer
from gpt.serving.decode import DecodeBatch
from gpt.serving.sampling import SamplingParams
from gpt.storage.folder import MODEL_FILES, load_model

pytestmark = pytest.mark.slow  # the slow tier: trains, serves or starts processes

WEIGHTS = Path(__file__).resolve().parents[1] / "weights"
SHIPPED = ["shakespeare-char", "shakespeare-chat", "names"]
ASSISTANT = ["names-assistant-base", "names-assistant-sft", "names-assistant"]


@pytest.mark.parametrize("name", SHIPPED + ASSISTANT)
def test_shipped_folder_is_complete_and_consistent(name):
    folder = WEIGHTS / name
    for f in MODEL_FILES:
        assert (folder / f).is_file(), f"{name}/{f}"
        assert (folder / f).stat().st_size <= 25 * 2**20
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "gpt2" and config["architectures"] == ["GPT2LMHeadModel"]
    assert config["vocab_size"] == CharTokenizer.load(folder).vocab_size
    with safe_open(folder / "model.safetensors", "pt") as f:
        assert f.get_slice("transformer.wte.weight").get_shape() == [config["vocab_size"], config["n_embd"]]
        assert f.get_slice("transformer.wpe.weight").get_shape() == [config["n_positions"], config["n_embd"]]
    card = (folder / "README.md").read_text()
    assert card.startswith("---\n") and "pipeline_tag: text-generation" in card and "python -m gpt.train" in card
    assert "library_name: transformers" in card and "model-index" in card and "## Samples" in card
    assert load_model(folder).config.n_layer == config["n_layer"]


@pytest.fixture(scope="module")
def shakespeare():
    return gpt.load(WEIGHTS / "shakespeare-char", device="cpu")


def test_shakespeare_greedy_is_deterministic_and_has_the_plays_shape(shakespeare):
    text = shakespeare.generate("ROMEO:\n", max_new_tokens=300, temperature=0)
    assert text == shakespeare.generate("ROMEO:\n", max_new_tokens=300, temperature=0)
    sample = shakespeare.generate("\n", max_new_tokens=600, temperature=0.8, top_k=40, seed=1)
    speakers = re.findall(r"^([A-Z][A-Za-z ]+):$", sample, flags=re.M)
    assert len(speakers) >= 2, sample  # speaker lines ending in ':'
    assert sum(word in sample.lower().split() for word in ("the", "and", "to", "of", "i", "my")) >= 3


def test_names_model_makes_lowercase_names_that_end():
    lm = gpt.load(WEIGHTS / "names", device="cpu")
    assert lm.tokenizer.documents
    names = lm.generate_batch([""] * 30, max_new_tokens=lm.block_size, temperature=1.0, seed=0)
    finished = [n for n in names if 0 < len(n) < lm.block_size]
    assert len(finished) >= 25
    assert all(re.fullmatch(r"[a-z]+", n) for n in finished)
    assert names == lm.generate_batch([""] * 30, max_new_tokens=lm.block_size, temperature=1.0, seed=0)


LADDER = {"names-bigram": 2.46, "names-mlp": 2.10, "names-wavenet": 1.99}  # the lectures' figures, rounded up


@pytest.mark.parametrize("name", LADDER)
def test_shipped_ladder_rungs_are_complete_and_reach_their_lecture(name):
    folder = WEIGHTS / name
    for f in MODEL_FILES:
        assert (folder / f).is_file(), f"{name}/{f}"
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "gpt-window" and f"names-{config['arch']}" == name
    card = (folder / "README.md").read_text()
    assert f"--preset {name}" in card and "for the `gpt` library" in card and "fixed split" in card
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["run"]["exact_val_loss"] <= LADDER[name]
    lm = gpt.load(folder, device="cpu")
    names = lm.generate_batch([""] * 20, max_new_tokens=40, temperature=1.0, seed=0)
    assert sum(0 < len(n) < 40 for n in names) >= 18 and all(re.fullmatch(r"[a-z]*", n) for n in names)


def test_each_rung_of_the_ladder_beats_the_one_below():
    losses = [
        json.loads((WEIGHTS / n / "metrics.json").read_text())["run"]["exact_val_loss"] for n in [*LADDER, "names"]
    ]
    assert losses == sorted(losses, reverse=True)


def test_flagship_is_a_cpu_run_of_the_preset_with_a_256_context_at_nanogpts_loss():
    folder = WEIGHTS / "shakespeare-char"
    run = json.loads((folder / "metrics.json").read_text())["run"]
    assert run["command"].startswith("python -m gpt.train --preset shakespeare-char ")
    assert run["device"] == "cpu" and run["wall_time_s"] <= 150 * 60
    assert json.loads((folder / "config.json").read_text())["n_positions"] >= 256
    assert run["exact_val_loss"] <= 1.47  # nanoGPT's shakespeare_char on an A100: 1.4697
    assert gpt.load(folder, device="cpu").block_size == 256


def test_names_is_a_cpu_run_of_the_preset_at_or_under_1_90():
    run = json.loads((WEIGHTS / "names" / "metrics.json").read_text())["run"]
    assert run["command"].startswith("python -m gpt.train --preset names ") and run["device"] == "cpu"
    assert run["exact_val_loss"] <= 1.90  # issue #9; makemore's transformer: about 1.92


# shakespeare-char is shakespeare-chat's shape (its graphs differ only in the vocabulary): one of them is enough
@pytest.mark.parametrize("name", ["shakespeare-chat", "names"])
def test_compiled_decoding_of_a_shipped_model_is_its_uncompiled_decoding_for_250_tokens(name):
    lm = gpt.load(WEIGHTS / name, device="cpu", compile=True)
    prompt = lm.encode_prompt("")
    for params in (SamplingParams(temperature=0), SamplingParams(temperature=0.8, top_k=40, seed=1)):
        tokens = []
        for compiled in (lm.compiled, None):
            batch = DecodeBatch(lm.model, 1, compiled)
            batch.add([prompt], [params])
            tokens.append([int(batch.step()[0][0]) for _ in range(250)])  # past a document's end, too
        assert tokens[0] == tokens[1]
    assert not lm.compiled.failed


def test_shipped_microgpt_was_trained_by_the_scalar_engine_and_scores_the_same_in_torch():
    """weights/names-microgpt: microgpt's configuration trained in pure Python to microgpt's figure (at most 2.40 mean
    loss over its last 100 steps); the torch GPT from its folder and the scalar GPT from the same weights agree."""
    from gpt.models.microgpt import document_loss, from_torch

    folder = WEIGHTS / "names-microgpt"
    for f in [f for f in MODEL_FILES if f != "loss.png"]:  # no validation curve: the loop is pure Python
        assert (folder / f).is_file(), f"names-microgpt/{f}"
    run = json.loads((folder / "metrics.json").read_text())["run"]
    assert run["last_100_train_loss"] <= 2.40 and run["settings"]["max_steps"] == 1000
    assert "python -m gpt.microgpt" in (folder / "README.md").read_text()
    lm = gpt.load(folder, device="cpu")
    config = lm.model.config
    assert (config.n_layer, config.n_head, config.n_embd, config.block_size) == (1, 4, 16, 16)
    assert json.loads((folder / "config.json").read_text())["tie_word_embeddings"] is False  # microgpt's own head
    assert not config.tie_embeddings
    params = from_torch(lm.model)
    for name in ("emma", "olivia", "christopher"):
        ids = lm.encode_prompt(name) + [lm.tokenizer.boundary_id]
        x = torch.tensor([ids[:-1][: config.block_size]])
        y = torch.tensor([ids[1:][: config.block_size]])
        assert document_loss(params, config, ids).data == pytest.approx(lm.model(x, y)[1].item(), abs=1e-6)


def test_the_chat_model_is_the_flagship_chat_tuned_on_the_cpu_and_measured_against_it():
    folder = WEIGHTS / "shakespeare-chat"
    run = json.loads((folder / "metrics.json").read_text())["run"]
    assert run["command"].startswith("python -m gpt.train --init-from weights/shakespeare-char --sft ")
    assert run["device"] == "cpu" and run["wall_time_s"] <= 30 * 60 and run["base_model"]["on_hub"] is False
    bench = json.loads((folder / "metrics.json").read_text())["chat_bench"]
    base, chat = bench["base"], bench["chat"]
    assert chat["reply_loss"] < base["reply_loss"] and chat["ended"] > base["ended"]
    assert chat["role_leak"] <= base["role_leak"] + 0.01  # within three replies of 292: sampling noise
    assert chat["pretraining_val_loss"] <= base["pretraining_val_loss"] + 0.02  # it forgot little of the play
    card = (folder / "README.md").read_text()
    assert "## Chat, measured" in card and "fine-tuned for chat from `weights/shakespeare-char`" in card
    assert "chat_prompt(lm" in card and '"role": "user"' in card  # the usage is a chat's
    config = json.loads((folder / "tokenizer_config.json").read_text())
    assert config["eos_token"] == END and "<|assistant|>" in config["chat_template"]
    assert "\n<|end|>" in config["chat_template"]  # the format the library writes now


def test_the_chat_model_answers_and_ends_its_turns():
    from gpt.serving.chat import chat_prompt

    lm = gpt.load(WEIGHTS / "shakespeare-chat", device="cpu")
    said = ["Good morrow, sir.", "What news from the court?", "Where is my lord?", "I pray you, hear me.", "Farewell."]
    ended = 0
    for i, message in enumerate(said):
        prompt = chat_prompt(lm, [], message)
        completion = lm.complete(prompt.text, max_new_tokens=200, temperature=0.8, top_k=40, seed=i, stop=prompt.stop)
        reply = "".join(t.text for t in completion)
        ended += completion.finish_reason == "stop" and bool(reply.strip()) and "<|" not in reply
    assert ended >= 4, ended


def test_the_names_assistant_was_made_in_three_stages_on_the_cpu_within_30_minutes():
    runs = [json.loads((WEIGHTS / n / "metrics.json").read_text())["run"] for n in ASSISTANT]
    base, sft, rl = runs
    assert base["command"].startswith("python -m gpt.train --data ") and "--chars" in base["command"]
    assert sft["command"].startswith("python -m gpt.train --init-from weights/names-assistant-base --sft ")
    assert rl["command"].startswith("python -m gpt.train --init-from weights/names-assistant-sft --rl ")
    assert rl["settings"]["rl"] == "gpt.names_task:namelike_reward" and rl["settings"]["kl"] > 0
    assert all(r["device"] == "cpu" for r in runs) and sum(r["wall_time_s"] for r in runs) <= 30 * 60
    assert rl["val_reward"] > rl["start_val_reward"] + 0.1  # every held-out prompt, at the app's sampling
    bench = json.loads((WEIGHTS / "names-assistant" / "metrics.json").read_text())["assistant_bench"]
    stages = bench["stages"]
    assert bench["requests"] >= 500 and stages["rl"]["sampled"]["met"] >= 0.9
    assert stages["rl"]["sampled"]["met"] >= stages["sft"]["sampled"]["met"] + 0.1 > stages["base"]["sampled"]["met"]
    assert stages["base"]["sampled"]["name_loss"] <= 1.1 * bench["validation_names_loss"]  # pre-training: names
    assert stages["rl"]["sampled"]["name_loss"] <= 1.1 * bench["validation_names_loss"]  # names, not strings of letters
    card = (WEIGHTS / "names-assistant" / "README.md").read_text()
    assert "RL-tuned from `weights/names-assistant-sft`" in card and "## The three stages, measured" in card
    assert (
        "python -m gpt.names_task names.txt --out-dir out/names-assistant" in card
        and card.count("python -m gpt.train") >= 3
    )


def test_the_names_assistant_meets_requests_it_was_never_shown():
    from gpt.posttraining.names_task import parse
    from gpt.serving.chat import chat_prompt

    lm = gpt.load(WEIGHTS / "names-assistant", device="cpu")
    requests = [
        'A name that starts with "zo" and has 4 letters.',
        'A name that ends with "ine".',
        'A name that starts with "k", ends with "a" and has 5 letters.',
        'A name that has 8 letters and contains "ar".',
    ]
    met = 0
    for i, request in enumerate(requests):
        prompt = chat_prompt(lm, [], request)
        reply = lm.generate(prompt.text, stop=prompt.stop, max_new_tokens=32, temperature=0.8, top_k=40, seed=i)
        met += parse(request).met(reply)
    assert met >= 3
