"""The app end to end: `python app.py` in a subprocess, driven through gradio_client (every endpoint)."""

import time

import pytest
from gradio_client import Client

SETTINGS = dict(temperature=0.0, top_k=0, top_p=1.0, max_new_tokens=40, repetition_penalty=1.0, seed=None)


@pytest.fixture
def client(app_url):
    return Client(app_url, verbose=False)


def test_chat_replies_in_the_scene_and_streams(client):
    reply = client.predict("Good morrow, sweet lady.", *SETTINGS.values(), api_name="/chat")
    assert isinstance(reply, str) and reply.strip()
    assert "\n\n" not in reply  # the reply ends where the next speaker would begin
    job = client.submit("What light through yonder window breaks?", *SETTINGS.values(), api_name="/chat")
    partials = [p for p in job]
    assert len(partials) >= 2 and all(b.startswith(a) for a, b in zip(partials, partials[1:]))


def test_chat_bad_input_is_a_clear_error(client):
    with pytest.raises(Exception, match="empty"):
        client.predict("   ", *SETTINGS.values(), api_name="/chat")
    with pytest.raises(Exception, match="does not know these characters"):
        client.predict("hello 😀", *SETTINGS.values(), api_name="/chat")
    with pytest.raises(Exception, match="less than minimum"):
        client.predict("hello", *{**SETTINGS, "top_p": 0}.values(), api_name="/chat")


def test_seed_repeats_a_sampled_reply(app_url):
    sampled = {**SETTINGS, "temperature": 1.0, "seed": 42}
    replies = [
        Client(app_url, verbose=False).predict("Good morrow.", *sampled.values(), api_name="/chat") for _ in range(2)
    ]
    assert replies[0] == replies[1]


def test_completion_with_probabilities(client):
    text, html, table = client.predict("ROMEO:\n", True, *SETTINGS.values(), api_name="/complete")
    assert len(text) == 40
    assert html.count('class="tok"') == 40
    rows = table["data"]
    assert len(rows) == 40 and all(len(r) == 7 for r in rows)
    assert rows[0][0] == text[0] and 0 < rows[0][1] <= 1
    text_plain, html_plain, _ = client.predict("ROMEO:\n", False, *SETTINGS.values(), api_name="/complete")
    assert text_plain == text and html_plain == ""


def test_long_prompt_is_cut_not_refused(client):
    text, _, _ = client.predict("ROMEO:\nlove " * 100, False, *SETTINGS.values(), api_name="/complete")
    assert len(text) == 40


def test_attention_heatmap(client):
    plot = client.predict("ROMEO: love", 1, 1, api_name="/attention")
    assert plot  # a serialised figure
    with pytest.raises(Exception, match="greater than maximum"):
        client.predict("ROMEO: love", 5, 0, api_name="/attention")
    with pytest.raises(Exception, match="short prompt"):
        client.predict("", 0, 0, api_name="/attention")


def test_model_switch_and_bad_names(client, tiny_model, names_model):
    info, loss, card, *_ = client.predict("names", api_name="/load_model")
    assert info["model"] == "names" and info["document_mode"] is True and info["parameters"] > 0
    assert loss and "GPT" in card
    name, _, _ = client.predict("k", False, *SETTINGS.values(), api_name="/complete")  # this session now uses it
    assert name.isalpha() and name.islower() and len(name) < 40
    with pytest.raises(Exception, match="not in the list of choices|not one of the models"):
        client.predict("not a/valid/repo", api_name="/load_model")
    with pytest.raises(Exception, match="not in the list of choices|not one of the models"):
        client.predict(str(names_model), api_name="/load_model")


def test_stopping_one_stream_leaves_another_running(app_url):
    long = {**SETTINGS, "max_new_tokens": 2000, "temperature": 1.0}
    a, b = Client(app_url, verbose=False), Client(app_url, verbose=False)
    job_a = a.submit("ROMEO:\n", False, *long.values(), api_name="/complete")
    job_b = b.submit("JULIET:\n", False, *{**long, "max_new_tokens": 300}.values(), api_name="/complete")
    time.sleep(1.0)
    job_a.cancel()
    text, _, _ = job_b.result(timeout=60)
    assert len(text) == 300


def test_a_hub_model_by_repo_id(client, hub, tiny_model, monkeypatch):
    from gpt.hub import push

    monkeypatch.setenv("HF_TOKEN", "hf_local_test_token")
    push(tiny_model, "carol/app-model")
    info, *_ = client.predict("carol/app-model", api_name="/load_model")
    assert info["model"] == "carol/app-model" and info["parameters"] > 0
    text, _, _ = client.predict("ROMEO:", False, *SETTINGS.values(), api_name="/complete")
    assert len(text) == 40
    with pytest.raises(Exception, match="not in the list of choices|not one of the models"):
        client.predict("carol/missing", api_name="/load_model")
