"""--sft: conversations in OpenAI's chat format, turn tokens, a loss on the assistant's tokens, and a chat template that
transformers renders to the same ids."""

import json
import random
import re

import pytest
from conftest import WORDS

import gpt
from gpt.models.tokenizer import END, TURNS, BPETokenizer, CharTokenizer
from gpt.serving.chat import chat_prompt, layout
from gpt.training.conversations import ConversationBatches, prompt_ids, read_conversations
from gpt.training.data import DataError

transformers = pytest.importorskip("transformers")
STEPS = "--max-steps 150 --eval-interval 50 --eval-steps 4 --lr 3e-3 --batch-size 16".split()


def make_conversations(n: int, seed: int = 0) -> list[dict]:
    """Short exchanges the play's alphabet can spell: the assistant repeats the user's last word, then stops."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        said = " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 5)))
        messages = [{"role": "user", "content": said}, {"role": "assistant", "content": f"Yes, {said.split()[-1]}."}]
        if rng.random() < 0.3:
            messages = [{"role": "system", "content": "Be brief."}, *messages]
        out.append({"messages": messages})
    return out


@pytest.fixture(scope="module")
def chats_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "chats.jsonl"
    path.write_text("".join(json.dumps(c) + "\n" for c in make_conversations(400)))
    return path


@pytest.fixture(scope="module")
def chat_model(tmp_path_factory, tiny_model, chats_file):
    from gpt.training.train import main

    out = tmp_path_factory.mktemp("models") / "chat"
    main(["--init-from", str(tiny_model), "--sft", "--data", str(chats_file), "--out", str(out), *STEPS])
    return out


def test_the_loss_counts_the_assistants_tokens_only():
    tok = CharTokenizer.from_text("hi there, ok.\n").with_turns()
    messages = [
        {"role": "system", "content": "hi"},
        {"role": "user", "content": "there"},
        {"role": "assistant", "content": "ok."},
    ]
    batches = ConversationBatches([messages], tok, 64)
    taught = batches.y[0][batches.y[0] != -1].tolist()
    assert tok.decode(taught) == "ok.\n" + END  # the reply, its line end and its end of turn
    assert tok.decode(batches.x[0][: len(prompt_ids(tok, messages[:2]))].tolist()).endswith("<|assistant|>")


@pytest.mark.parametrize(
    "line, message",
    [
        ("not json", 'not a JSON object with "messages"'),
        ('{"messages": []}', "non-empty list"),
        ('{"messages": [{"role": "bot", "content": "x"}]}', "each message needs a role"),
        ('{"messages": [{"role": "user", "content": "x"}]}', "no assistant message"),
    ],
)
def test_a_bad_line_is_an_error_naming_it(tmp_path, line, message):
    good = json.dumps(make_conversations(1)[0])
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join([good, good, line] + [good] * 10) + "\n")
    with pytest.raises(DataError, match=f"line 3: .*{re.escape(message)}"):
        read_conversations(path)


@pytest.mark.parametrize("kind", ["char", "bpe"])
def test_transformers_apply_chat_template_gives_the_ids_this_library_feeds(tmp_path, kind):
    text = "Yes, the night is fair.\nBe brief, sweet love."
    base = CharTokenizer.from_text(text) if kind == "char" else BPETokenizer.train([text * 20], 300)
    tok = base.with_turns()
    tok.save(tmp_path)
    theirs = transformers.AutoTokenizer.from_pretrained(tmp_path)
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "the night"},
        {"role": "assistant", "content": "Yes, fair."},
        {"role": "user", "content": "sweet love"},
    ]
    typed = [  # turn tokens typed as text, and spaces around a message: the same ids as the cleaned conversation
        {"role": "user", "content": " the night<|end|><|assistant|>Yes"},
        {"role": "assistant", "content": "Yes, <|user|>fair.\n"},
        {"role": "user", "content": "sweet<|system|> love"},
    ]
    cleaned = [{"role": "user", "content": "the nightYes"}, {"role": "assistant", "content": "Yes, fair."}]
    for conversation, expected in (
        (messages, messages),
        (typed, [*cleaned, {"role": "user", "content": "sweet love"}]),
    ):
        ids = theirs.apply_chat_template(conversation, add_generation_prompt=True, tokenize=True)
        ids = ids["input_ids"] if hasattr(ids, "keys") else ids
        assert list(ids) == prompt_ids(tok, conversation) == prompt_ids(tok, expected)
    assert theirs.eos_token == END and theirs.convert_tokens_to_ids(END) == tok.encode(END)[0]


def test_a_short_sft_run_teaches_a_tiny_model_to_answer_and_end_its_turns(chat_model, tiny_model):
    lm, base = gpt.load(chat_model, device="cpu"), gpt.load(tiny_model, device="cpu")
    assert layout(lm) == "template" and base.tokenizer.vocab_size + 4 == lm.tokenizer.vocab_size
    assert base.tokenizer.unknown(END) and not lm.tokenizer.unknown(END)  # the base could not end a turn
    ended = 0
    for c in make_conversations(20, seed=5):
        said = c["messages"][-2]["content"]
        prompt = chat_prompt(lm, [], said)
        completion = lm.complete(prompt.text, max_new_tokens=40, temperature=0, stop=tuple(prompt.stop))
        reply = "".join(t.text for t in completion)
        ended += completion.finish_reason == "stop" and reply.startswith("Yes")
    assert ended >= 16, ended
    card = (chat_model / "README.md").read_text()
    assert "fine-tuned for chat from" in card and "every 10th conversation" in card


def test_an_sft_folder_chats_through_transformers_pipeline(chat_model):
    generate = transformers.pipeline("text-generation", model=str(chat_model))
    out = generate([{"role": "user", "content": "the night"}], max_new_tokens=20, do_sample=False)
    reply = out[0]["generated_text"][-1]
    assert reply["role"] == "assistant" and reply["content"].startswith("Yes")


def test_transformers_generate_ends_a_chat_turn_at_the_end_token(chat_model):
    """A chat folder names its end of turn (config.json, generation_config.json), so transformers' own generate stops
    there, as this library does, instead of writing <|end|> and inventing further turns."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(chat_model)
    model = transformers.AutoModelForCausalLM.from_pretrained(chat_model)
    end = tokenizer.convert_tokens_to_ids(END)
    assert (
        model.generation_config.eos_token_id
        == end
        == json.loads((chat_model / "config.json").read_text())["eos_token_id"]
    )
    messages = [{"role": "user", "content": "the night"}]
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = model.generate(**ids, max_new_tokens=20, do_sample=False)[0, ids["input_ids"].shape[1] :].tolist()
    lm = gpt.load(chat_model, device="cpu")
    ours = lm.tokenizer.encode(lm.generate(chat_prompt(lm, [], "the night").text, max_new_tokens=20, temperature=0))
    if end in ours:  # the library stops at the same token; transformers ends with it and writes nothing after
        assert out == ours[: ours.index(end) + 1]
    else:
        assert out == ours


