"""The Model tab: pick a model for this browser (every tab follows), see its figures, curve and card, and how to reach
the same models through the OpenAI-compatible API."""

import json
import os
import shlex
from types import SimpleNamespace

import gradio as gr

from gpt.serving.catalog import Served
from gpt.serving.chat import layout, speakers, turn
from gpt.serving.generate import LM
from gpt.storage.card import model_kind, size
from gpt.storage.folder import read_metrics
from gpt.ui.chat_tab import kept_record
from gpt.ui.context import Context, answer, logged
from gpt.ui.playground_tab import slider_tops

OLD_FOLDER_EXAMPLES = {  # for a folder made before training recorded its text
    "scene": ["What light through yonder window breaks?", "Good morrow, sweet lady."],
    "plain": ["Hello there.", "Once upon a time"],
    "document": ["em", "jo", "ka"],
    "template": ["Hello."],
}


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


def model_files(lm: LM) -> tuple[str | None, str]:
    """The loss curve image and the model card as the app shows them: no YAML header, the curve shown apart."""
    folder = lm.folder
    loss = str(folder / "loss.png") if folder and (folder / "loss.png").is_file() else None
    card = (folder / "README.md").read_text(encoding="utf-8") if folder and (folder / "README.md").is_file() else ""
    if card.startswith("---"):
        card = card.split("\n---", 1)[-1].split("\n", 1)[-1]
    return loss, card.replace("![loss curve](loss.png)", "")


class ModelTab:
    def __init__(self, ctx: Context):
        self.ctx = ctx

    def choice_label(self, name: str) -> str:
        """A model as the list offers it: its name and, for a folder on this disk, whether it is base or tuned."""
        source = self.ctx.catalog.sources.get(name, name)
        return f"{name} ({model_kind(read_metrics(source).get('run', {}))})" if os.path.isdir(source) else name

    @logged
    def check_model(self, name):
        typed = " or type a folder or Hub repo id" if self.ctx.catalog.allow_any else ""
        problem = self.ctx.model_problem(name) if (name or "").strip() else f"Pick a model from the list{typed}."
        return answer(problem)  # one input: one answer, not a list (Gradio wraps it)

    def choose_model(self, name):
        """Load the picked model for this browser session and show it on every tab (checked first by check_model)."""
        name = name.strip()
        served = self.ctx.served(name)
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

    def api_usage(self, request: gr.Request) -> str:
        """How to reach this server's OpenAI-compatible API, with the address the visitor used."""
        default = self.ctx.catalog.default
        base = f"{request.headers.get('x-forwarded-proto', request.url.scheme)}://{request.headers.get('host', 'HOST')}"
        key = "YOUR_KEY" if self.ctx.api_key else "unused"
        auth = f" -H 'Authorization: Bearer {key}'" if self.ctx.api_key else ""
        texts = model_texts(default, self.ctx.lm(default))
        body = json.dumps({"prompt": texts["prompt"], "max_tokens": 100, "temperature": 0.8, "stream": True})
        said = json.dumps((texts["examples"] or [["Hello"]])[0][0])
        served = f"The same process serves an **OpenAI-compatible API** at `{base}/v1`"
        return f"""{served} (completions and chat, streaming).

```bash
curl {base}/v1/completions -H 'Content-Type: application/json'{auth} \\
  -d {shlex.quote(body)}
```

```python
from openai import OpenAI

client = OpenAI(base_url="{base}/v1", api_key="{key}")
messages = [{{"role": "user", "content": {said}}}]
reply = client.chat.completions.create(model="{default}", messages=messages)
print(reply.choices[0].message.content)
```
The API serves every model this app offers, by `model` (default: `{default}`); `GET /v1/models` lists them."""

    def build(self, model_name, current, chat: SimpleNamespace, playground: SimpleNamespace, demo: gr.Blocks) -> None:
        """The tab's components; loading a model updates the header and the other tabs' parts it names."""
        catalog = self.ctx.catalog
        served = self.ctx.served(catalog.default)
        with gr.Tab("Model") as model_tab:
            with gr.Row():
                picked = gr.Dropdown(
                    [(self.choice_label(name), name) for name in catalog.sources],
                    value=catalog.default,
                    label="model",
                    info="or type a folder or Hub repo id (owner/name@revision)" if catalog.allow_any else None,
                    allow_custom_value=catalog.allow_any,
                )
                load_button = gr.Button("Load", variant="primary")
            loss_png, card_text = model_files(served.lm)
            summary = gr.JSON(describe(catalog.default, served), label="model")
            loss = gr.Image(loss_png, label="training loss", type="filepath")
            card = gr.Markdown(card_text)
            with gr.Accordion("Use it from code: the OpenAI-compatible API", open=False):
                usage = gr.Markdown()
        model_tab.select(  # as it is now: decoding may have been compiled since the page opened
            lambda name: describe(name, self.ctx.served(name)), model_name, summary, api_visibility="private"
        )
        p, c = playground, chat
        load_button.click(
            self.choose_model,
            [picked],
            [
                *[model_name, current, summary, loss, card, p.layer, p.head, p.all_heads, p.show_attention, p.prompt],
                *[c.box, c.examples, c.chatbot, c.note, c.system],
            ],
            validator=self.check_model,
            api_name="load_model",
        ).success(  # the new model's conversation is empty: nothing to export, and that is what this browser keeps
            lambda name: (None, kept_record(name, [])), model_name, [c.download, c.saved], api_visibility="private"
        )
        demo.load(self.api_usage, None, usage, api_visibility="private")
