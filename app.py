"""The web app and the model server: a Gradio UI (streaming chat, a completion playground with token probabilities
and attention, a model picker) and an OpenAI-compatible API (gpt/server.py), in one process on one port.

python app.py serves both at http://127.0.0.1:7860 (GRADIO_SERVER_NAME / GRADIO_SERVER_PORT to change);
python app.py --api-only serves the API alone. MODEL_ID picks the default model (a folder or a Hub repo id,
owner/name[@revision]). Which models visitors may pick is the operator's choice: --models / GPT_MODELS (default: the
shipped folders under weights/), or any folder and repo id with --allow-any-model. GPT_API_KEY (or --api-key) asks for
the key on the API (Bearer) and in the UI (a login). All model work is in gpt/.
"""

import argparse
import asyncio
import bisect
import functools
import hmac
import html
import json
import math
import os
import random
import shlex
import sys
import threading
from collections.abc import AsyncIterator
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402
import torch  # noqa: E402

from gpt.card import model_kind, size  # noqa: E402
from gpt.catalog import Catalog, ModelUnavailable, NotOffered, Served  # noqa: E402
from gpt.chat import ChatPrompt, chat_prompt, known, layout, message_text, natural_end, speakers, turn, turns_of  # noqa: E402
from gpt.engine import Job  # noqa: E402
from gpt.feedback import FeedbackLog, prompt_of  # noqa: E402
from gpt.folder import read_metrics  # noqa: E402
from gpt.generate import LM  # noqa: E402
from gpt.micrograd import MLP, XS, YS, Value, fit, neuron, squared_error, trace  # noqa: E402
from gpt.names_task import base_prompt  # noqa: E402
from gpt.names_task import parse as parse_request  # noqa: E402
from gpt.sampling import SEED_MAX, SEED_MIN, SamplingParams, Token, check_seed, row_params  # noqa: E402
from gpt.tokenizer import UnknownCharactersError  # noqa: E402

ROOT = Path(__file__).resolve().parent
SHIPPED = str(ROOT / "weights" / "*")
API_KEY = os.environ.get("GPT_API_KEY")  # set from --api-key too: the API usage text mentions the key
FEEDBACK: FeedbackLog | None = None  # set from --feedback: where thumbs and retries are kept


CATALOG = Catalog.from_settings(os.environ.get("GPT_MODELS"), os.environ.get("MODEL_ID"), SHIPPED)


def get_served(name: str) -> Served:
    """The model of a catalog name and its engine (loaded once, shared with the API); a bad name is a gr.Error that
    says what to give instead, naming the model as the visitor named it, never its folder on the server's disk."""
    try:
        return CATALOG.get(name)
    except (NotOffered, ModelUnavailable) as e:
        raise gr.Error(str(e) + ".") from None


def get_lm(name: str) -> LM:
    return get_served(name).lm


def start(served: Served, prompts: list[str], params: list[SamplingParams], top_logprobs: int = 0) -> list[Job]:
    """Jobs for the model's engine, which decodes them in one batch with every other request, the UI's and the API's.
    Called on the event loop, which reads the jobs."""
    jobs = [Job(served.lm.encode_prompt(text), p, top_logprobs) for text, p in zip(prompts, params)]
    if not served.engine.submit(jobs):
        raise gr.Error("The server is at capacity: try again in a moment.")
    return jobs


async def streamed(job: Job) -> AsyncIterator[Token]:
    """A job's tokens; leaving early (Stop) frees its row after the engine's current step."""
    async for token in job.tokens():
        yield token
    if job.row.finish_reason == "error":
        raise gr.Error("Generation failed on the server (it is logged there): try again.")


def describe(name: str, served: Served) -> dict:
    """What the app shows about a model: architecture, size, device, decoding and the training figures."""
    lm = served.lm
    run = read_metrics(lm.folder).get("run", {}) if lm.folder else {}
    keys = ["best_val_loss", "exact_val_loss", "tokens_seen", "wall_time_s", "device_name"]
    return {
        "model": name,
        "parameters": lm.model.num_params(),
        "device": str(lm.device),
        "decoding": "compiled" if served.engine.compiled else "uncompiled",
        "document_mode": lm.tokenizer.documents,
        "tokenizer": lm.tokenizer.kind,
        "vocab": "".join(lm.tokenizer.chars) if lm.tokenizer.kind == "character" else lm.tokenizer.vocab_size,
        "trained_on": lm.about.get("file"),
        "kind": model_kind(run),
        "fine_tuned_from": (run.get("base_model") or {}).get("name"),
        "config": vars(lm.model.config),
        "training": {k: run[k] for k in keys if k in run},
    }


def choice_label(name: str) -> str:
    """A model as the list offers it: its name and, for a folder on this disk, whether it is base or tuned."""
    source = CATALOG.sources.get(name, name)
    return f"{name} ({model_kind(read_metrics(source).get('run', {}))})" if os.path.isdir(source) else name


def controls(temperature, top_k, top_p, max_new_tokens, repetition_penalty, seed: int) -> dict:
    return dict(
        temperature=float(temperature),
        top_k=int(top_k),
        top_p=float(top_p),
        max_new_tokens=int(max_new_tokens),
        repetition_penalty=float(repetition_penalty),
        seed=seed,
    )


SEEDS = random.SystemRandom()  # the random seeds' own source: the compiler and libraries reseed the module's generator
SEED_RULE = f"The seed must be a whole number ({SEED_MIN} to {SEED_MAX}) or blank."


def parse_seed(seed) -> int | None:
    """The seed field: blank means random; otherwise a whole number. None if it is not one."""
    text = str(seed if seed is not None else "").strip()
    if not text:
        return SEEDS.randrange(2**31)
    try:
        value = int(text)
        check_seed(value)
    except ValueError:
        return None
    return value


def unknown_characters(lm: LM, text: str) -> str | None:
    """What to tell a user whose text has characters the model does not know (None when it has none)."""
    unknown = lm.tokenizer.unknown(text)
    if not unknown:
        return None
    message = str(UnknownCharactersError(unknown, lm.tokenizer.chars))
    return message[0].upper() + message[1:] + "."


def fitted(lm: LM, text: str) -> str:
    """The text as the model will see it: a prompt longer than the context keeps its end, and the user is told once."""
    keep = lm.block_size - (1 if lm.tokenizer.documents else 0)
    size = len if lm.tokenizer.kind == "character" else (lambda t: len(lm.tokenizer.encode(t)))
    if lm.windowed or size(text) <= keep:
        return text
    unit = "characters" if lm.tokenizer.kind == "character" else "tokens"
    gr.Warning(f"The text is longer than the model's context ({lm.block_size} {unit}): only its last {keep} are used.")
    start = bisect.bisect_left(range(len(text)), -keep, key=lambda i: -size(text[i:]))  # whole characters kept
    return text[start:]


VALID = gr.validate(True, "")  # a validator answers for each input of its event, in order


def logged(check):
    """A validator that also writes one line to the server log per refusal: a user's error, not a fault."""

    @functools.wraps(check)
    def checked(*args):
        results = check(*args)
        refused = [r["message"] for r in (results if isinstance(results, list) else [results]) if not r["is_valid"]]
        if refused:
            log_refusal(check.__name__.removeprefix("check_"), refused[0])
        return results

    return checked


def log_refusal(event: str, message: str) -> None:
    print(f"* refused {event}: {message}", flush=True)


def check_settings(seed) -> list:
    """The settings' answers, in order: the sliders are range-checked by Gradio itself; the seed is checked here."""
    seed_ok = parse_seed(seed) is not None
    return [*[VALID] * 5, gr.validate(seed_ok, SEED_RULE)]


def model_problem(name: str) -> str | None:
    try:
        get_lm(name)
    except gr.Error as e:
        return e.message
    return None


def message_problem(message, model_name) -> str | None:
    """What is wrong with a chat message for this model (None: nothing)."""
    message = message_text(message)
    if not message.strip():
        return "The message is empty: type something to say."
    return None if model_problem(model_name) else unknown_characters(get_lm(model_name), message)


