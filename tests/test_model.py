import json

import pytest
import torch

from gpt.models.model import GPT, GPTConfig, KVCache
from gpt.posttraining.rl import token_logprobs
from gpt.storage.folder import ModelFileError, load_model, write_weights
from gpt.storage.layout import family

CFG = GPTConfig(vocab_size=23, block_size=16, n_layer=2, n_head=2, n_embd=32)
MODERN = {"rotary": True, "rms_norm": True, "mlp": "swiglu"}
BLOCKS = {  # GPT-2's, Llama's, Qwen3's with its own head, and a mix no family has
    "gpt2": {},
    "llama": MODERN,
    "qwen3": {**MODERN, "qk_norm": True, "tie_embeddings": False},
    "mix": {"rotary": True, "qk_norm": True, "mlp": "relu2"},
}
every_block = pytest.mark.parametrize("block", BLOCKS)


def model(seed=0, **kw):
    torch.manual_seed(seed)
    return GPT(GPTConfig(**{**CFG.__dict__, **kw})).eval()


@every_block
def test_forward_shapes_loss_and_tied_head(block):
    m = model(**BLOCKS[block])
    idx = torch.randint(0, 23, (3, 10))
    logits, loss = m(idx, idx)
    assert logits.shape == (3, 10, 23)
    assert loss.shape == () and 2.5 < loss.item() < 3.8  # about ln(23) at initialisation
    assert (m.lm_head.weight is m.transformer.wte.weight) == m.config.tie_embeddings
    assert m.num_params() == sum(p.numel() for p in m.parameters())
    assert hasattr(m.transformer, "wpe") != m.config.rotary  # rotary positions: no position embedding


def test_dropout_acts_only_in_training():
    m = model(dropout=0.5)
    idx = torch.randint(0, 23, (2, 8))
    assert torch.equal(m(idx)[0], m(idx)[0])  # eval: deterministic, as in decoding
    m.train()
    assert not torch.equal(m(idx)[0], m(idx)[0])
    torch.manual_seed(1)
    first = m(idx)[0]
    torch.manual_seed(1)
    assert torch.equal(m(idx)[0], first)  # the same random stream gives the same masks (exact resume relies on it)


def test_ignored_targets_do_not_count():
    m = model()
    idx = torch.randint(0, 23, (2, 8))
    targets = idx.clone()
    targets[:, 4:] = -1
    logits, loss = m(idx, targets)
    expected = torch.nn.functional.cross_entropy(logits[:, :4].reshape(-1, 23), idx[:, :4].reshape(-1))
    assert torch.allclose(loss, expected)


def test_too_long_sequence_is_a_clear_error():
    with pytest.raises(ValueError, match="longer than the context"):
        model()(torch.zeros(1, 17, dtype=torch.long))


@every_block
def test_kv_cache_prefill_chunk_then_steps_equals_full_forward(block):
    m = model(**BLOCKS[block])
    idx = torch.randint(0, 23, (2, 16))
    full, _ = m(idx)
    cache = KVCache.empty(m.config, 2)
    parts = [m(idx[:, :5], cache=cache)[0], m(idx[:, 5:7], cache=cache)[0]]  # a chunk after cached tokens
    for t in range(7, 16):
        parts.append(m(idx[:, t : t + 1], cache=cache)[0])
    assert torch.allclose(torch.cat(parts, dim=1), full, atol=1e-5)
    assert cache.pos.tolist() == [16, 16]


@every_block
def test_kv_cache_rows_at_different_positions(block):
    m = model(**BLOCKS[block])
    a, b = torch.randint(0, 23, (1, 12)), torch.randint(0, 23, (1, 5))
    cache = KVCache.empty(m.config, 2)
    m(a[:, :-1], cache=cache.rows(0, 1))
    m(b[:, :-1], cache=cache.rows(1, 2))
    step, _ = m(torch.stack([a[0, -1:], b[0, -1:]]), cache=cache)
    assert torch.allclose(step[0, -1], m(a)[0][0, -1], atol=1e-5)
    assert torch.allclose(step[1, -1], m(b)[0][0, -1], atol=1e-5)


