"""A model of a user's own text is theirs everywhere: its record, card, app texts and API; and byte-level BPE makes any
UTF-8 text trainable, sampled, streamed and served without a broken character."""

import json

import httpx
import torch
from huggingface_hub import ModelCard

import gpt
from gpt.serving.chat import chat_prompt, layout
from gpt.serving.sampling import Row, SamplingParams, Token

SHAKESPEARE = ["ROMEO", "JULIET", "Shakespeare", "shakespeare", "yonder", "morrow"]
MANY_SCRIPTS = "Un café naïve à Zürich — “日本語” 🙂🚀"


def run_record(folder) -> dict:
    return json.loads((folder / "metrics.json").read_text())["run"]


def test_code_gets_the_plain_layout_and_no_shakespeare_anywhere(code_model, code_file):
    from gpt.ui.model_tab import model_texts

    lm = gpt.load(code_model, device="cpu")
    about = run_record(code_model)["text"]
    assert about["file"] == "code.txt" and about["chat"] == "plain" and layout(lm) == "plain"
    lines = code_file.read_text().splitlines()
    assert about["openings"] and all(o in lines for o in about["openings"])
    texts = model_texts("code", lm)
    card = (code_model / "README.md").read_text()
    shown = json.dumps(texts) + card
    assert not [word for word in SHAKESPEARE if word in shown]
    assert texts["prompt"] in lines and [e for [e] in texts["examples"]] == about["openings"]
    assert "datasets" not in ModelCard(card).data.to_dict() and "`code.txt`" in card
    assert "def " in chat_prompt(lm, [("def f(x):", "return x")], "def g(y):").text


def test_a_play_gets_the_scene_layout_spoken_by_its_own_characters(tiny_model, play_file):
    from conftest import SPEAKERS

    lm = gpt.load(tiny_model, device="cpu")
    about = run_record(tiny_model)["text"]
    assert about["chat"] == "scene" and set(about["speakers"]) <= set(SPEAKERS)
    user, model = about["speakers"]
    prompt = chat_prompt(lm, [], "Good night.")
    assert prompt.text == f"{user}:\nGood night.\n\n{model}:\n" and prompt.stop == ["\n\n"]


def test_dataset_flag_names_the_hub_dataset_in_the_card(tmp_path, code_file, tiny_args):
    from gpt.training.train import main

    out = tmp_path / "named"
    main(["--data", str(code_file), "--out", str(out), *tiny_args, "--max-steps", "5", "--dataset", "carol/my-code"])
    meta = ModelCard((out / "README.md").read_text()).data.to_dict()
    assert meta["datasets"] == ["carol/my-code"]
    assert meta["model-index"][0]["results"][0]["dataset"]["type"] == "carol/my-code"


def test_bpe_encodes_any_text_and_the_model_continues_it(bpe_model):
    lm = gpt.load(bpe_model, device="cpu")
    tok = lm.tokenizer
    assert tok.kind == "byte-level BPE"
    text = MANY_SCRIPTS + " and ✓ never seen in training: Ελληνικά"
    assert tok.unknown(text) == [] and tok.decode(tok.encode(text)) == text
    assert len(tok.encode("the night")) < len("the night")  # merges learnt from the text
    out = lm.generate(MANY_SCRIPTS, max_new_tokens=40, temperature=0.8, seed=1)
    pieces = [piece for piece in lm.stream(MANY_SCRIPTS, max_new_tokens=40, temperature=0.8, seed=1)]
    assert "".join(pieces) == out and all("\ufffd" not in p for p in pieces[:-1] if p)


def test_a_character_split_across_tokens_is_shown_by_the_token_that_completes_it(bpe_model):
    tok = gpt.load(bpe_model, device="cpu").tokenizer
    emoji = "🙂".encode()
    byte_ids = [next(i for i in range(tok.vocab_size) if tok.token_bytes(i) == bytes([b])) for b in emoji]
    row = Row(SamplingParams(max_new_tokens=10), tok.boundary_id if tok.documents else None)
    shown = [t.text for i in byte_ids for t in row.push(Token(i, "", bytes=tok.token_bytes(i)))]
    assert shown[:3] == ["", "", ""] and "".join(shown) == "🙂"