@logged
def check_chat(
    message, history, model_name, temperature, top_k, top_p, max_new_tokens, repetition_penalty, seed, system=""
):
    """Checks before a chat turn starts: a problem is shown at the box, which keeps the message and stays usable."""
    problem, bad_model = message_problem(message, model_name), model_problem(model_name)
    bad_system = None if bad_model else unknown_characters(get_lm(model_name), system or "")
    return [
        gr.validate(problem is None, problem or ""),
        VALID,
        gr.validate(bad_model is None, bad_model or ""),
        *check_settings(seed),
        gr.validate(bad_system is None, bad_system or ""),
    ]


def memory_note(lm: LM, prompt, turns: int) -> str:
    """What of the conversation the model sees, counted in its tokens (a character model's are its characters): the
    earlier turns that fit its context and how much of it they fill, or that the message alone does not fit."""
    if layout(lm) == "document":
        return ""
    unit = "characters" if lm.tokenizer.kind == "character" and not lm.tokenizer.specials else "tokens"
    kept, used = turns - prompt.dropped_turns, len(lm.tokenizer.encode(prompt.text))
    if used > lm.block_size:
        return (
            f" · this message alone is longer than the model's context of {lm.block_size:,} {unit}: it sees only the "
            f"last {lm.block_size:,} {unit} of it" + (", and none of the earlier turns" if turns else "")
        )
    if not turns:
        return ""
    seen = f" · the model sees {kept} earlier turn(s) and this message: {used:,} of its {lm.block_size:,} {unit}"
    return seen + (f"; not the {prompt.dropped_turns} oldest turn(s)" if prompt.dropped_turns else "")


async def chat(
    message, history, model_name, temperature, top_k, top_p, max_new_tokens, repetition_penalty, seed, system=""
):
    """One chat turn, streamed: yields (the cleared box, the conversation, a note on seed and memory). The system
    message leads the conversation of a chat-tuned model; the other layouts have no place for it."""
    served = await asyncio.to_thread(get_served, model_name)
    lm = served.lm
    problem = message_problem(message, model_name)  # a retried or edited message skips the box's validator
    if problem:
        log_refusal("chat", problem)
        raise gr.Error(problem)
    message = message_text(message).strip()
    seed = parse_seed(seed)
    settings = controls(temperature, top_k, top_p, max_new_tokens, repetition_penalty, seed)
    turns = turns_of(history)
    job, prompt = start_chat(served, turns, message, system, settings)
    note = f"seed {seed}" + memory_note(lm, prompt, len(turns))
    history = [*(history or []), {"role": "user", "content": message}, {"role": "assistant", "content": ""}]
    reply = prompt.reply_prefix
    async for token in streamed(job):  # the engine keeps the prompt's last block_size characters
        reply += token.text
        history[-1]["content"] = reply
        yield "", history, note
    if job.row.finish_reason == "length":
        reply = natural_end(reply)
    if not reply.strip():
        note += " · the model ended its turn without a word (shown as …): retry for another sample"
    history[-1]["content"] = reply if reply.strip() else "…"
    yield "", history, note


def start_chat(served: Served, turns: list, message: str, system: str, settings: dict) -> tuple[Job, ChatPrompt]:
    """A chat reply's job on the model's engine, and the prompt it continues (the UI's chat and the MCP tool)."""
    lm = served.lm
    prompt = chat_prompt(lm, turns, fitted(lm, message), system=known(lm, system or ""))
    (job,) = start(served, [prompt.text], [SamplingParams(**settings, stop=tuple(prompt.stop))])
    return job, prompt


def without_last_turn(history) -> tuple[list, str]:
    """The conversation without its last user message (and the reply to it), and that message: for undo and retry."""
    history = list(history or [])
    i = len(history) - 1
    while i >= 0 and history[i]["role"] == "assistant":
        i -= 1
    return (history[:i], message_text(history[i]["content"])) if i >= 0 else (history, "")


def last_reply(history) -> int | None:
    """The index of the conversation's last reply."""
    history = list(history or [])
    return next((i for i in range(len(history) - 1, -1, -1) if history[i]["role"] == "assistant"), None)


def thumb(history, system, model_name, turns: dict, data: gr.LikeData) -> tuple[dict, str]:
    """A thumb up or down on a reply, kept as a preference record (--feedback); the note says what was kept."""
    index = data.index[0] if isinstance(data.index, (list, tuple)) else data.index
    if data.liked not in (True, False) or FEEDBACK is None or history[index]["role"] != "assistant":
        return turns, gr.skip()
    prompt = prompt_of(history, index, system or "")
    pairs = FEEDBACK.thumb(turns, prompt, message_text(history[index]["content"]), data.liked, model_name)
    kept = "a thumb up" if data.liked else "a thumb down"
    return turns, f"kept {kept}" + (f" and {pairs} preference pair(s)" if pairs else "") + f" in {FEEDBACK.folder}"


def retried(history, system, turns: dict) -> dict:
    """The reply a retry replaces: the rejected side of a pair when another reply to the same turn is liked."""
    index = last_reply(history)
    if FEEDBACK is not None and index is not None:
        FEEDBACK.retried(turns, prompt_of(history, index, system or ""), message_text(history[index]["content"]))
    return turns


def edited(history, edit: gr.EditData) -> tuple[list, str]:
    """The conversation up to the edited message, and its new text (to be sent again)."""
    index = edit.index[0] if isinstance(edit.index, (list, tuple)) else edit.index
    return list(history or [])[:index], message_text(edit.value)


def shown(text: str) -> str:
    """A character as a table cell shows it: space and newline made visible."""
    return text.replace(" ", "␣").replace("\n", "↵")


def alternatives_table(tokens) -> list[list]:
    """Per generated token: its position, its probability and the five the model found most likely, with theirs."""
    return [
        [i, shown(t.text), f"{math.exp(t.logprob):.3f}"] + [f"{shown(a)} {math.exp(lp):.3f}" for a, lp in t.top]
        for i, t in enumerate(tokens, 1)
    ]


def probability_html(tokens) -> str:
    """Each generated token on a background as strong as its probability; hover or tap shows the top alternatives."""
    spans = []
    for i, t in enumerate(tokens, 1):
        p = math.exp(t.logprob)
        alternatives = f"#{i}: " + "  ".join(f"{shown(a)} {math.exp(lp):.1%}" for a, lp in t.top)
        label = html.escape(t.text).replace("\n", "↵<br>") or "&nbsp;"
        spans.append(
            f'<span class="tok" tabindex="0" data-i="{i}" data-alt="{html.escape(alternatives)}" data-p="{p:.3f}" '
            f'style="background: hsl({120 * p:.0f}, 75%, 80%)">{label}</span>'
        )
    legend = (
        "<p><small>Green: the model was sure; red: it was not. Hover or tap a character for its top 5; click it to "
        "see below what the settings did to its choice, and to continue from there.</small></p>"
    )
    return f'<div class="probs">{"".join(spans)}</div>{legend}'


MAX_NEW_TOKENS = 2000  # the settings' limit, and so the positions a completion can have
PROBABILITY_EVERY = 8  # tokens between updates of the coloured text, so a stopped run keeps what it showed


@logged
def check_complete(
    running, prompt, show_probabilities, model_name, temperature, top_k, top_p, max_new_tokens, repetition_penalty, seed
):
    bad_model = model_problem(model_name)
    problem = None if bad_model else unknown_characters(get_lm(model_name), prompt or "")
    return [
        VALID,  # the visitor's running completion
        gr.validate(problem is None, problem or ""),
        VALID,
        gr.validate(bad_model is None, bad_model or ""),
        *check_settings(seed),
    ]