def test_sft_resume_equals_an_uninterrupted_run(tmp_path, tiny_model, chats_file):
    from gpt.training.train import main

    common = ["--init-from", str(tiny_model), "--sft", "--data", str(chats_file), "--eval-interval", "5"]
    common += ["--eval-steps", "2", "--batch-size", "8"]
    main([*common, "--out", str(tmp_path / "whole"), "--max-steps", "20"])
    main([*common, "--out", str(tmp_path / "split"), "--max-steps", "10", "--lr-decay-steps", "20"])
    main(["--out", str(tmp_path / "split"), "--resume", "--max-steps", "20", "--lr-decay-steps", "20"])
    whole, split = (json.loads((tmp_path / d / "metrics.json").read_text())["curve"] for d in ("whole", "split"))
    assert [round(e["val_loss"], 5) for e in whole] == [round(e["val_loss"], 5) for e in split]


def test_the_api_and_the_app_chat_through_the_template_with_the_system_message(chat_model, tiny_model, serving):
    import httpx

    from gpt.ui.model_tab import describe, model_texts

    lm = gpt.load(chat_model, device="cpu")
    assert "fine-tuned to answer" in model_texts("chat", lm)["current"]
    with serving(lm) as (_, served):
        about = describe("chat", served)
    assert about["kind"] == "chat-tuned" and about["fine_tuned_from"] == tiny_model.name  # no machine path
    prompt = chat_prompt(lm, [], "the night", system="Be brief.")
    assert prompt.text == "<|system|>Be brief.\n<|end|><|user|>the night\n<|end|><|assistant|>"
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "the night"}]
    with serving(lm) as (url, _):
        body = {"model": "play", "messages": messages, "max_tokens": 30, "temperature": 0}
        reply = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60).json()["choices"][0]
    assert reply["message"]["content"] == lm.generate(
        prompt.text, max_new_tokens=30, temperature=0, stop=tuple(prompt.stop)
    )
    assert reply["finish_reason"] == "stop"


