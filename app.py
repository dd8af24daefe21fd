"""The web app and the model server: a Gradio UI (streaming chat, a completion playground with token probabilities
and attention, a model picker) and an OpenAI-compatible API (gpt/server.py), in one process on one port.

python app.py serves both at http://127.0.0.1:7860 (GRADIO_SERVER_NAME / GRADIO_SERVER_PORT to change);
python app.py --api-only serves the API alone. MODEL_ID picks the default model (a folder or a Hub repo id,
owner/name[@revision]). Which models visitors may pick is the operator's choice: --models / GPT_MODELS (default: the
shipped folders under weights/), or any folder and repo id with --allow-any-model. GPT_API_KEY (or --api-key) asks for
the key on the API (Bearer) and in the UI (a login). All model work is in gpt/.
"""

import argparse
import functools
import glob
import hmac
import html
import math
import os
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402
import torch  # noqa: E402

from gpt.chat import chat_prompt, layout, message_text, turns_of  # noqa: E402
from gpt.folder import read_metrics  # noqa: E402
from gpt.generate import LM  # noqa: E402
from gpt.hub import ModelNotFoundError, load  # noqa: E402
from gpt.model import ModelFileError  # noqa: E402

try:  # ZeroGPU Spaces: run the model calls on a GPU slice; elsewhere a no-op
    import spaces

    gpu = spaces.GPU
except ImportError:
    gpu = lambda fn: fn  # noqa: E731

ROOT = Path(__file__).resolve().parent
SHIPPED = str(ROOT / "weights" / "*")
ATTENTION_MAX_CHARS = 64


@dataclass
class Catalog:
    """The models this app offers, by short name (a folder's name or a repo id), and whether others may be named."""

    sources: dict[str, str] = field(default_factory=dict)  # short name -> folder path or owner/name[@revision]
    default: str = ""
    allow_any: bool = False

    @classmethod
    def from_settings(cls, models: str | None, default: str | None, allow_any: bool = False) -> "Catalog":
        """models: comma-separated folders, folder globs and repo ids; default (MODEL_ID) is always offered."""
        catalog = cls(allow_any=allow_any)
        for item in [i.strip() for i in (models or SHIPPED).split(",") if i.strip()]:
            if glob.has_magic(item):
                for folder in sorted(glob.glob(item)):
                    if os.path.isfile(os.path.join(folder, "config.json")):
                        catalog.add(folder)
            else:
                catalog.add(item)
        if default:
            catalog.default = catalog.add(default)
        else:
            catalog.default = (
                "shakespeare-char" if "shakespeare-char" in catalog.sources else next(iter(catalog.sources), "")
            )
        return catalog

    def add(self, source: str) -> str:
        name = Path(source).name if os.path.isdir(source) else source
        self.sources[name] = str(Path(source).resolve()) if os.path.isdir(source) else source
        return name

    def source(self, name: str) -> str:
        name = (name or "").strip()
        if name in self.sources:
            return self.sources[name]
        if self.allow_any and name:
            return name
        offered = ", ".join(self.sources) or "none"
        raise gr.Error(f"{name!r} is not one of the models this app offers: pick one of {offered}.")


CATALOG = Catalog.from_settings(os.environ.get("GPT_MODELS"), os.environ.get("MODEL_ID"))


@functools.lru_cache(maxsize=4)
def load_cached(source: str) -> LM:
    """load() once per model: the sessions and the API share loaded models."""
    return load(source)


def get_lm(name: str) -> LM:
    """The model of a catalog name (cached); a bad name is a gr.Error that says what to give instead.

    Messages name the model as the visitor named it, never the folder it maps to on the server's disk.
    """
    source = CATALOG.source(name)
    try:
        return load_cached(source)
    except (ModelNotFoundError, ModelFileError, ValueError, FileNotFoundError) as e:
        message = str(e).replace(source, name.strip())
        raise gr.Error(message) from None


def describe(name: str, lm: LM) -> dict:
    """What the app shows about a model: architecture, size, device and the training figures."""
    run = read_metrics(lm.folder).get("run", {}) if lm.folder else {}
    keys = ["best_val_loss", "exact_val_loss", "tokens_seen", "wall_time_s", "device_name"]
    return {
        "model": name,
        "parameters": lm.model.num_params(),
        "device": str(lm.device),
        "document_mode": lm.tokenizer.documents,
        "vocab": "".join(lm.tokenizer.chars),
        "config": vars(lm.model.config),
        "training": {k: run[k] for k in keys if k in run},
    }