def test_bytes_that_make_no_character_never_show_as_a_replacement_mark(bpe_model):
    """A model may sample byte tokens that are not UTF-8 (a lone continuation byte, a lead byte cut short): the
    stream drops them rather than showing U+FFFD."""
    tok = gpt.load(bpe_model, device="cpu").tokenizer
    byte_id = {
        b: next(i for i in range(tok.vocab_size) if tok.token_bytes(i) == bytes([b])) for b in (0x9F, 0xF0, 0x61)
    }
    row = Row(SamplingParams(max_new_tokens=10), None)
    ids = [byte_id[0x9F], byte_id[0xF0], byte_id[0x61], byte_id[0x61]]  # continuation, cut lead, then "aa"
    shown = "".join(t.text for i in ids for t in row.push(Token(i, "", bytes=tok.token_bytes(i))))
    assert shown == "aa"


def test_log_probabilities_give_each_tokens_own_text_even_inside_a_character(bpe_model, serving):
    """A token that ends inside a character shows nothing in the stream until the character is whole; its logprob
    entry still names it (its bytes, a lone one as \\xNN), never '' or U+FFFD, and so do the alternatives."""
    from gpt.serving.server import chat_token_logprobs, completion_logprobs

    lm = gpt.load(bpe_model, device="cpu")
    tok = lm.tokenizer
    emoji = "🙂".encode()
    ids = [next(i for i in range(tok.vocab_size) if tok.token_bytes(i) == bytes([b])) for b in emoji]
    row = Row(SamplingParams(max_new_tokens=10), None)
    tokens = []
    for i in ids:
        token = Token(i, "", bytes=tok.token_bytes(i), logprob=-1.0)
        row.push(token)
        tokens.append(token)
    pieces = completion_logprobs(tokens)["tokens"]
    assert pieces == ["\\xf0", "\\x9f", "\\x99", "\\x82"] and [t.text for t in tokens] == ["", "", "", "🙂"]
    assert [e["token"] for e in chat_token_logprobs(tokens)["content"]] == pieces
    with serving(lm) as (url, _):
        body = {"prompt": "🙂 café", "max_tokens": 30, "temperature": 1.0, "seed": 3, "logprobs": 5}
        choice = httpx.post(f"{url}/v1/completions", json=body, timeout=60).json()["choices"][0]
    texts = choice["logprobs"]["tokens"] + [a for top in choice["logprobs"]["top_logprobs"] for a in top]
    assert all(t and "\ufffd" not in t for t in texts), texts


def test_bpe_card_gives_bits_per_byte_and_its_tokenizer(bpe_model):
    card = (bpe_model / "README.md").read_text()
    meta = ModelCard(card).data.to_dict()
    assert "byte-level-bpe" in meta["tags"] and "bits per byte" in card and "`journal.txt`" in card
    run = run_record(bpe_model)
    assert run["tokenizer"] != "character" and 0 < run["val_bits_per_byte"] < 8
    assert not [word for word in SHAKESPEARE if word in card]


