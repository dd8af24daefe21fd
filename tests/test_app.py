"""The app end to end: `python app.py` in a subprocess, driven through gradio_client (every endpoint).

Calls name the model explicitly (the hidden `model` input a browser sends with each call) and pass the chat history.
"""

import ast
import json
import re
import time
from pathlib import Path

import pytest
from gradio_client import Client

pytestmark = pytest.mark.slow  # the slow tier: trains, serves or starts processes

SETTINGS = dict(temperature=0.0, top_k=0, top_p=1.0, max_new_tokens=40, repetition_penalty=1.0, seed="")
SAMPLED = {**SETTINGS, "temperature": 1.0}


@pytest.fixture
def client(app_url):
    return Client(app_url, verbose=False)


def range_refusal(app_url: str, api_name: str, data: list) -> str:
    """What Gradio answers an event whose slider or dropdown value is out of range: a 400 whose detail names the
    value (gradio_client shows only the status)."""
    import httpx

    config = httpx.get(f"{app_url}config").json()
    index = next(i for i, d in enumerate(config["dependencies"]) if d.get("api_name") == api_name)
    body = {"data": data, "fn_index": index, "session_hash": "refused", "event_data": None, "trigger_id": None}
    r = httpx.post(f"{app_url}gradio_api/queue/join", json=body, timeout=30)
    assert r.status_code == 400, r.text
    return r.json()["detail"]


def chat(client, message, model="play", history=None, **settings):
    """The reply text, the conversation and the note of one chat turn."""
    _, conversation, note = client.predict(
        message, history or [], model, *{**SETTINGS, **settings}.values(), "", api_name="/chat"
    )
    return text_of(conversation[-1]), conversation, note


def text_of(message) -> str:
    content = message["content"]
    return content if isinstance(content, str) else "".join(part.get("text", "") for part in content)


def complete(client, prompt, probabilities=False, model="play", **settings):
    return client.predict(prompt, probabilities, model, *{**SETTINGS, **settings}.values(), api_name="/complete")


def test_chat_replies_in_the_scene(client):
    reply, conversation, _ = chat(client, "Good morrow, sweet lady.")
    assert reply.strip() and "\n\n" not in reply  # the reply ends where the next speaker would begin
    assert [m["role"] for m in conversation] == ["user", "assistant"]


def test_chat_streams(client):
    job = client.submit("What light through yonder window breaks?", [], "play", *SETTINGS.values(), api_name="/chat")
    partials = [text_of(p[1][-1]) for p in job]
    assert len(partials) >= 2 and all(b.startswith(a) for a, b in zip(partials, partials[1:]))


def test_chat_keeps_the_conversation_it_is_given(client):
    _, first, _ = chat(client, "Good morrow.")
    _, second, _ = chat(client, "What news?", history=first)
    assert len(second) == 4 and text_of(second[0]) == "Good morrow."


@pytest.mark.parametrize(
    "message, settings, error",
    [
        ("   ", {}, "empty"),
        ("hello {there}", {}, r"no '\{', '\}'.*it knows"),
        ("hello", {"seed": "x1"}, "seed must be a whole number"),
    ],
    ids=["whitespace", "unknown-characters", "bad-seed"],
)
def test_chat_bad_input_is_a_clear_error(client, message, settings, error):
    with pytest.raises(Exception, match=error):
        chat(client, message, **settings)


def test_a_setting_out_of_its_range_is_refused_naming_the_value(app_url):
    settings = {**SETTINGS, "top_p": 0}  # Gradio checks its sliders' ranges before the event runs
    detail = range_refusal(app_url, "chat", ["hello", [], "play", *settings.values(), ""])
    assert detail == "'Value 0 is less than minimum value 0.05.'"


def test_blank_seed_is_random_and_the_note_says_which_seed_to_repeat(client):
    replies = [chat(client, "Good morrow.", **SAMPLED) for _ in range(3)]
    seeds = [re.search(r"seed (\d+)", note).group(1) for _, _, note in replies]
    assert len(set(seeds)) == 3 and len({reply for reply, _, _ in replies}) > 1
    again, _, _ = chat(client, "Good morrow.", **{**SAMPLED, "seed": seeds[0]})
    assert again == replies[0][0]