async def complete(
    running,
    prompt,
    show_probabilities,
    model_name,
    temperature,
    top_k,
    top_p,
    max_new_tokens,
    repetition_penalty,
    seed,
):
    """A streamed completion: yields (text, coloured text, alternatives table, note). Stop ends it through
    `running` (the visitor's state), so the event ends as finished, not cancelled mid-update."""
    running["stop"] = False
    served = await asyncio.to_thread(get_served, model_name)
    seed = parse_seed(seed)
    settings = controls(temperature, top_k, top_p, max_new_tokens, repetition_penalty, seed)
    tokens, text, note = [], "", f"seed {seed}"
    top = 5 if show_probabilities else 0
    (job,) = start(served, [fitted(served.lm, prompt or "")], [SamplingParams(**settings)], top)
    running["job"] = job
    if running["stop"]:  # pressed while the model was loading
        job.cancelled.set()
    async for token in streamed(job):
        tokens.append(token)
        text += token.text
        if show_probabilities and len(tokens) % PROBABILITY_EVERY == 0:
            yield text, probability_html(tokens), alternatives_table(tokens), note
        elif not show_probabilities:
            yield text, "", [], note
    if show_probabilities:
        yield text, probability_html(tokens), alternatives_table(tokens), note
    else:
        yield text, "", [], note


def stop_completion(running):
    """The Playground's Stop: the engine frees the row within a step and the stream ends with what it has."""
    running["stop"] = True
    if running.get("job"):
        running["job"].cancelled.set()


@logged
def check_distribution(prompt, completion, position, model_name, *settings):
    bad_model = model_problem(model_name)
    problem = None if bad_model else unknown_characters(get_lm(model_name), prompt or "")
    return [
        gr.validate(problem is None, problem or ""),
        VALID,
        VALID,
        gr.validate(bad_model is None, bad_model or ""),
        *check_settings(settings[-1]),
    ]


def picked(lm: LM, prompt: str, completion: str, position) -> tuple[str, int] | None:
    """The text before the completion's token at `position` (from 1) and that token, or None past its end."""
    ids = lm.tokenizer.encode(completion or "")
    i = int(position or 0)
    if not 1 <= i <= len(ids):
        return None
    return (prompt or "") + lm.tokenizer.decode(ids[: i - 1]), ids[i - 1]


async def distribution(
    prompt, completion, position, model_name, temperature, top_k, top_p, max_new_tokens, repetition_penalty, seed
):
    """The chart of the next-token distribution at a position of the completion: the model's own and the one these
    settings sample from (nothing to draw before a completion)."""
    served = await asyncio.to_thread(get_served, model_name)
    lm = served.lm
    at = picked(lm, prompt, completion, position)
    if at is None:
        return None
    before, chosen = at
    settings = controls(temperature, top_k, top_p, 1, repetition_penalty, None)
    model, drawn = await served.engine.run(lambda: lm.next_token(before, **settings))
    return distribution_figure(lm, model, drawn, chosen, int(position), before)


def distribution_figure(lm: LM, model, drawn, chosen: int, position: int, before: str, top: int = 12):
    """Grouped bars of the likeliest tokens: the model's probability beside the sampled-from one; the written token
    is marked."""
    plt = pyplot()
    order = torch.maximum(model, drawn).argsort(descending=True)[:top].tolist()
    order = order if chosen in order else order[:-1] + [chosen]
    order.sort(key=lambda i: -float(model[i]))
    labels = [("▶ " if i == chosen else "") + repr(shown(lm.tokenizer.decode([i])))[1:-1] for i in order]
    fig, ax = plt.subplots(figsize=(6.4, 0.32 * len(order) + 1.4), dpi=90)
    y = torch.arange(len(order)).float()
    ax.barh(y - 0.2, [float(model[i]) for i in order], height=0.4, color="#9aa0a6", label="the model (temperature 1)")
    ax.barh(y + 0.2, [float(drawn[i]) for i in order], height=0.4, color="#e8710a", label="sampled from (settings)")
    ax.set_yticks(y.tolist(), labels, family="monospace", fontsize=9)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("probability")
    tail = shown(before[-24:])
    ax.set_title(f"position {position}: the token after …{tail}", fontsize=9, family="monospace", loc="left")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def continued_prompt(prompt, completion, position, model_name) -> str:
    """The prompt and the completion up to and including the token at `position`: where "Continue" writes on from."""
    lm = get_lm(model_name)
    at = picked(lm, prompt, completion, position)
    if at is None:
        raise gr.Error("Complete a prompt first, then click a character of the completion to continue from it.")
    before, chosen = at
    return before + lm.tokenizer.decode([chosen])


def position_range(completion, model_name):
    """In the browser the position slider spans the completion's tokens (a slider needs a maximum above its minimum);
    its static bound, which API calls are checked against, is the longest completion."""
    n = len(get_lm(model_name).tokenizer.encode(completion or ""))
    return gr.update(maximum=max(n, 2), value=1)


@logged
def check_attention(prompt, layer, head, model_name, completion="", all_heads=False):
    bad_model = model_problem(model_name)
    if bad_model:
        return [VALID, VALID, VALID, gr.validate(False, bad_model), VALID, VALID]
    lm = get_lm(model_name)
    cfg = lm.model.config
    if lm.windowed:
        window = f"{cfg.block_size} character{'s' * (cfg.block_size > 1)}"
        why = f"{model_name.strip()} has no attention: a {cfg.arch} reads a fixed window of {window}"
        return [VALID, VALID, VALID, gr.validate(False, why + ". Pick a GPT model to see attention."), VALID, VALID]
    problem = "Type a short prompt to see its attention." if not prompt else unknown_characters(lm, prompt)
    return [
        gr.validate(problem is None, problem or ""),
        gr.validate(0 <= int(layer) < cfg.n_layer, f"This model has layers 0-{cfg.n_layer - 1}."),
        gr.validate(0 <= int(head) < cfg.n_head, f"This model has heads 0-{cfg.n_head - 1}."),
        VALID,
        VALID,
        VALID,
    ]


async def attention(prompt, layer, head, model_name, completion="", all_heads=False):
    """The attention of one head (or every head of the layer) over the prompt and its completion, up to the context."""
    served = await asyncio.to_thread(get_served, model_name)
    lm = served.lm
    ids = lm.encode_prompt(prompt + (completion or ""))
    if len(ids) > lm.block_size:
        gr.Warning(f"Attention is shown for the last {lm.block_size} tokens: the model's context.")
        ids = ids[-lm.block_size :]
    x = torch.tensor([ids], device=lm.device)
    maps = await served.engine.run(lambda: lm.model.attention_maps(x)[int(layer)].float().cpu())
    labels = [shown(lm.tokenizer.decode([i])) for i in ids]
    heads = list(range(maps.size(0))) if all_heads else [int(head)]
    return attention_figure(maps, labels, int(layer), heads)