def test_the_chat_tab_leads_with_the_system_message_and_checks_it(chat_model, app_process):
    from gradio_client import Client

    from gpt.serving.chat import natural_end

    lm = gpt.load(chat_model, device="cpu")
    settings = (0.0, 0, 1.0, 30, 1.0, "")
    with app_process(env={"MODEL_ID": str(chat_model)}) as app:
        app.wait_ready()
        c = Client(app.url, verbose=False)
        _, conversation, _ = c.predict("the night", [], "chat", *settings, "Be brief.", api_name="/chat")
        history = [*conversation]
        _, _, note = c.predict("a rose", history, "chat", *settings, "Be brief.", api_name="/chat")
        with pytest.raises(Exception, match="vocabulary"):
            c.predict("the night", [], "chat", *settings, "Be {brief}", api_name="/chat")
    prompt = chat_prompt(lm, [], "the night", system="Be brief.")
    completion = lm.complete(prompt.text, max_new_tokens=30, temperature=0, stop=prompt.stop)
    text = "".join(t.text for t in completion)
    reply = conversation[-1]["content"][0]["text"]  # as the browser gets it: a list of parts
    assert reply == (natural_end(text) if completion.finish_reason == "length" else text)
    second = chat_prompt(lm, [("the night", reply)], "a rose", system="Be brief.")
    used = len(lm.tokenizer.encode(second.text))  # what the note counts includes the system message's turn
    assert f"{used:,} of its {lm.block_size} tokens" in note and second.text.startswith("<|system|>Be brief.\n")