def test_bpe_through_the_api_counts_tokens(bpe_model, serving):
    lm = gpt.load(bpe_model, device="cpu")
    with serving(lm, max_tokens=100) as (url, _):
        body = {"model": "play", "prompt": MANY_SCRIPTS, "max_tokens": 12, "temperature": 0, "logprobs": 2}
        r = httpx.post(f"{url}/v1/completions", json=body, timeout=60).json()
        assert r["usage"]["prompt_tokens"] == len(lm.tokenizer.encode(MANY_SCRIPTS))
        assert r["usage"]["completion_tokens"] == len(r["choices"][0]["logprobs"]["tokens"]) == 12
        assert r["choices"][0]["text"] == lm.generate(MANY_SCRIPTS, max_new_tokens=12, temperature=0)
        chat = {"model": "play", "messages": [{"role": "user", "content": "🙂 café"}], "max_tokens": 8, "seed": 5}
        r = httpx.post(f"{url}/v1/chat/completions", json={**chat, "logprobs": True}, timeout=60)
        assert r.status_code == 200, r.text
        reply = r.json()["choices"][0]
        joined = b"".join(bytes(c["bytes"]) for c in reply["logprobs"]["content"])
        # raw bytes in the logprobs; the text holds their whole characters (a byte that makes none is left out)
        assert joined.decode("utf-8", errors="ignore").startswith(reply["message"]["content"])


def test_bpe_model_on_the_local_hub(hub, bpe_model, tmp_path, monkeypatch):
    from test_hub import TOKEN, fresh_cache

    from gpt.storage.hub import push

    monkeypatch.setenv("HF_TOKEN", TOKEN)
    push(bpe_model, "alice/journal")
    fresh_cache(tmp_path, monkeypatch)
    mine, theirs = gpt.load(bpe_model, device="cpu"), gpt.load("alice/journal", device="cpu")
    assert theirs.tokenizer.encode(MANY_SCRIPTS) == mine.tokenizer.encode(MANY_SCRIPTS)
    ids = torch.tensor([mine.tokenizer.encode(MANY_SCRIPTS)])
    assert torch.equal(theirs.model(ids)[0], mine.model(ids)[0])


def test_a_prompt_longer_than_the_context_keeps_its_end_in_whole_characters(bpe_model, serving):
    import asyncio

    from gpt.serving.sampling import SamplingParams

    lm = gpt.load(bpe_model, device="cpu")
    text = MANY_SCRIPTS * 10
    ids = lm.encode_prompt(text)

    async def submitted(served):
        result = served.submit(text, SamplingParams(max_new_tokens=1, temperature=0))
        async for _ in result.jobs[0].tokens():
            pass
        return result

    with serving(lm) as (_, served):
        result = asyncio.run(submitted(served))
    kept = result.jobs[0].prompt_ids
    assert ids[-len(kept) :] == kept and result.cut + len(kept) == len(ids) and result.prompt_tokens == len(kept)
    assert len(kept) <= lm.block_size < len(ids) and len(kept) > lm.block_size - 4  # at most a character's bytes lost
    whole = lm.tokenizer.decode(kept)
    assert "\ufffd" not in whole and text.endswith(whole)  # starts on a whole character


def test_attention_covers_prompt_and_completion_with_a_colour_bar_and_every_head():
    import asyncio

    from conftest import ROOT

    from gpt.serving.catalog import Catalog
    from gpt.ui.context import Context
    from gpt.ui.playground_tab import Playground

    ctx = Context(Catalog.from_settings(str(ROOT / "weights" / "shakespeare-char"), None, None))
    lm, playground = ctx.lm("shakespeare-char"), Playground(ctx)
    fig = asyncio.run(playground.attention("KATHARINA:\n", 1, 0, "shakespeare-char", "I pray you", False))
    heat = [ax for ax in fig.axes if ax.images and ax.get_label() != "<colorbar>"]
    labels = "".join(t.get_text() for t in heat[0].get_xticklabels())
    assert len(heat) == 1 and labels.endswith("I␣pray␣you") and labels.startswith("KATHARINA")
    assert any(ax.get_label() == "<colorbar>" for ax in fig.axes)
    fig = asyncio.run(playground.attention("KATHARINA:\n", 1, 0, "shakespeare-char", "I pray you", True))
    assert len([ax for ax in fig.axes if ax.images and ax.get_label() != "<colorbar>"]) == lm.model.config.n_head
    ctx.catalog.close()