def pyplot():
    """matplotlib's pyplot on its file backend (the app draws for the page, never a window), imported when needed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def attention_figure(maps, labels: list[str], layer: int, heads: list[int]):
    """One heatmap per head, with a colour bar; long texts label every n-th token so the labels stay readable."""
    plt = pyplot()
    cols = min(len(heads), 4)
    rows = math.ceil(len(heads) / cols)
    side = min(3 + 0.16 * len(labels), 10) if len(heads) == 1 else 3.2
    fig, axes = plt.subplots(rows, cols, figsize=(side * cols + 1, side * rows + 0.5), dpi=90, squeeze=False)
    every = max(1, math.ceil(len(labels) / 48))
    ticks = list(range(0, len(labels), every))
    for ax in axes.flat[len(heads) :]:
        ax.axis("off")
    for ax, h in zip(axes.flat, heads):
        image = ax.imshow(maps[h].numpy(), cmap="viridis", vmin=0, vmax=1)
        ax.set_title(f"layer {layer}, head {h}", fontsize=9)
        if len(heads) == 1:
            ax.set_xticks(ticks, [labels[i] for i in ticks], fontsize=8, family="monospace")
            ax.set_yticks(ticks, [labels[i] for i in ticks], fontsize=8, family="monospace")
            ax.set_xlabel("attends to (earlier token)")
            ax.set_ylabel("token being read")
        else:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.colorbar(image, ax=axes, label="attention weight (each row sums to 1)", shrink=0.8)
    return fig


OLD_FOLDER_EXAMPLES = {  # for a folder made before training recorded its text
    "scene": ["What light through yonder window breaks?", "Good morrow, sweet lady."],
    "plain": ["Hello there.", "Once upon a time"],
    "document": ["em", "jo", "ka"],
    "template": ["Hello."],
}


def model_texts(name: str, lm: LM) -> dict:
    """What the tabs say and offer for a model, from the folder's record of its training text: its chat layout, real
    openings from that text as examples, the default prompt."""
    kind, about = layout(lm), lm.about
    user, model = speakers(lm)
    how = {
        "scene": f"your lines are spoken by {user} and the model answers as {model}",
        "plain": "one line each, yours then the model's",
        "document": "type the start of an item and the model finishes it",
        "template": "it was fine-tuned to answer, each message in its own turn"
        + (f", then by reinforcement learning with the reward `{about['reward']}`" if about.get("reward") else ""),
    }[kind]
    examples = [e for e in about.get("openings") or OLD_FOLDER_EXAMPLES[kind] if not lm.tokenizer.unknown(e)]
    unit = "characters" if lm.tokenizer.kind == "character" else "tokens"
    trained = f", trained on `{about['file']}`" if about.get("file") else ""
    first = examples[0] if examples else "Hello."
    prompt = {"document": "", "scene": f"{user}:\n", "plain": first, "template": turn("user", first) + "<|assistant|>"}
    prompt = prompt[kind]
    return {
        "current": f"**Model: {name}** ({size(lm.model.num_params())} parameters, context {lm.block_size} {unit}"
        f"{trained}). Chat: {how}.",
        "examples": [[e] for e in examples],
        "prompt": prompt,
        "prompt_label": "start of an item (blank: a fresh one)" if kind == "document" else "prompt",
        "placeholder": "the start of an item…" if kind == "document" else "Say something…",
    }


@logged
def check_model(name):
    typed = " or type a folder or Hub repo id" if CATALOG.allow_any else ""
    problem = model_problem(name) if (name or "").strip() else f"Pick a model from the list{typed}."
    return gr.validate(problem is None, problem or "")  # one input: one answer, not a list (Gradio wraps it)


def slider_tops(lm: LM) -> tuple[int, int]:
    """The layer and head sliders' maxima. A slider needs maximum > minimum, so a one-layer (or one-head) model gets
    0-1 and the validator refuses 1; a window model has no attention and its sliders are hidden."""
    cfg = lm.model.config
    return (1, 1) if lm.windowed else (max(cfg.n_layer - 1, 1), max(cfg.n_head - 1, 1))


def choose_model(name):
    """Load the picked model for this browser session and show it on every tab (checked first by check_model)."""
    name = name.strip()
    served = get_served(name)
    lm = served.lm
    texts = model_texts(name, lm)
    loss, card = model_files(lm)
    layers, heads = slider_tops(lm)
    return (
        name,
        texts["current"],
        describe(name, served),
        loss,
        card,
        gr.update(maximum=layers, value=0, visible=not lm.windowed),
        gr.update(maximum=heads, value=0, visible=not lm.windowed),
        gr.update(visible=not lm.windowed),
        gr.update(visible=not lm.windowed),
        gr.update(value=texts["prompt"], label=texts["prompt_label"]),
        gr.update(placeholder=texts["placeholder"]),
        gr.Dataset(samples=texts["examples"]),
        [],
        f"Now talking to {name}: a new model starts a new conversation.",
        gr.update(visible=layout(lm) == "template"),
    )


def model_files(lm: LM) -> tuple[str | None, str]:
    """The loss curve image and the model card as the app shows them: no YAML header, the curve shown apart."""
    folder = lm.folder
    loss = str(folder / "loss.png") if folder and (folder / "loss.png").is_file() else None
    card = (folder / "README.md").read_text(encoding="utf-8") if folder and (folder / "README.md").is_file() else ""
    if card.startswith("---"):
        card = card.split("\n---", 1)[-1].split("\n", 1)[-1]
    return loss, card.replace("![loss curve](loss.png)", "")


LADDER_SAMPLES = 6


@logged
def check_ladder(seed):
    return gr.validate(parse_seed(seed) is not None, SEED_RULE)


def offered_models() -> list[Served]:
    """Every model on offer that loads now (a Hub repo offline is left out: the Model tab says why when picked)."""
    served = []
    for name in CATALOG.sources:
        try:
            served.append(get_served(name))
        except gr.Error:
            continue
    return served


async def ladder(seed):
    """Every document-mode model on offer (the makemore ladder and the GPT above it), smallest first: its size, exact
    validation loss and names sampled with one seed (as generate_batch samples them), as a table and a chart of loss
    against parameters. Every model's engine samples at once."""
    seed = parse_seed(seed)
    if seed is None:  # API callers skip the validator
        raise gr.Error(SEED_RULE)
    models = [s for s in await asyncio.to_thread(offered_models) if s.lm.tokenizer.documents]
    params = SamplingParams(max_new_tokens=32, temperature=1.0, seed=seed)
    samples = [row_params(params, i) for i in range(LADDER_SAMPLES)]
    jobs = [start(served, [""] * LADDER_SAMPLES, samples) for served in models]
    texts = [await asyncio.gather(*(text_of(job) for job in model_jobs)) for model_jobs in jobs]
    rungs = []
    for served, names in zip(models, texts):
        lm = served.lm
        run = read_metrics(lm.folder).get("run", {}) if lm.folder else {}
        rungs.append((lm.model.num_params(), served.name, rung_arch(lm, run), run.get("exact_val_loss"), names))
    if not rungs:
        return "No document-mode model (such as the names models) is on offer here.", None
    rungs.sort(key=lambda r: r[0])
    table = [
        f"| model | architecture | parameters | validation loss | samples (seed {seed}, temperature 1) "
        "| what it adds |",
        "|---|---|---|---|---|---|",
    ]
    for params, name, arch, loss, names in rungs:
        shown_loss = f"{loss:.4f}" if loss is not None else "—"
        samples = ", ".join(n.strip() or "∅" for n in names)
        table.append(f"| {name} | {arch} | {params:,} | {shown_loss} | {samples} | {RUNGS.get(arch, '')} |")
    return "\n".join(table), ladder_figure([r for r in rungs if r[3] is not None])


RUNGS = {  # what each rung adds over the one before, by the ladder's architecture column
    "bigram": "A table of next-character scores read by the character before: counting pairs, learned by gradient "
    "descent.",
    "gpt (scalar engine)": "The transformer, trained one number at a time by micrograd's engine in pure Python: "
    "attention lets each character look back at every one before it.",
    "mlp": "Embeddings of the last 3 characters through a hidden layer with BatchNorm: context beyond one "
    "character, and characters that behave alike get alike vectors.",
    "wavenet": "8 characters fused two at a time in a tree of layers: a longer context without one huge layer.",
    "gpt": "The same transformer block in torch: batches, both cores (or a GPU) and a size the scalar engine "
    "could never train.",
}


STAGES = (  # the names assistant's stages, base first: what each one added
    (
        "pre-training",
        "A model of names: it writes names but knows nothing of requests; asked with the starting letters, "
        "it goes on as a name would.",
    ),
    ("supervised fine-tuning", "Requests answered by real names: it reads the request and answers in its turn."),
    (
        "reinforcement learning",
        "Its own answers, scored by the checker: it moves towards those that meet every constraint.",
    ),
)
ASSISTANT_REWARD = "gpt.names_task:reward"
EXAMPLE_REQUEST = 'A name that starts with "ma", ends with "a" and has 6 letters.'


def assistant_stages() -> list[str]:
    """The offered names assistant (an RL model with the names reward) and the models it was tuned from, base first."""
    for name, source in CATALOG.sources.items():
        if (
            os.path.isdir(source)
            and read_metrics(source).get("run", {}).get("settings", {}).get("rl") == ASSISTANT_REWARD
        ):
            return CATALOG.lineage(name)
    return []