@every_block
def test_replies_packed_after_their_shared_prompt_score_and_learn_as_rows_of_their_own(block):
    """RL's and DPO's log-probabilities: each prompt once, its replies after it (token_logprobs in
    gpt/posttraining/rl.py)."""
    a, b = torch.randint(0, 23, (6,)).tolist(), torch.randint(0, 23, (4,)).tolist()
    prompts = [a, b, a, a, b]  # a prompt's replies need not be next to each other (DPO: chosen ..., rejected ...)
    replies = [torch.randint(0, 23, (n,)).tolist() for n in (3, 1, 10, 5, 7)]  # rows up to 16: the context
    packed, alone = model(**BLOCKS[block]), model(**BLOCKS[block])
    logp, mask = token_logprobs(packed, prompts, replies)
    (logp * mask).sum().backward()
    for i, (p, r) in enumerate(zip(prompts, replies)):
        logits = alone(torch.tensor([p + r])[:, :-1])[0][0, len(p) - 1 :]
        expected = logits.log_softmax(-1).gather(1, torch.tensor(r)[:, None])[:, 0]
        assert mask[i].sum() == len(r)
        assert torch.allclose(logp[i, : len(r)], expected, atol=1e-5)
        expected.sum().backward()
    for (name, p), q in zip(packed.named_parameters(), alone.parameters()):
        assert torch.allclose(p.grad, q.grad, atol=1e-5), name


def test_a_packed_row_past_the_context_is_a_clear_error():
    with pytest.raises(ValueError, match="longer than the context"):
        token_logprobs(model(), [[1] * 10], [[2] * 7])


@every_block
def test_attention_maps_are_causal_distributions(block):
    m = model(**BLOCKS[block])
    maps = m.attention_maps(torch.randint(0, 23, (1, 9)))
    assert maps.shape == (2, 2, 9, 9)
    assert torch.allclose(maps.sum(-1), torch.ones(2, 2, 9))
    assert maps.triu(diagonal=1).abs().max() == 0


@every_block
def test_save_and_load_round_trip(tmp_path, block):
    m = model(seed=3, **BLOCKS[block])
    for p in m.parameters():  # the norms' gains too, which start at one
        torch.nn.init.normal_(p, std=0.2)
    write_weights(m, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config.get("n_embd", config.get("hidden_size")) == 32 and config.get("model_type") == family(m.config)
    loaded = load_model(tmp_path)
    assert loaded.config == m.config
    assert (loaded.lm_head.weight is loaded.transformer.wte.weight) == m.config.tie_embeddings
    idx = torch.randint(0, 23, (1, 10))
    assert torch.equal(loaded(idx)[0], m(idx)[0])


def test_half_precision_weights_load_as_float32(tmp_path):
    m = model()
    write_weights(m.to(torch.bfloat16), tmp_path)
    loaded = load_model(tmp_path)
    assert loaded.lm_head.weight.dtype == torch.float32
    assert torch.allclose(loaded.lm_head.weight, m.lm_head.weight.float())


def truncate_weights(folder):
    weights = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(weights[: len(weights) // 2])


def widen_config(folder):
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "n_embd": 64}))


@pytest.mark.parametrize(
    "damage, message",
    [
        (truncate_weights, "model.safetensors is unreadable or truncated"),
        (widen_config, "does not match config.json"),
        (lambda f: (f / "config.json").write_text('{"n_embd": '), "config.json is not valid JSON"),
        (lambda f: (f / "config.json").unlink(), "config.json is missing"),
        (lambda f: (f / "model.safetensors").unlink(), "model.safetensors is missing"),
    ],
    ids=["truncated-weights", "mismatched-config", "bad-json", "no-config", "no-weights"],
)
def test_a_bad_folder_names_the_file(tmp_path, damage, message):
    write_weights(model(), tmp_path)
    damage(tmp_path)
    with pytest.raises(ModelFileError, match=message):
        load_model(tmp_path)
