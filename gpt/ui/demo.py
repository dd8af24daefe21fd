"""The page: a header that names the model, the sampling settings every tab shares, the four tabs and the MCP tools,
mounted beside the API on one FastAPI app."""

import hmac
from pathlib import Path

import gradio as gr

from gpt.ui.chat_tab import ChatTab, restored
from gpt.ui.context import MAX_NEW_TOKENS, Context
from gpt.ui.ladder_tab import Ladder
from gpt.ui.model_tab import ModelTab, model_texts
from gpt.ui.playground_tab import Playground
from gpt.ui.tools import Tools, ToolsOnly

STATIC = Path(__file__).parent / "static"
CONTROL_HELP = {
    "temperature": "divides the scores before sampling: below 1 favours the likeliest tokens, above 1 evens them out",
    "top_k": "samples only among the k likeliest next tokens",
    "top_p": "samples only among the likeliest tokens that together hold this share of the probability",
    "max_new_tokens": "the most tokens one reply or completion may write",
    "penalty": "makes tokens already in the text less likely (above 1) or more likely (below 1)",
    "seed": "the same seed and settings write the same text again",
}


def settings_controls() -> list:
    """The sampling settings: temperature, top-k, top-p, max new tokens, repetition penalty and seed, in that order
    (every handler takes them so)."""
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
            seed = gr.Textbox(value="", label="seed (blank = random)", placeholder="random", info=CONTROL_HELP["seed"])
    return [temperature, top_k, top_p, max_new_tokens, repetition_penalty, seed]


def build_demo(ctx: Context) -> gr.Blocks:
    """The whole UI over the context's models, opened on the catalog's default (a bad default is a gr.Error)."""
    catalog = ctx.catalog
    lm = ctx.lm(catalog.default)
    texts = model_texts(catalog.default, lm)
    with gr.Blocks(title="gpt: train, share, talk") as demo:
        model_name = gr.Textbox(catalog.default, visible=False, label="model")  # this browser's model, sent each call
        gr.Markdown("# gpt\nA small GPT, trained on one text file. Chat with it, or watch it choose each token.")
        current = gr.Markdown(texts["current"])
        settings = settings_controls()
        with gr.Tabs():
            chat = ChatTab(ctx).build(texts, lm, model_name, settings)
            playground = Playground(ctx).build(texts, lm, model_name, settings)
            Ladder(ctx).build()
            ModelTab(ctx).build(model_name, current, chat, playground, demo)
        demo.load(restored, [chat.saved, model_name], chat.chatbot, api_visibility="private")
        for tool in Tools(ctx).offered():  # the MCP server's tools, and plain API endpoints beside the UI's own
            gr.api(tool, api_name=tool.__name__)
    demo.queue(default_concurrency_limit=catalog.max_batch, max_size=catalog.max_batch + catalog.max_waiting)
    return demo


def mount(app, ctx: Context):
    """The UI mounted at / of the API's FastAPI app, behind a login when there is an API key (any user name, the key
    as the password), with the MCP server when there is none (Gradio's tool calls cannot carry the login)."""
    login = None
    if ctx.api_key:
        key = ctx.api_key.encode()
        login = lambda user, password: hmac.compare_digest(password.encode(), key)  # noqa: E731
    mounted = gr.mount_gradio_app(
        app,
        build_demo(ctx),
        path="/",
        auth=login,
        css=(STATIC / "style.css").read_text(encoding="utf-8"),
        head=(STATIC / "head.html").read_text(encoding="utf-8"),
        auth_message="This app asks for its API key: log in with any user name and the key as the password.",
        mcp_server=not ctx.api_key,
    )
    return ToolsOnly(mounted)