@logged
def check_request(request, seed):
    try:
        parse_request(request or "")
    except ValueError as e:
        return [gr.validate(False, str(e)), VALID]
    return [VALID, gr.validate(parse_seed(seed) is not None, SEED_RULE)]


async def post_training(request, seed):
    """One request answered by each stage of the names assistant (the app's sampling, one seed), each answer checked."""
    seed = parse_seed(seed)
    try:
        asked = parse_request(request or "")
    except ValueError as e:  # API callers skip the validator
        raise gr.Error(str(e)) from None
    if seed is None:
        raise gr.Error(SEED_RULE)
    stages = assistant_stages()
    if len(stages) < len(STAGES):
        return "The names assistant and the models it was made from (weights/names-assistant*) are not on offer here."
    jobs, prefixes = [], []
    for name in stages[-len(STAGES) :]:
        served = get_served(name)
        if served.lm.tokenizer.specials:
            prompt = chat_prompt(served.lm, [], str(asked))
            text, stop, prefix = prompt.text, prompt.stop, ""
        else:
            text, stop = base_prompt(asked), ["\n"]
            prefix = text.strip()
        params = SamplingParams(max_new_tokens=32, temperature=0.8, top_k=40, top_p=0.95, stop=tuple(stop), seed=seed)
        jobs += start(served, [text], [params])
        prefixes.append(prefix)
    answers = [p + a.strip() for p, a in zip(prefixes, await asyncio.gather(*(text_of(job) for job in jobs)))]
    table = ["| stage | model | answer | meets the request | what the stage added |", "|---|---|---|---|---|"]
    for (stage, added), name, answer in zip(STAGES, stages[-len(STAGES) :], answers):
        failed = [k for k, ok in asked.checks(answer).items() if not ok]
        verdict = "yes" if asked.met(answer) else "no: " + (", ".join(failed) or "not one word of letters")
        table.append(f"| {stage} | {name} | {html.escape(answer) or '∅'} | {verdict} | {added} |")
    return "\n".join(table)


def rung_arch(lm: LM, run: dict) -> str:
    if lm.windowed:
        return lm.model.config.arch
    return "gpt (scalar engine)" if run.get("trainer") == "microgpt" else "gpt"


def micrograd_graph(after_backward: bool):
    """The lecture's neuron as its graph, each Value's label, data and grad: as computed, or after o.backward()."""
    plt = pyplot()
    o = neuron()
    if after_backward:
        o.backward()
    nodes, edges = trace(o)
    depth = {id(o): 0}
    for node in nodes:  # trace lists each node before its inputs: depth is the longest way to the output
        for child in node._prev:
            depth[id(child)] = max(depth.get(id(child), 0), depth[id(node)] + 1)
    columns: dict[int, list[Value]] = {}
    for node in nodes:
        columns.setdefault(depth[id(node)], []).append(node)
    where = {}
    for d, column in columns.items():
        for i, node in enumerate(sorted(column, key=lambda n: n.label)):
            where[id(node)] = (-d, (len(column) - 1) / 2 - i)
    fig, ax = plt.subplots(figsize=(9, 3.6), dpi=90)
    for child, node in edges:
        (x0, y0), (x1, y1) = where[id(child)], where[id(node)]
        ax.annotate("", (x1 - 0.32, y1), (x0 + 0.32, y0), arrowprops=dict(arrowstyle="->", color="0.5"))
    for node in nodes:
        x, y = where[id(node)]
        op = f" ({node._op})" if node._op else ""
        text = f"{node.label}{op}\ndata {node.data:.4f}\ngrad {node.grad:.4f}"
        ax.text(
            x,
            y,
            text,
            ha="center",
            va="center",
            fontsize=8,
            family="monospace",
            bbox=dict(boxstyle="round", fc="#e8f0fe" if node.grad else "white", ec="0.6"),
        )
    tallest = max(len(c) for c in columns.values())
    ax.set_xlim(-max(columns) - 0.6, 0.6)
    ax.set_ylim(-tallest / 2 - 0.2, tallest / 2 + 0.2)
    ax.axis("off")
    fig.tight_layout()
    return fig