def controls(temperature, top_k, top_p, max_new_tokens, repetition_penalty, seed) -> dict:
    return dict(
        temperature=float(temperature), top_k=int(top_k), top_p=float(top_p), max_new_tokens=int(max_new_tokens),
        repetition_penalty=float(repetition_penalty), seed=None if seed in (None, "") else int(seed),
    )  # fmt: skip


def checked_prompt(lm: LM, text: str) -> str:
    """The prompt as the model will see it: unknown characters are an error, an over-long one is cut and said so."""
    unknown = lm.tokenizer.unknown(text)
    if unknown:
        shown = " ".join(repr(c) for c in unknown)
        raise gr.Error(f"This model does not know these characters: {shown}. Remove or replace them.")
    keep = lm.block_size - (1 if lm.tokenizer.documents else 0)
    if len(text) > keep:
        gr.Warning(
            f"The prompt is longer than the model's context ({lm.block_size}): "
            f"only its last {keep} characters are used."
        )
        text = text[-keep:]
    return text


@gpu
def chat(message, history, model_name, temperature, top_k, top_p, max_new_tokens, repetition_penalty, seed):
    lm = get_lm(model_name)
    message = message_text(message)
    if not message.strip():
        raise gr.Error("The message is empty: type something to say.")
    checked_prompt(lm, message)
    settings = controls(temperature, top_k, top_p, max_new_tokens, repetition_penalty, seed)
    prompt = chat_prompt(lm, turns_of(history), message)
    if prompt.dropped_turns and layout(lm) != "document":
        gr.Info(f"{prompt.dropped_turns} earlier turn(s) left out to fit the model's context.")
    text = checked_prompt(lm, prompt.text)
    reply = prompt.text if layout(lm) == "document" else ""
    stream = lm.stream(text, **{**settings, "stop": prompt.stop})
    try:
        for piece in stream:
            reply += piece
            yield reply
    except ValueError as e:
        raise gr.Error(str(e)) from None
    finally:
        stream.close()
    if not reply.strip():
        yield "…"


def alternatives_table(tokens) -> list[list]:
    """Per generated token: its probability and the five the model found most likely, with theirs."""
    return [[t.text, round(math.exp(t.logprob), 4)] + [f"{a!r} {math.exp(lp):.3f}" for a, lp in t.top] for t in tokens]


def probability_html(tokens) -> str:
    """Each generated token on a background as strong as its probability; hover shows the top alternatives."""
    spans = []
    for t in tokens:
        p = math.exp(t.logprob)
        alternatives = " | ".join(f"{a!r} {math.exp(lp):.1%}" for a, lp in t.top)
        label = html.escape(t.text).replace("\n", "↵<br>") or "&nbsp;"
        spans.append(
            f'<span class="tok" title="{html.escape(alternatives)}" data-p="{p:.3f}" '
            f'style="background: hsl({120 * p:.0f}, 75%, 80%)">{label}</span>'
        )
    legend = "<p><small>Green: the model was sure; red: it was not. Hover a character for its top-5.</small></p>"
    return f'<div class="probs" style="font-family: monospace; white-space: pre-wrap">{"".join(spans)}</div>{legend}'


@gpu
def complete(
    prompt, show_probabilities, model_name, temperature, top_k, top_p, max_new_tokens, repetition_penalty, seed
):
    lm = get_lm(model_name)
    settings = controls(temperature, top_k, top_p, max_new_tokens, repetition_penalty, seed)
    prompt = checked_prompt(lm, prompt or "")
    try:
        completion = lm.complete(prompt, top_logprobs=5 if show_probabilities else 0, **settings)
    except ValueError as e:
        raise gr.Error(str(e)) from None
    tokens, text = [], ""
    try:
        for token in completion:
            tokens.append(token)
            text += token.text
            yield text, "", []
    finally:
        completion.close()
    if show_probabilities:
        yield text, probability_html(tokens), alternatives_table(tokens)
    else:
        yield text, "", []