def test_the_note_gives_each_replys_tokens_rate_and_first_token_wait(client):
    _, _, note = chat(client, "Good morrow.", max_new_tokens=25)
    found = re.search(r"(\d+) tokens in ([\d.]+) s \(([\d,]+) tokens/s; the first after ([\d,]+) ms\)", note)
    assert found, note
    tokens, seconds, rate, first = int(found[1]), float(found[2]), int(found[3].replace(",", "")), int(found[4])
    assert 1 <= tokens <= 25 and 0 < first <= 1000 * seconds + 5
    assert abs(rate * seconds - tokens) <= 0.005 * rate + 1  # the rate is the count over the time (shown to 10 ms)


def test_a_conversation_exports_as_a_line_of_the_trainers_chat_data(client, tmp_path):
    from gpt.training.conversations import read_conversations

    reply, conversation, _ = chat(client, "Good morrow, sweet lady.")
    exported = Path(client.predict(conversation, "Be brief.", api_name="/export")).read_text(encoding="utf-8")
    record = json.loads(exported)
    messages = [("system", "Be brief."), ("user", "Good morrow, sweet lady."), ("assistant", reply)]
    assert record == {"messages": [{"role": role, "content": text} for role, text in messages]}
    data = tmp_path / "chats.jsonl"
    data.write_text(exported * 10, encoding="utf-8")  # --sft needs ten conversations: every 10th validates
    assert read_conversations(data) == [record["messages"]] * 10
    assert client.predict([], "", api_name="/export") is None  # nothing said yet, nothing to export


def test_a_reply_cut_by_the_limit_ends_at_a_boundary_or_is_marked(client):
    for seed in range(5):
        reply, _, _ = chat(client, "Good morrow.", **{**SAMPLED, "max_new_tokens": 60, "seed": str(seed)})
        assert reply.endswith(tuple(".!?;:…")) or len(reply) < 60, reply


def test_completion_with_probabilities(client):
    text, html, table, note = complete(client, "ROMEO:\n", probabilities=True)
    assert len(text) == 40 and html.count('class="tok"') == 40 and "seed" in note
    rows = table["data"]
    assert len(rows) == 40 and all(len(r) == 8 for r in rows)
    assert [int(r[0]) for r in rows] == list(range(1, 41))  # the position, as each character's data-i says
    assert all(f'data-i="{i}"' in html for i in (1, 40))
    assert all(re.fullmatch(r"\d\.\d{3}", r[2]) for r in rows)  # p always has 3 decimals
    assert all(r[1] for r in rows) and ("␣" in {r[1] for r in rows} or " " not in text)  # spaces are visible
    assert 'data-alt="' in html and 'tabindex="0"' in html  # alternatives on hover and on tap


def test_completion_without_probabilities_is_the_same_text(client):
    text, html, table, _ = complete(client, "ROMEO:\n")
    assert text == complete(client, "ROMEO:\n", probabilities=True)[0] and html == ""


def test_long_prompt_is_cut_not_refused(client):
    text, _, _, _ = complete(client, "ROMEO:\nlove " * 100)
    assert len(text) == 40


def test_attention_heatmap(client, app_url):
    assert client.predict("ROMEO: love", 1, 1, "play", api_name="/attention")
    detail = range_refusal(app_url, "attention", ["ROMEO: love", 5, 0, "play", "", False])
    assert detail == "'Value 5 is greater than maximum value 1.'"  # the sliders span the model's 2 layers
    with pytest.raises(Exception, match="short prompt"):
        client.predict("", 0, 0, "play", api_name="/attention")


def test_loading_a_document_model_changes_what_the_tabs_offer(client):
    name, current, info, loss, card, *_, conversation, note, _system = client.predict("names", api_name="/load_model")
    assert name == "names" and "names" in current and "finishes it" in current
    assert info["model"] == "names" and info["document_mode"] is True and loss and "GPT" in card
    assert "![loss curve]" not in card and "|  |" not in card
    assert conversation == [] and "new conversation" in note  # the model change says it cleared the chat


def test_a_document_model_chat_finishes_the_item(client):
    reply, _, _ = chat(client, "em", model="names")
    assert reply.startswith("em") and reply.isalpha() and reply.islower()
    with pytest.raises(Exception, match="only lowercase"):
        chat(client, "Em", model="names")