def micrograd_view(state: dict):
    """The 41-parameter network's loss curve and where its four predictions stand."""
    from matplotlib.ticker import FormatStrFormatter

    plt = pyplot()
    model, losses = state["model"], state["losses"]
    fig, ax = plt.subplots(figsize=(6, 3), dpi=90)
    ax.plot(range(len(losses)), losses, "o-" if len(losses) < 40 else "-", markersize=3)
    ax.set_yscale("log")
    for axis in (ax.yaxis.set_major_formatter, ax.yaxis.set_minor_formatter):
        axis(FormatStrFormatter("%g"))
    ax.set_xlabel("gradient descent step")
    ax.set_ylabel("squared error (sum of 4)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    predictions = ", ".join(f"{model(x).data:+.3f}" for x in XS)
    status = (
        f"**Step {len(losses) - 1}**: loss {losses[-1]:.6f}. Predictions {predictions} for targets "
        f"{', '.join(f'{y:+.0f}' for y in YS)} ({len(model.parameters())} parameters, seed {state['seed']})."
    )
    return status, fig


def micrograd_reset(seed):
    """A fresh MLP(3, [4, 4, 1]) from a seed (blank: random)."""
    value = parse_seed(seed)
    if value is None:
        raise gr.Error(SEED_RULE)
    model = MLP(3, [4, 4, 1], rng=random.Random(value))
    state = {"model": model, "losses": [squared_error(model).data], "seed": value}
    return state, *micrograd_view(state)


def micrograd_open(state, seed):
    """The network as it was left when the tab was last open, or a fresh one."""
    return (state, *micrograd_view(state)) if state else micrograd_reset(seed)


def micrograd_train(state, steps, lr):
    """Some steps of gradient descent on the four examples: forward, zero_grad, backward, update."""
    if steps != int(steps):  # the sliders hold both within their bounds, not to whole steps
        raise gr.Error("steps must be a whole number from 1 to 100.")
    if state is None:
        state = micrograd_reset("0")[0]
    model = state["model"]
    state["losses"] = state["losses"][:-1] + fit(model, int(steps), float(lr)) + [squared_error(model).data]
    return state, *micrograd_view(state)


async def text_of(job: Job) -> str:
    return "".join([token.text async for token in streamed(job)])


async def resample_ladder():
    """A fresh seed, shown in the seed field so the samples can be had again."""
    seed = str(SEEDS.randrange(2**31))
    return seed, *(await ladder(seed))


def ladder_figure(rungs):
    from matplotlib.ticker import NullFormatter

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=90)
    ax.plot([r[0] for r in rungs], [r[3] for r in rungs], "o-")
    for params, name, _, loss, _ in rungs:
        ax.annotate(name, (params, loss), textcoords="offset points", xytext=(6, 4), fontsize=9)
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.margins(x=0.15, y=0.15)
    ax.set_xlabel("parameters")
    ax.set_ylabel("validation loss (nats/char)")
    ax.set_title("validation loss against parameters", fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def api_usage(request: gr.Request) -> str:
    """How to reach this server's OpenAI-compatible API, with the address the visitor used."""
    base = f"{request.headers.get('x-forwarded-proto', request.url.scheme)}://{request.headers.get('host', 'HOST')}"
    key = "YOUR_KEY" if API_KEY else "unused"
    auth = f" -H 'Authorization: Bearer {key}'" if API_KEY else ""
    texts = model_texts(CATALOG.default, get_lm(CATALOG.default))
    body = json.dumps({"prompt": texts["prompt"], "max_tokens": 100, "temperature": 0.8, "stream": True})
    said = json.dumps((texts["examples"] or [["Hello"]])[0][0])
    return f"""The same process serves an **OpenAI-compatible API** at `{base}/v1` (completions and chat, streaming).

```bash
curl {base}/v1/completions -H 'Content-Type: application/json'{auth} \\
  -d {shlex.quote(body)}
```

```python
from openai import OpenAI

client = OpenAI(base_url="{base}/v1", api_key="{key}")
messages = [{{"role": "user", "content": {said}}}]
reply = client.chat.completions.create(model="{CATALOG.default}", messages=messages)
print(reply.choices[0].message.content)
```
The API serves every model this app offers, by `model` (default: `{CATALOG.default}`); `GET /v1/models` lists them."""


CSS = """
.probs { font-family: monospace; white-space: pre-wrap; line-height: 1.6 }
.probs .tok { cursor: pointer; outline: none }
.probs .tok.picked { outline: 2px solid #e8710a }
#tok-tip { position: fixed; display: none; z-index: 1000; background: #222; color: #fff; padding: 2px 6px;
  border-radius: 4px; font: 12px monospace; white-space: pre-wrap; max-width: calc(100vw - 8px); pointer-events: none }
.alternatives th { white-space: nowrap }
.plain .message-content, .plain .message-content * { white-space: pre-wrap; font-family: monospace }
.gradio-container { overflow-wrap: break-word }
.validation-error { max-width: calc(100vw - 90px); overflow-wrap: anywhere }
.ladder-table table { display: block; overflow-x: auto }
.ladder-table th, .ladder-table td { word-break: normal !important; overflow-wrap: normal !important; hyphens: none }
.ladder-table td:nth-child(5), .ladder-table td:nth-child(6) { min-width: 14em }
"""


HEAD = """<script>
// The Playground's characters: a tooltip of the top 5 kept inside the screen, and a click that picks the position.
(() => {
  const tokenAt = (e) => e.target.closest && e.target.closest(".probs .tok");
  const tip = () => document.getElementById("tok-tip") ||
    document.body.appendChild(Object.assign(document.createElement("div"), {id: "tok-tip"}));
  function show(tok) {
    const box = tip(), r = tok.getBoundingClientRect();
    box.textContent = tok.dataset.alt;
    box.style.display = "block";
    box.style.left = Math.max(4, Math.min(r.left, innerWidth - box.offsetWidth - 4)) + "px";
    const below = r.bottom + box.offsetHeight + 8 <= innerHeight;
    box.style.top = (below ? r.bottom + 4 : r.top - box.offsetHeight - 4) + "px";
  }
  const hide = () => { const box = document.getElementById("tok-tip"); if (box) box.style.display = "none"; };
  document.addEventListener("mouseover", (e) => (tokenAt(e) ? show(tokenAt(e)) : hide()));
  document.addEventListener("focusin", (e) => (tokenAt(e) ? show(tokenAt(e)) : hide()));
  document.addEventListener("scroll", hide, true);
  document.addEventListener("click", (e) => {
    const tok = tokenAt(e), box = document.querySelector("#position input[type=number]");
    if (!tok || !box) return;
    document.querySelectorAll(".probs .tok.picked").forEach((t) => t.classList.remove("picked"));
    tok.classList.add("picked");
    box.value = tok.dataset.i;
    box.dispatchEvent(new Event("input", {bubbles: true}));
    box.dispatchEvent(new Event("change", {bubbles: true}));
  });
})();
</script>"""


CONTROL_HELP = {
    "temperature": "divides the scores before sampling: below 1 favours the likeliest tokens, above 1 evens them out",
    "top_k": "samples only among the k likeliest next tokens",
    "top_p": "samples only among the likeliest tokens that together hold this share of the probability",
    "max_new_tokens": "the most tokens one reply or completion may write",
    "penalty": "makes tokens already in the text less likely (above 1) or more likely (below 1)",
    "seed": "the same seed and settings write the same text again",
}


def list_models() -> list[str]:
    """The models this server offers, by the names the other tools take; the first is the default one.

    Returns:
        the model names
    """
    return [CATALOG.default, *(name for name in CATALOG.sources if name != CATALOG.default)]


def tool_settings(model: str, max_tokens: int, temperature: float, seed: int | None) -> tuple[str, dict]:
    """A tool call's model and sampling controls (the app's top-k and top-p), refused as the UI refuses them."""
    model = model or CATALOG.default
    chosen = parse_seed("" if seed is None else seed)
    problem = model_problem(model) or (SEED_RULE if chosen is None else None)
    if not problem and not (1 <= max_tokens <= MAX_NEW_TOKENS and 0 <= temperature <= 2):
        problem = f"max_tokens must be from 1 to {MAX_NEW_TOKENS} and temperature from 0 to 2."
    if problem:
        log_refusal("tool", problem)
        raise gr.Error(problem)
    return model, controls(temperature, 40, 0.95, max_tokens, 1.0, chosen)


async def complete_text(
    prompt: str, model: str = "", max_tokens: int = 200, temperature: float = 0.8, seed: int | None = None
) -> str:
    """Continue a text with one of the models on offer (a small GPT trained on one text file).

    Args:
        prompt: the text to continue
        model: a name from list_models (blank: the default model)
        max_tokens: the most tokens to write (1 to 2000)
        temperature: 0 for the most likely tokens, higher for more varied text
        seed: the random seed, for a result that can be repeated (blank: random)

    Returns:
        the continuation alone
    """
    model, settings = tool_settings(model, max_tokens, temperature, seed)
    served = await asyncio.to_thread(get_served, model)
    problem = unknown_characters(served.lm, prompt or "")
    if problem:
        raise gr.Error(problem)
    (job,) = start(served, [fitted(served.lm, prompt or "")], [SamplingParams(**settings)])
    return "".join([token.text async for token in streamed(job)])


async def chat_reply(
    message: str,
    model: str = "",
    system: str = "",
    max_tokens: int = 200,
    temperature: float = 0.8,
    seed: int | None = None,
) -> str:
    """One reply to a message from a model on offer, through its chat template (or a layout of its text).

    Args:
        message: what the user says
        model: a name from list_models (blank: the default model)
        system: a system message that leads the conversation (a chat-tuned model reads it)
        max_tokens: the most tokens the reply may have (1 to 2000)
        temperature: 0 for the most likely reply, higher for more varied ones
        seed: the random seed, for a reply that can be repeated (blank: random)

    Returns:
        the model's reply
    """
    model, settings = tool_settings(model, max_tokens, temperature, seed)
    problem = message_problem(message, model)
    if problem:
        raise gr.Error(problem)
    served = await asyncio.to_thread(get_served, model)
    job, prompt = start_chat(served, [], message_text(message).strip(), system, settings)
    reply = prompt.reply_prefix + "".join([token.text async for token in streamed(job)])
    return natural_end(reply) if job.row.finish_reason == "length" else reply


TOOLS = (list_models, complete_text, chat_reply)


class ToolsOnly:
    """ASGI middleware: the MCP server offers TOOLS alone, not every documented event of the UI (Gradio makes each a
    tool; a client's own `?tools=` choice stands)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        query = scope.get("query_string", b"")
        if scope["type"] == "http" and scope["path"].startswith("/gradio_api/mcp") and b"tools=" not in query:
            chosen = "tools=" + ",".join(tool.__name__ for tool in TOOLS)
            scope = {**scope, "query_string": (query + b"&" if query else b"") + chosen.encode()}
        await self.app(scope, receive, send)


def build_demo() -> gr.Blocks:
    served = get_served(CATALOG.default)
    lm = served.lm
    texts = model_texts(CATALOG.default, lm)
    with gr.Blocks(title="gpt: train, share, talk") as demo:
        model_name = gr.Textbox(CATALOG.default, visible=False, label="model")  # this browser's model, sent each call
        gr.Markdown("# gpt\nA small GPT, trained on one text file. Chat with it, or watch it choose each token.")
        current = gr.Markdown(texts["current"])
        with gr.Accordion("Generation settings", open=False):
            with gr.Row():
                temperature = gr.Slider(
                    0, 2, value=0.8, step=0.05, label="temperature (0 = greedy)", info=CONTROL_HELP["temperature"]
                )
                top_k = gr.Slider(0, 200, value=40, step=1, label="top-k (0 = off)", info=CONTROL_HELP["top_k"])
                top_p = gr.Slider(0.05, 1, value=0.95, step=0.01, label="top-p (1 = off)", info=CONTROL_HELP["top_p"])
            with gr.Row():
                max_new_tokens = gr.Slider(
                    1, MAX_NEW_TOKENS, value=300, step=1, label="max new tokens", info=CONTROL_HELP["max_new_tokens"]
                )
                repetition_penalty = gr.Slider(
                    0.5, 2, value=1.0, step=0.05, label="repetition penalty (1 = off)", info=CONTROL_HELP["penalty"]
                )
                seed = gr.Textbox(
                    value="", label="seed (blank = random)", placeholder="random", info=CONTROL_HELP["seed"]
                )
        settings = [temperature, top_k, top_p, max_new_tokens, repetition_penalty, seed]
        with gr.Tabs():
            with gr.Tab("Chat"):
                chatbot = gr.Chatbot(
                    label="conversation",
                    show_label=False,
                    height=420,
                    render_markdown=False,
                    elem_classes="plain",
                    editable="user",
                )
                box = gr.Textbox(
                    label="your message",
                    show_label=False,
                    placeholder=texts["placeholder"],
                    submit_btn=True,
                    stop_btn=True,
                )
                system = gr.Textbox(
                    "",
                    label="system message (optional)",
                    placeholder="leads the conversation, before your first message",
                    info="a chat-tuned model reads it in its own turn at the start of every prompt",
                    visible=layout(lm) == "template",
                )
                resent = gr.State("")  # a retried or edited message, sent again
                examples = gr.Dataset(components=[box], samples=texts["examples"], label="examples")
                with gr.Row():
                    chat_note = gr.Markdown()
                    clear = gr.Button("Clear", size="sm", scale=0)
                if FEEDBACK is not None:
                    gr.Markdown(
                        "Feedback is on: 👍/👎 on a reply, and the replies you retry, are kept on this server as "
                        "training data (the conversation and the model's name, nothing about you).",
                        elem_id="feedback-note",
                    )
                    turns = gr.State({})
                    chatbot.like(
                        thumb, [chatbot, system, model_name, turns], [turns, chat_note], api_visibility="private"
                    )
                    chatbot.retry(retried, [chatbot, system, turns], turns, api_visibility="private")
                sent = box.submit(
                    chat,
                    [box, chatbot, model_name, *settings, system],
                    [box, chatbot, chat_note],
                    validator=check_chat,
                    api_name="chat",
                )
                box.stop(None, cancels=[sent])
                again = dict(
                    fn=chat,
                    inputs=[resent, chatbot, model_name, *settings, system],
                    outputs=[box, chatbot, chat_note],
                    api_visibility="private",
                )
                examples.click(lambda example: example[0], examples, resent, api_visibility="private").then(**again)
                chatbot.retry(without_last_turn, chatbot, [chatbot, resent], api_visibility="private").then(**again)
                chatbot.edit(edited, chatbot, [chatbot, resent], api_visibility="private").then(**again)
                chatbot.undo(without_last_turn, chatbot, [chatbot, box], api_visibility="private")
                clear.click(lambda: ([], ""), None, [chatbot, chat_note], api_visibility="private")
            with gr.Tab("Playground"):
                prompt = gr.Textbox(label=texts["prompt_label"], value=texts["prompt"], lines=4)
                show_probabilities = gr.Checkbox(label="show probabilities", value=True)
                with gr.Row():
                    run = gr.Button("Complete", variant="primary")
                    stop = gr.Button("Stop")
                output = gr.Textbox(value="", label="completion", lines=8, visible=False)
                probabilities = gr.HTML()
                playground_note = gr.Markdown()
                alternatives = gr.Dataframe(
                    headers=["#", "tok", "p", "1st", "2nd", "3rd", "4th", "5th"],
                    label="top-5 alternatives, by position in the completion",
                    elem_classes="alternatives",
                )
                gr.Markdown(
                    "**What the settings do.** For one position of the completion (click a character above, or move "
                    "the slider): grey is what the model itself gave each token, orange what the settings left to "
                    "sample from. Lower the temperature, top-k or top-p and watch the orange bars gather on fewer "
                    "tokens; ▶ marks the one that was written."
                )
                with gr.Row():
                    position = gr.Slider(
                        1, MAX_NEW_TOKENS, value=1, step=1, label="position", elem_id="position", scale=3
                    )
                    continue_here = gr.Button("Continue from here", scale=1)
                chart = gr.Plot(
                    label="next-token distribution at that position", show_label=False, elem_id="distribution"
                )
                with gr.Row():
                    layers, heads = slider_tops(lm)
                    layer = gr.Slider(0, layers, value=0, step=1, label="layer", visible=not lm.windowed)
                    head = gr.Slider(0, heads, value=0, step=1, label="head", visible=not lm.windowed)
                    all_heads = gr.Checkbox(label="every head of the layer", value=False, visible=not lm.windowed)
                    show_attention = gr.Button("Show attention", visible=not lm.windowed)
                gr.Markdown(
                    "Each row is one token of the prompt and its completion; its colours say how much that token, "
                    "when the model read it, looked at each earlier token (columns). The upper right is empty: the "
                    "model never sees ahead."
                )
                heatmap = gr.Plot(label="attention", elem_id="attention-map")
                prompt.input(lambda: "", None, output, api_visibility="private")  # a new prompt, no old completion
                running = gr.State({})
                inputs = [running, prompt, show_probabilities, model_name, *settings]
                completed = run.click(
                    complete,
                    inputs,
                    [output, probabilities, alternatives, playground_note],
                    validator=check_complete,
                    api_name="complete",
                )
                completed.then(position_range, [output, model_name], position, api_visibility="private")
                gr.on(
                    [position.change, temperature.release, top_k.release, top_p.release, repetition_penalty.release],
                    distribution,
                    [prompt, output, position, model_name, *settings],
                    chart,
                    validator=check_distribution,
                    api_name="distribution",
                )
                continue_here.click(
                    continued_prompt,
                    [prompt, output, position, model_name],
                    prompt,
                    api_name="continue_from",
                ).then(
                    complete, inputs, [output, probabilities, alternatives, playground_note], api_visibility="private"
                ).then(position_range, [output, model_name], position, api_visibility="private")
                stop.click(stop_completion, running, None, api_visibility="private")
                show_probabilities.change(
                    lambda on: gr.update(visible=not on), show_probabilities, output, api_visibility="private"
                )
                gr.on(
                    [show_attention.click, layer.release, head.release, all_heads.change],
                    attention,
                    [prompt, layer, head, model_name, output, all_heads],
                    heatmap,
                    validator=check_attention,
                    api_name="attention",
                )
            with gr.Tab("Ladder") as ladder_tab:
                with gr.Accordion("Rung 0: micrograd, gradients one number at a time", open=True):
                    gr.Markdown(
                        "Every number is a `Value` that remembers how it was made; `backward()` walks that graph "
                        "from the output back and applies the chain rule at each node. Below, the lecture's neuron "
                        "`o = tanh(x1*w1 + x2*w2 + b)`: each grad is how much `o` moves per unit of that node."
                    )
                    with gr.Row():
                        graph_before = gr.Plot(label="computed: data filled in, every grad 0")
                        graph_after = gr.Plot(label="after o.backward(): each grad is do/d(node)")
                    gr.Markdown(
                        "The lecture's network, `MLP(3, [4, 4, 1])`: 41 such Values as parameters, fitted to four "
                        "examples by gradient descent. Step it and watch the squared error fall."
                    )
                    with gr.Row():
                        mg_seed = gr.Textbox(value="0", label="seed (blank = random)", scale=1)
                        mg_steps = gr.Slider(1, 100, value=1, step=1, label="steps per click", scale=2)
                        mg_lr = gr.Slider(0.01, 1.0, value=0.1, step=0.01, label="learning rate", scale=2)
                        mg_train = gr.Button("Step", variant="primary", scale=0)
                        mg_reset = gr.Button("Reset", scale=0)
                    mg_status = gr.Markdown()
                    mg_curve = gr.Plot(label="squared error against step")
                    mg_state = gr.State(None)
                gr.Markdown(
                    "The makemore ladder on names: microgpt (the GPT block on the scalar engine), a bigram table, "
                    "an MLP, a WaveNet and the GPT, on the same split. Pick any of them on the Model tab to chat."
                )
                with gr.Row():
                    ladder_seed = gr.Textbox(value="0", label="seed (blank = random)", scale=1)
                    resample = gr.Button("Sample again", scale=0)
                ladder_table = gr.Markdown(elem_classes="ladder-table")
                ladder_chart = gr.Plot(
                    label="validation loss against parameters", show_label=False, elem_id="ladder-chart"
                )
                ladder_tab.select(
                    ladder,
                    ladder_seed,
                    [ladder_table, ladder_chart],
                    validator=check_ladder,
                    api_name="ladder_tab",
                    api_visibility="private",
                )
                ladder_seed.submit(
                    ladder,
                    ladder_seed,
                    [ladder_table, ladder_chart],
                    validator=check_ladder,
                    api_name="ladder",
                )
                resample.click(
                    resample_ladder, None, [ladder_seed, ladder_table, ladder_chart], api_visibility="private"
                )
                ladder_tab.select(
                    lambda: (micrograd_graph(False), micrograd_graph(True)),
                    None,
                    [graph_before, graph_after],
                    api_visibility="private",
                )
                gr.Markdown(
                    "Post-training, from a model of names to an assistant: the same request answered by the base "
                    "(pre-trained on names), the model fine-tuned on requests and answers, and that one after "
                    "reinforcement learning with a checker as its reward. Requests: `A name that C.`, `… C and D.` or "
                    '`… C, D and E.`, with `starts with "S"`, `ends with "E"` (1-3 letters), `has N letters` (3-12) '
                    'and `contains "CD"`, in that order.'
                )
                with gr.Row():
                    request = gr.Textbox(value=EXAMPLE_REQUEST, label="request", scale=4)
                    ask = gr.Button("Answer", scale=0)
                stages_table = gr.Markdown(elem_classes="ladder-table")
                for event in (ask.click, request.submit):
                    event(
                        post_training,
                        [request, ladder_seed],
                        stages_table,
                        validator=check_request,
                        api_name="post_training" if event == ask.click else False,
                        api_visibility="public" if event == ask.click else "private",
                    )
                mg_outputs = [mg_state, mg_status, mg_curve]
                ladder_tab.select(micrograd_open, [mg_state, mg_seed], mg_outputs, api_visibility="private")
                mg_reset.click(micrograd_reset, mg_seed, mg_outputs, api_name="micrograd_reset")
                mg_train.click(
                    micrograd_train,
                    [mg_state, mg_steps, mg_lr],
                    mg_outputs,
                    api_name="micrograd_train",
                )
            with gr.Tab("Model") as model_tab:
                with gr.Row():
                    picked = gr.Dropdown(
                        [(choice_label(name), name) for name in CATALOG.sources],
                        value=CATALOG.default,
                        label="model",
                        info="or type a folder or Hub repo id (owner/name@revision)" if CATALOG.allow_any else None,
                        allow_custom_value=CATALOG.allow_any,
                    )
                    load_button = gr.Button("Load", variant="primary")
                loss_png, card_text = model_files(lm)
                summary = gr.JSON(describe(CATALOG.default, served), label="model")
                loss = gr.Image(loss_png, label="training loss", type="filepath")
                card = gr.Markdown(card_text)
                with gr.Accordion("Use it from code: the OpenAI-compatible API", open=False):
                    usage = gr.Markdown()
                model_tab.select(  # as it is now: decoding may have been compiled since the page opened
                    lambda name: describe(name, get_served(name)), model_name, summary, api_visibility="private"
                )
                load_button.click(
                    choose_model,
                    [picked],
                    [
                        *[model_name, current, summary, loss, card, layer, head, all_heads, show_attention, prompt],
                        box,
                        *[examples, chatbot, chat_note, system],
                    ],
                    validator=check_model,
                    api_name="load_model",
                )
        demo.load(api_usage, None, usage, api_visibility="private")
        for tool in TOOLS:  # the MCP server's tools, and plain API endpoints beside the UI's own
            gr.api(tool, api_name=tool.__name__)
    demo.queue(default_concurrency_limit=CATALOG.max_batch, max_size=CATALOG.max_batch + CATALOG.max_waiting)
    return demo


def main() -> None:
    global CATALOG, API_KEY, FEEDBACK
    p = argparse.ArgumentParser(description="Serve the gpt web app and its OpenAI-compatible API.")
    p.add_argument("--api-only", action="store_true", help="serve the HTTP API without the UI")
    a = p.add_argument
    a(
        "--api-key",
        default=os.environ.get("GPT_API_KEY"),
        help="require this key: Bearer on /v1/*, and a login (any name, the key as password) for the UI",
    )
    a(
        "--models",
        default=os.environ.get("GPT_MODELS"),
        help="models visitors may pick: comma-separated folders, folder globs and Hub repo ids "
        "(default: the shipped weights/*; MODEL_ID is always included)",
    )
    a(
        "--allow-any-model",
        action="store_true",
        default=os.environ.get("GPT_ALLOW_ANY_MODEL") == "1",
        help="let visitors load any folder on this machine or any Hub repo (for local use only)",
    )
    p.add_argument("--max-batch", type=int, default=16, help="requests decoded together in one batched step")
    p.add_argument("--max-waiting", type=int, default=64, help="requests allowed to wait; beyond that, 429")
    a(
        "--feedback",
        default=os.environ.get("GPT_FEEDBACK"),
        help="keep the chat's thumbs up/down and retried replies in this folder as preference data (JSONL in TRL's "
        "formats, for --dpo and --reward-model); off unless given",
    )
    a(
        "--no-compile",
        action="store_true",
        help="never compile decoding (as GPT_COMPILE=0); by default it is compiled in the background after start",
    )
    args = p.parse_args()
    import uvicorn

    from gpt.server import Server, create_app

    CATALOG = Catalog.from_settings(
        args.models,
        os.environ.get("MODEL_ID"),
        SHIPPED,
        allow_any=args.allow_any_model,
        compile=not args.no_compile and os.environ.get("GPT_COMPILE", "1") != "0",
        max_batch=args.max_batch,
        max_waiting=args.max_waiting,
    )
    API_KEY = args.api_key
    FEEDBACK = FeedbackLog(args.feedback) if args.feedback else None
    if not CATALOG.default:
        sys.exit("error: no model to serve: set MODEL_ID or --models (the shipped weights/ folder is empty)")
    server = Server(CATALOG, api_key=args.api_key)
    app = create_app(server)
    host = os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1")
    port = int(os.environ.get("GRADIO_SERVER_PORT", "7860"))
    uv = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=3))

    def load_in_background() -> None:  # /health answers 503 until the model is in
        try:
            get_served(CATALOG.default)
        except gr.Error as e:
            server.load_error = e.message
            uv.should_exit = True

    print(f"* loading {CATALOG.default}", flush=True)
    try:
        if args.api_only:
            threading.Thread(target=load_in_background, daemon=True).start()
        else:
            demo = build_demo()
            login = None
            if args.api_key:
                key = args.api_key.encode()
                login = lambda user, password: hmac.compare_digest(password.encode(), key)  # noqa: E731
            uv.config.app = gr.mount_gradio_app(
                app,
                demo,
                path="/",
                auth=login,
                css=CSS,
                head=HEAD,
                auth_message="This app asks for its API key: log in with any user name and the key as the password.",
                mcp_server=not args.api_key,  # Gradio's tool calls cannot carry the login a key asks for
            )
    except gr.Error as e:
        sys.exit(f"error: {e.message}")
    mcp = "off (an API key is set)" if args.api_key else "/gradio_api/mcp/"
    ui = "off" if args.api_only else f"/, MCP: {mcp}"
    uv.config.app = ToolsOnly(uv.config.app)
    print(f"* serving {CATALOG.default} at http://{host}:{port} (UI: {ui}, API: /v1)")
    uv.run()
    if server.load_error:
        sys.exit(f"error: {server.load_error}")


if __name__ == "__main__":
    main()