@gpu
def attention(prompt, layer, head, model_name):
    lm = get_lm(model_name)
    prompt = prompt or ""
    if not prompt:
        raise gr.Error("Type a short prompt to see its attention.")
    checked_prompt(lm, prompt)
    if len(prompt) > ATTENTION_MAX_CHARS:
        gr.Warning(f"Attention is shown for the last {ATTENTION_MAX_CHARS} characters of the prompt.")
        prompt = prompt[-ATTENTION_MAX_CHARS:]
    cfg = lm.model.config
    layer, head = int(layer), int(head)
    if not (0 <= layer < cfg.n_layer and 0 <= head < cfg.n_head):
        raise gr.Error(f"This model has layers 0-{cfg.n_layer - 1} and heads 0-{cfg.n_head - 1}.")
    ids = torch.tensor([lm.encode_prompt(prompt)], device=lm.device)
    maps = lm.model.attention_maps(ids)[layer, head].float().cpu()
    labels = [lm.tokenizer.decode([i]).replace("\n", "↵").replace(" ", "␣") for i in ids[0].tolist()]
    return attention_figure(maps, labels, layer, head)


def attention_figure(maps, labels, layer, head):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    size = 3 + 0.16 * len(labels)
    fig, ax = plt.subplots(figsize=(size, size), dpi=90)
    ax.imshow(maps.numpy(), cmap="viridis", vmin=0, vmax=1)
    ax.set_xticks(range(len(labels)), labels, fontsize=8, family="monospace")
    ax.set_yticks(range(len(labels)), labels, fontsize=8, family="monospace")
    ax.set_xlabel("attends to (key)")
    ax.set_ylabel("query position")
    ax.set_title(f"layer {layer}, head {head}")
    fig.tight_layout()
    return fig


def choose_model(name):
    """Load the picked model for this browser session and show what it is; a failed load keeps the previous one."""
    name = (name or "").strip()
    if not name:
        raise gr.Error(
            "Pick a model from the list" + (" or type a folder or Hub repo id." if CATALOG.allow_any else ".")
        )
    lm = get_lm(name)
    cfg = lm.model.config
    loss, card = model_files(lm)
    return name, describe(name, lm), loss, card, gr.update(maximum=cfg.n_layer - 1), gr.update(maximum=cfg.n_head - 1)


def model_files(lm: LM) -> tuple[str | None, str]:
    """The loss curve image and the model card (without its YAML header) of the model's folder."""
    folder = lm.folder
    loss = str(folder / "loss.png") if folder and (folder / "loss.png").is_file() else None
    card = (folder / "README.md").read_text(encoding="utf-8") if folder and (folder / "README.md").is_file() else ""
    if card.startswith("---"):
        card = card.split("\n---", 1)[-1].split("\n", 1)[-1]
    return loss, card


def build_demo() -> gr.Blocks:
    lm = get_lm(CATALOG.default)
    cfg = lm.model.config
    with gr.Blocks(title="gpt: train, share, talk") as demo:
        model_name = gr.State(CATALOG.default)
        gr.Markdown("# gpt\nA small character-level GPT, trained from scratch. Chat with it, or watch it choose.")
        with gr.Accordion("Generation settings", open=False):
            with gr.Row():
                temperature = gr.Slider(0, 2, value=0.8, step=0.05, label="temperature (0 = greedy)")
                top_k = gr.Slider(0, 200, value=40, step=1, label="top-k (0 = off)")
                top_p = gr.Slider(0.05, 1, value=0.95, step=0.01, label="top-p (1 = off)")
            with gr.Row():
                max_new_tokens = gr.Slider(1, 2000, value=300, step=1, label="max new tokens")
                repetition_penalty = gr.Slider(0.5, 2, value=1.0, step=0.05, label="repetition penalty (1 = off)")
                seed = gr.Number(value=None, precision=0, label="seed (blank = random)")
        settings = [temperature, top_k, top_p, max_new_tokens, repetition_penalty, seed]
        with gr.Tabs():
            with gr.Tab("Chat"):
                gr.ChatInterface(
                    chat,
                    additional_inputs=[model_name, *settings],
                    api_name="chat",
                    stop_btn=True,
                    examples=[["What light through yonder window breaks?"], ["Good morrow, sweet lady."]],
                    run_examples_on_click=False,
                )
            with gr.Tab("Playground"):
                prompt = gr.Textbox(label="prompt", value="ROMEO:\n", lines=4)
                show_probabilities = gr.Checkbox(label="show probabilities", value=True)
                with gr.Row():
                    run = gr.Button("Complete", variant="primary")
                    stop = gr.Button("Stop")
                output = gr.Textbox(label="completion", lines=8)
                probabilities = gr.HTML()
                alternatives = gr.Dataframe(
                    headers=["token", "p", "1st", "2nd", "3rd", "4th", "5th"], label="top-5 alternatives", wrap=True
                )
                with gr.Row():
                    layer = gr.Slider(0, cfg.n_layer - 1, value=0, step=1, label="layer")
                    head = gr.Slider(0, cfg.n_head - 1, value=0, step=1, label="head")
                    show_attention = gr.Button("Show attention")
                heatmap = gr.Plot(label="attention")
                inputs = [prompt, show_probabilities, model_name, *settings]
                job = run.click(complete, inputs, [output, probabilities, alternatives], api_name="complete")
                stop.click(None, cancels=[job])
                show_attention.click(attention, [prompt, layer, head, model_name], heatmap, api_name="attention")
            with gr.Tab("Model"):
                with gr.Row():
                    picked = gr.Dropdown(
                        list(CATALOG.sources),
                        value=CATALOG.default,
                        label="model",
                        info="or type a folder or Hub repo id (owner/name@revision to pin)"
                        if CATALOG.allow_any
                        else None,
                        allow_custom_value=CATALOG.allow_any,
                    )
                    load_button = gr.Button("Load", variant="primary")
                loss_png, card_text = model_files(lm)
                summary = gr.JSON(describe(CATALOG.default, lm), label="model")
                loss = gr.Image(loss_png, label="training loss", type="filepath")
                card = gr.Markdown(card_text)
                load_button.click(
                    choose_model,
                    [picked],
                    [model_name, summary, loss, card, layer, head],
                    api_name="load_model",
                )
    demo.queue(default_concurrency_limit=4, max_size=32)
    return demo