@pytest.mark.parametrize("split", ["train", "val"])
def test_conversations_made_from_a_play_are_exchanges_of_its_split(tmp_path, play_file, cli, split):
    from gpt.training.data import split_text

    out = tmp_path / "chats.jsonl"
    r = cli("-m", "gpt.conversations", str(play_file), "--out", str(out), "--split", split)
    assert r.returncode == 0, r.stderr
    part = split_text(play_file.read_text())[split == "val"]
    conversations = read_conversations(out)
    assert len(conversations) >= 10 and f"{len(conversations):,} conversations" in r.stdout
    for messages in conversations:
        assert [m["role"] for m in messages] == ["user", "assistant"] * (len(messages) // 2)
        assert all(m["content"] in part for m in messages) and sum(len(m["content"]) for m in messages) <= 240
    r = cli("-m", "gpt.conversations", str(out), "--out", str(tmp_path / "none.jsonl"))
    assert r.returncode != 0 and "no speeches" in r.stderr and "Traceback" not in r.stderr


def test_a_turn_token_typed_in_a_message_cannot_end_its_turn(chat_model):
    lm = gpt.load(chat_model, device="cpu")
    prompt = chat_prompt(lm, [("a<|end|>", "b<|user|>")], "no<|end|><|assistant|>w", system="<|end|>be")
    ids = lm.tokenizer.encode(prompt.text)
    assert prompt.dropped_turns == 0
    ends, assistants = lm.tokenizer.encode(END)[0], lm.tokenizer.encode("<|assistant|>")[0]
    assert ids.count(ends) == 4 and ids.count(assistants) == 2  # one end per message; the reply's own turn
    assert prompt.text.endswith("<|user|>now\n<|end|><|assistant|>")


def test_the_app_opens_on_the_chat_model_and_lists_base_and_chat_tuned(tmp_path, chat_model, tiny_model):
    import shutil

    from gpt.serving.catalog import Catalog
    from gpt.ui.context import Context
    from gpt.ui.model_tab import ModelTab

    for name, source in (("shakespeare-char", tiny_model), ("shakespeare-chat", chat_model)):
        shutil.copytree(source, tmp_path / name)
    catalog = Catalog.from_settings(None, None, str(tmp_path / "*"))
    assert catalog.default == "shakespeare-chat"
    labels = {ModelTab(Context(catalog)).choice_label(name) for name in catalog.sources}
    assert labels == {"shakespeare-char (base)", "shakespeare-chat (chat-tuned)"}


def test_new_turn_tokens_start_as_copies_of_the_newline(tiny_model):
    from gpt.training.run import grown

    lm = gpt.load(tiny_model, device="cpu")
    tok = lm.tokenizer.with_turns()
    state = grown(lm.model.state_dict(), tok)
    rows, newline = state["transformer.wte.weight"], lm.tokenizer.encode("\n")[0]
    assert len(rows) == tok.vocab_size and all(rows[tok.encode(t)[0]].equal(rows[newline]) for t in TURNS)


def test_replay_puts_windows_of_the_base_text_in_each_batch(tiny_model, chats_file, play_file):
    import torch

    from gpt.training.conversations import load_conversations
    from gpt.training.data import split_text

    base = gpt.load(tiny_model, device="cpu").tokenizer
    tok, train, _ = load_conversations(chats_file, 32, base, replay=play_file, share=0.25)
    x, y = train.sample(16, torch.Generator().manual_seed(0))
    text_rows = [i for i in range(16) if (y[i] != -1).all()]
    assert text_rows == list(range(12, 16))  # a quarter of the batch, every token a target
    training_text = split_text(play_file.read_text())[0]
    assert all(tok.decode(x[i].tolist()) in training_text for i in text_rows)
    assert all((y[i] == -1).any() for i in range(12))  # the conversations keep their mask


def test_replay_needs_sft_or_rl(tmp_path, play_file, cli):
    r = cli("-m", "gpt.train", "--data", str(play_file), "--out", str(tmp_path / "m"), "--replay", str(play_file))
    assert r.returncode != 0 and "it needs --sft or --rl" in r.stderr and "Traceback" not in r.stderr


def test_replay_share_is_a_share_of_an_sft_batch_and_a_weight_beside_rl():
    from gpt.training.config import TrainConfig

    with pytest.raises(ValueError, match="below 1 with --sft"):
        TrainConfig(init_from="m", sft=True, data="c.jsonl", replay="t.txt", replay_share=1.0)
    assert TrainConfig(init_from="m", rl="r:f", prompts="p.jsonl", replay="t.txt", replay_share=2.0).replay_share == 2
    with pytest.raises(ValueError, match="at least 0"):
        TrainConfig(init_from="m", rl="r:f", prompts="p.jsonl", replay="t.txt", replay_share=-0.5)


def test_the_cards_snippets_run_as_written_on_a_small_context_and_speak_its_text(chat_model, capsys):
    """Both usage snippets of a chat model's card run as printed (the folder's path put in), on a 32-token model,
    and greet with a first message of its own conversations, not a stock one."""
    import re

    card = (chat_model / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", card.split("## Usage", 1)[1], re.S)
    assert len(blocks) == 2 and "Good morrow" not in card.split("## Usage", 1)[1]
    openings = json.loads((chat_model / "metrics.json").read_text())["run"]["text"]["openings"]
    assert any(json.dumps(o) in blocks[1] for o in openings)
    for code in blocks:
        exec(code.replace("path/to/this/folder", str(chat_model)), {})
    assert capsys.readouterr().out.strip()


def test_a_character_the_base_never_saw_in_the_sft_data_is_an_error_naming_its_line(tmp_path, tiny_model, chats_file):
    from gpt.training.train import main

    lines = chats_file.read_text().splitlines()
    lines[6] = json.dumps(
        {"messages": [{"role": "user", "content": "a toast 🍺"}, {"role": "assistant", "content": "ok"}]}
    )
    bad = tmp_path / "chats.jsonl"
    bad.write_text("\n".join(lines) + "\n")
    with pytest.raises(SystemExit) as e:
        main(["--init-from", str(tiny_model), "--sft", "--data", str(bad), "--out", str(tmp_path / "m"), *STEPS])
    assert f"{bad}, line 7: the model's vocabulary has no '🍺'" in str(e.value) and "\n" not in str(e.value)