def test_a_document_model_completes_a_fresh_item_from_a_blank_prompt(client):
    name, _, _, _ = complete(client, "", model="names")
    assert name.isalpha() and name.islower() and len(name) < 40


def test_the_ladder_shows_every_names_model_smallest_first_with_repeatable_samples(client):
    table, chart = client.predict("3", api_name="/ladder")
    rows = [line.split(" | ") for line in table.splitlines()[2:]]
    assert [r[0].strip("| ") for r in rows] == ["names-mlp", "names"]  # smallest first; the play model is not a rung
    assert [r[1] for r in rows] == ["mlp", "gpt"] and "seed 3" in table
    assert "BatchNorm" in rows[0][5] and "transformer" in rows[1][5]  # what each rung adds
    assert all(float(r[3]) > 0 for r in rows) and chart
    assert client.predict("3", api_name="/ladder")[0] == table
    assert client.predict("4", api_name="/ladder")[0] != table
    with pytest.raises(Exception, match="whole number"):
        client.predict("x", api_name="/ladder")


def test_micrograd_steps_the_41_parameter_network_and_keeps_it_per_visitor(app_url):
    a, b = Client(app_url, verbose=False), Client(app_url, verbose=False)
    status, _ = a.predict("5", api_name="/micrograd_reset")
    first = float(re.search(r"loss (\d+\.\d+)", status).group(1))
    assert "**Step 0**" in status and "41 parameters, seed 5" in status
    status, chart = a.predict(30, 0.1, api_name="/micrograd_train")
    assert "**Step 30**" in status and chart
    assert float(re.search(r"loss (\d+\.\d+)", status).group(1)) < first / 10
    assert "**Step 1**" in b.predict(1, 0.1, api_name="/micrograd_train")[0]  # another visitor starts afresh
    assert "**Step 31**" in a.predict(1, 0.1, api_name="/micrograd_train")[0]
    with pytest.raises(Exception, match="whole number from 1 to 100"):
        a.predict(1.5, 0.1, api_name="/micrograd_train")
    with pytest.raises(Exception, match="less than minimum"):  # the sliders' own bounds
        a.predict(0, 0.1, api_name="/micrograd_train")
    with pytest.raises(Exception, match="greater than maximum"):
        a.predict(1, 5, api_name="/micrograd_train")
    assert "**Step 32**" in a.predict(1, 0.1, api_name="/micrograd_train")[0]  # a refused call changed nothing


def test_a_ladder_rung_chats_completes_and_says_it_has_no_attention(client):
    name, current, info, *_ = client.predict("names-mlp", api_name="/load_model")
    assert name == "names-mlp" and info["config"]["arch"] == "mlp" and "context 3" in current
    reply, _, _ = chat(client, "em", model="names-mlp")
    assert reply.startswith("em") and reply.isalpha()
    text, _, _, _ = complete(client, "", model="names-mlp")  # greedy from a boundary: the likeliest name
    assert text.isalpha()
    with pytest.raises(Exception, match="has no attention"):
        client.predict("em", 0, 0, "names-mlp", api_name="/attention")


def test_stopping_one_stream_leaves_another_running(app_url):
    long = {**SAMPLED, "max_new_tokens": 2000}
    a, b = Client(app_url, verbose=False), Client(app_url, verbose=False)
    job_a = a.submit("ROMEO:\n", False, "play", *long.values(), api_name="/complete")
    job_b = b.submit("JULIET:\n", False, "play", *{**long, "max_new_tokens": 300}.values(), api_name="/complete")
    time.sleep(1.0)
    job_a.cancel()
    text, _, _, _ = job_b.result(timeout=60)
    assert len(text) == 300


def test_a_hub_model_by_repo_id(client, hub, tiny_model, monkeypatch):
    from gpt.storage.hub import push

    monkeypatch.setenv("HF_TOKEN", "hf_local_test_token")
    push(tiny_model, "carol/app-model")
    _, _, info, *_ = client.predict("carol/app-model", api_name="/load_model")
    assert info["model"] == "carol/app-model" and info["parameters"] > 0
    text, _, _, _ = complete(client, "ROMEO:", model="carol/app-model")
    assert len(text) == 40


@pytest.mark.parametrize("name", ["not a/valid/repo", "carol/missing", "/etc"])
def test_models_not_on_offer_are_refused(app_url, name):
    detail = range_refusal(app_url, "load_model", [name])
    assert detail.startswith(f'"Value: {name} is not in the list of choices: [') and "'play'" in detail