def main() -> None:
    global CATALOG
    p = argparse.ArgumentParser(description="Serve the gpt web app and its OpenAI-compatible API.")
    p.add_argument("--api-only", action="store_true", help="serve the HTTP API without the UI")
    a = p.add_argument
    a("--api-key", default=os.environ.get("GPT_API_KEY"),
      help="require this key: Bearer on /v1/*, and a login (any name, the key as password) for the UI")  # fmt: skip
    a("--models", default=os.environ.get("GPT_MODELS"),
      help="models visitors may pick: comma-separated folders, folder globs and Hub repo ids "
      "(default: the shipped weights/*; MODEL_ID is always included)")  # fmt: skip
    a("--allow-any-model", action="store_true", default=os.environ.get("GPT_ALLOW_ANY_MODEL") == "1",
      help="let visitors load any folder on this machine or any Hub repo (for local use only)")  # fmt: skip
    p.add_argument("--max-batch", type=int, default=16, help="requests decoded together in one batched step")
    p.add_argument("--max-waiting", type=int, default=64, help="requests allowed to wait; beyond that, 429")
    args = p.parse_args()
    import uvicorn

    from gpt.server import Server, create_app

    CATALOG = Catalog.from_settings(args.models, os.environ.get("MODEL_ID"), args.allow_any_model)
    if not CATALOG.default:
        sys.exit("error: no model to serve: set MODEL_ID or --models (the shipped weights/ folder is empty)")
    server = Server(CATALOG.default, api_key=args.api_key, max_batch=args.max_batch, max_waiting=args.max_waiting)
    app = create_app(server)
    host = os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1")
    port = int(os.environ.get("GRADIO_SERVER_PORT", "7860"))
    uv = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=3))

    def load_in_background() -> None:  # /health answers 503 until the model is in
        try:
            server.ready(get_lm(CATALOG.default))
        except gr.Error as e:
            server.load_error = e.message
            uv.should_exit = True

    try:
        if args.api_only:
            threading.Thread(target=load_in_background, daemon=True).start()
        else:
            demo = build_demo()
            server.ready(get_lm(CATALOG.default))
            login = None
            if args.api_key:
                key = args.api_key.encode()
                login = lambda user, password: hmac.compare_digest(password.encode(), key)  # noqa: E731
            uv.config.app = gr.mount_gradio_app(
                app, demo, path="/", auth=login,
                auth_message="This app asks for its API key: log in with any user name and the key as the password.",
            )  # fmt: skip
    except gr.Error as e:
        sys.exit(f"error: {e.message}")
    print(f"* serving {CATALOG.default} at http://{host}:{port} (UI: {'off' if args.api_only else '/'}, API: /v1)")
    uv.run()
    if server.load_error:
        sys.exit(f"error: {server.load_error}")


if __name__ == "__main__":
    main()
