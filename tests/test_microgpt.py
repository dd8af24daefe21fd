"""microgpt: the scalar-engine GPT is the torch GPT (same loss, same gradients) and trains into a model folder."""

import json
import random

import pytest
import torch

import gpt
from gpt.models.microgpt import Adam, document_loss, flat, init_params, to_torch, train
from gpt.models.model import GPTConfig
from gpt.models.tokenizer import CharTokenizer

NAMES = ["emma", "olivia", "ava", "isabella", "sophia", "mia", "charlotte", "amelia", "harper", "evelyn"]


@pytest.fixture
def setup():
    tokenizer = CharTokenizer.from_text("\n".join(NAMES), documents=True)
    config = GPTConfig(vocab_size=tokenizer.vocab_size, block_size=16, n_layer=1, n_head=4, n_embd=16)
    return tokenizer, config, init_params(config, random.Random(0))


def tensors(params, grad=False):
    def value(v):
        return v.grad if grad else v.data

    return {
        name: torch.tensor(
            [[value(v) for v in row] for row in t] if isinstance(t[0], list) else [value(v) for v in t],
            dtype=torch.float64,
        )
        for name, t in params.items()
    }


def torch_double(params, config):
    model = to_torch(params, config).double()
    state = tensors(params)  # the Values' own float64 weights, not their float32 copies
    state.setdefault("lm_head.weight", state["transformer.wte.weight"])
    model.load_state_dict(state)
    return model


@pytest.mark.parametrize("tied", [True, False])
@pytest.mark.parametrize("name", ["ava", "charlotte", "isabella"])
def test_the_scalar_gpt_has_the_torch_gpts_loss_and_gradients(setup, name, tied):
    tokenizer, config, _ = setup
    config = GPTConfig(**{**vars(config), "tie_embeddings": tied})
    params = init_params(config, random.Random(0))
    assert len(flat(params)) == config.num_params()
    ids = [0] + tokenizer.encode(name) + [0]
    loss = document_loss(params, config, ids)
    loss.backward()
    model = torch_double(params, config)
    _, expected = model(torch.tensor([ids[:-1]]), torch.tensor([ids[1:]]))
    expected.backward()
    assert loss.data == pytest.approx(expected.item(), abs=1e-9)
    grads, theirs = tensors(params, grad=True), dict(model.named_parameters())
    for key, g in grads.items():  # the tied head's gradient is summed into the token embedding's, as in torch
        assert (g - theirs[key].grad).abs().max().item() <= 1e-9, key


def test_a_name_longer_than_the_context_is_scored_on_its_first_block_size_tokens(setup):
    tokenizer, _, _ = setup
    config = GPTConfig(vocab_size=tokenizer.vocab_size, block_size=4, n_layer=1, n_head=2, n_embd=8)
    params = init_params(config, random.Random(1))
    ids = [0] + tokenizer.encode("charlotte") + [0]
    model = torch_double(params, config)
    _, expected = model(torch.tensor([ids[:4]]), torch.tensor([ids[1:5]]))
    assert document_loss(params, config, ids).data == pytest.approx(expected.item(), abs=1e-9)


def test_adam_decays_the_rate_to_zero_and_clears_the_gradients(setup):
    _, _, params = setup
    values = flat(params)[:3]
    optimizer = Adam(values, lr=0.01, steps=2)
    for v in values:
        v.grad = 1.0
    before = [v.data for v in values]
    optimizer.step()  # bias-corrected first step: each moves by the full rate against its gradient
    assert [round(b - v.data, 6) for b, v in zip(before, values)] == [0.01] * 3
    assert all(v.grad == 0.0 for v in values)
    for v in values:
        v.grad = 1.0
    before = [v.data for v in values]
    optimizer.step()
    assert [round(b - v.data, 6) for b, v in zip(before, values)] == [0.005] * 3  # half the rate at the half


def test_training_lowers_the_loss(setup):
    tokenizer, _, _ = setup
    config = GPTConfig(vocab_size=tokenizer.vocab_size, block_size=12, n_layer=1, n_head=2, n_embd=8)
    _, losses = train(NAMES[:3], tokenizer, config, steps=60, lr=0.02)
    assert sum(losses[-10:]) / 10 < sum(losses[:10]) / 10 - 0.3


def test_the_command_line_writes_a_folder_that_gpt_load_and_transformers_read(tmp_path, cli):
    data = tmp_path / "names.txt"
    data.write_text("\n".join(NAMES * 3) + "\n")
    out = tmp_path / "micro"
    r = cli("-m", "gpt.microgpt", "--data", str(data), "--out", str(out), "--steps", "3")
    assert r.returncode == 0, r.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    vocab = len(set("".join(NAMES))) + 1  # the boundary
    config = GPTConfig(vocab, block_size=16, n_layer=1, n_head=4, n_embd=16, tie_embeddings=False)  # microgpt's
    assert metrics["run"]["parameters"] == config.num_params() and metrics["run"]["exact_val_loss"] > 0
    assert "microgpt" in (out / "README.md").read_text()
    lm = gpt.load(out, device="cpu")
    transformers = pytest.importorskip("transformers")
    model = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    ids = torch.tensor([lm.encode_prompt("emma")])
    with torch.no_grad():
        assert (model(ids).logits - lm.model(ids)[0]).abs().max().item() <= 1e-5


@pytest.mark.parametrize(
    "args, message",
    [
        (["--steps", "0"], "error: --steps must be at least 1 and --lr above 0"),
        (["--data", "missing.txt"], "error: missing.txt: no such file"),
    ],
)
def test_bad_settings_are_one_line_errors(tmp_path, cli, args, message):
    base = {"--data": str(tmp_path / "names.txt"), "--out": str(tmp_path / "out")}
    (tmp_path / "names.txt").write_text("\n".join(NAMES) + "\n")
    for flag, value in zip(args[::2], args[1::2]):
        base[flag] = value
    r = cli("-m", "gpt.microgpt", *[x for kv in base.items() for x in kv])
    assert r.returncode == 1 and r.stderr.strip().startswith(message), r.stderr