def test_user_errors_are_one_line_in_the_server_log(tiny_model, app_process):
    with app_process(env={"MODEL_ID": str(tiny_model)}) as app:
        app.wait_ready()
        c = Client(app.url, verbose=False)
        errors = [
            (("hello {x}", [], "play", *SETTINGS.values()), "/chat"),
            (("   ", [], "play", *SETTINGS.values()), "/chat"),
            (("hi 🙂", [], "play", *SETTINGS.values()), "/chat"),
            (("", 0, 0, "play"), "/attention"),
            (("/etc",), "/load_model"),
        ]
        for args, api_name in errors:
            with pytest.raises(Exception, match="vocabulary|empty|short prompt|400|not one of"):
                c.predict(*args, api_name=api_name)
        time.sleep(0.5)
        log = app.output()
    assert "Traceback" not in log, log
    refused = [line for line in log.splitlines() if line.startswith("* refused ")]
    assert len(refused) == len(errors) - 1, log  # one line per user error, saying what it was
    assert sum("/etc is not in the list of choices" in line for line in log.splitlines()) == 1  # Gradio's own
    assert "empty" in refused[1] and "🙂" in refused[2]


def test_the_ui_and_the_api_decode_in_one_batch_and_stop_frees_the_ui_row(app_url):
    import httpx

    base = app_url.rstrip("/")

    def decoding() -> int:
        return httpx.get(f"{base}/health").json()["loaded"]["play"]["decoding"]

    def wait_for(rows: int) -> bool:
        deadline = time.time() + 20
        while decoding() != rows and time.time() < deadline:
            time.sleep(0.02)
        return decoding() == rows

    ui = Client(app_url, verbose=False).submit(
        "ROMEO:\n", False, "play", *{**SAMPLED, "max_new_tokens": 2000}.values(), api_name="/complete"
    )
    assert wait_for(1)
    body = {"model": "play", "prompt": "JULIET:\n", "max_tokens": 2000, "n": 8, "logprobs": 5, "stream": True}
    with httpx.stream("POST", f"{base}/v1/completions", json=body, timeout=60) as api:
        lines = api.iter_lines()  # kept: a dropped iterator closes the stream
        next(lines)
        assert wait_for(9)  # the UI's row and the API's eight, in one engine's batch
        ui.cancel()
        assert wait_for(8)  # Stop freed the UI's row; the API's go on
    assert wait_for(0)


def test_the_api_serves_every_model_on_offer_by_name(app_url, names_model, mlp_model):
    import httpx
    import openai

    import gpt

    base = app_url.rstrip("/")
    api = openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0)
    assert [m.id for m in api.models.list().data] == ["play", "names", "names-mlp", "carol/app-model"]
    for name, folder in (("names", names_model), ("names-mlp", mlp_model)):
        r = api.completions.create(model=name, prompt="em", max_tokens=16, temperature=0)
        expected = gpt.load(folder).generate("em", max_new_tokens=16, temperature=0)
        assert r.model == name and r.choices[0].text == expected
    assert httpx.get(f"{base}/health").json()["loaded"]["names-mlp"]["requests"] == 0
    r = httpx.post(f"{base}/v1/completions", json={"model": "weights/names", "prompt": "em"})
    assert r.status_code == 404 and "names, names-mlp, carol/app-model, play" in r.json()["error"]["message"]


def test_a_bpe_model_chats_and_completes_in_any_script(bpe_model, app_process):
    import gpt

    lm = gpt.load(bpe_model, device="cpu")
    with app_process(env={"MODEL_ID": str(bpe_model)}) as app:
        app.wait_ready()
        client = Client(app.url, verbose=False)
        reply, conversation, _ = chat(client, "🙂 café naïve 日本", model="journal")
        assert text_of(conversation[0]) == "🙂 café naïve 日本" and "\ufffd" not in reply
        text, _, table, _ = complete(client, "Un café 🙂", probabilities=True, model="journal")
        assert text == lm.generate("Un café 🙂", max_new_tokens=40, temperature=0)
        assert len(table["data"]) == 40  # one row per token, not per character


def test_the_note_says_how_much_of_the_conversation_the_model_sees(client):
    _, first, note = chat(client, "Good morrow.")
    assert "earlier turn" not in note  # nothing earlier to see
    history = first * 12  # twelve earlier turns, more than the context holds
    _, _, note = chat(client, "What news?", history=history)
    rule = r"sees (\d+) earlier turn\(s\) and this message: (\d+) of its (\d+) characters; not the (\d+)"
    seen = re.search(rule, note)
    assert seen, note
    kept, used, context, dropped = map(int, seen.groups())
    assert kept + dropped == 12 and dropped > 0 and 0 < used <= context


def test_continue_from_a_position_keeps_the_completion_up_to_it_and_writes_on(client):
    text, *_ = complete(client, "ROMEO:\n")
    prompt = client.predict("ROMEO:\n", text, 5, "play", api_name="/continue_from")
    assert prompt == "ROMEO:\n" + text[:5]
    with pytest.raises(Exception, match="Complete a prompt first"):
        client.predict("ROMEO:\n", "", 5, "play", api_name="/continue_from")


def test_the_distribution_chart_is_drawn_for_a_position_and_refuses_a_bad_seed(client):
    text, *_ = complete(client, "ROMEO:\n")
    chart = client.predict("ROMEO:\n", text, 3, "play", *SETTINGS.values(), api_name="/distribution")
    assert chart and chart.get("plot")
    assert client.predict("ROMEO:\n", "", 3, "play", *SETTINGS.values(), api_name="/distribution") is None
    with pytest.raises(Exception, match="seed must be a whole number"):
        client.predict("ROMEO:\n", text, 3, "play", *{**SETTINGS, "seed": "x"}.values(), api_name="/distribution")


def test_a_blank_seed_comes_from_a_source_nothing_else_reseeds():
    """The compiler and libraries reseed Python's random module; two visitors must still get different seeds."""
    import random

    from gpt.ui.context import parse_seed

    random.seed(1750176676)
    first = parse_seed("")
    random.seed(1750176676)
    assert parse_seed("") != first


def test_the_note_says_plainly_when_a_message_alone_does_not_fit(client):
    _, first, _ = chat(client, "Good morrow.")
    _, _, note = chat(client, "the night is fair " * 20, history=first)
    assert "this message alone is longer than the model's context of 32 characters" in note, note
    assert "none of the earlier turns" in note and " of its 32 " not in note  # never "82 of its 64"


def mcp_call(url: str, calls: list[tuple[str, dict]]) -> tuple[list, list]:
    """The app's MCP tools (name -> argument names) and the results of calls, through the `mcp` client."""
    import asyncio

    from mcp import ClientSession
    from mcp.client.streamable_http import streamablehttp_client

    async def session():
        async with streamablehttp_client(f"{url}gradio_api/mcp/") as (read, write, _):
            async with ClientSession(read, write) as s:
                await s.initialize()
                tools = {t.name: list(t.inputSchema.get("properties", {})) for t in (await s.list_tools()).tools}
                return tools, [await s.call_tool(name, args) for name, args in calls]

    return asyncio.run(session())


def test_the_mcp_server_offers_plain_tools_that_answer_as_the_library_does(app_url, tiny_model):
    import gpt

    calls = [
        ("list_models", {}),
        ("complete_text", {"prompt": "ROMEO:", "max_tokens": 30, "seed": 7}),
        ("chat_reply", {"message": "Good morrow.", "max_tokens": 30, "seed": 7, "temperature": 0}),
        ("chat_reply", {"message": "Hi {there}", "seed": 7}),
    ]
    tools, (models, completion, reply, refused) = mcp_call(app_url, calls)
    assert tools == {
        "list_models": [],
        "complete_text": ["prompt", "model", "max_tokens", "temperature", "seed"],
        "chat_reply": ["message", "model", "system", "max_tokens", "temperature", "seed"],
    }
    assert ast.literal_eval(models.content[0].text)[0] == "play"  # the default model first
    lm = gpt.load(tiny_model, device="cpu")
    expected = lm.generate("ROMEO:", max_new_tokens=30, temperature=0.8, top_k=40, top_p=0.95, seed=7)
    assert completion.content[0].text == expected
    assert not reply.isError and reply.content[0].text.strip()
    assert refused.isError and "vocabulary has no '{', '}'" in refused.content[0].text
