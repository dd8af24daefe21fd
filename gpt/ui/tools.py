"""The functions an LLM client may call through the app's MCP server (and as plain API endpoints): list the models,
complete a text, reply to a message. Each takes plain arguments and is refused as the UI refuses."""

import asyncio

import gradio as gr

from gpt.serving.chat import message_text, natural_end
from gpt.serving.sampling import SamplingParams
from gpt.ui.chat_tab import start_chat
from gpt.ui.context import (
    MAX_NEW_TOKENS,
    SEED_RULE,
    Context,
    controls,
    log_refusal,
    parse_seed,
    submit,
    text_of,
    unknown_characters,
)


class Tools:
    """Their docstrings are what an MCP client reads: Args and Returns in Google's style."""

    def __init__(self, ctx: Context):
        self.ctx = ctx

    def list_models(self) -> list[str]:
        """The models this server offers, by the names the other tools take; the first is the default one.

        Returns:
            the model names
        """
        catalog = self.ctx.catalog
        return [catalog.default, *(name for name in catalog.sources if name != catalog.default)]

    def settings(self, model: str, max_tokens: int, temperature: float, seed: int | None) -> tuple[str, dict]:
        """A tool call's model and sampling controls (the app's top-k and top-p), refused as the UI refuses them."""
        model = model or self.ctx.catalog.default
        chosen = parse_seed("" if seed is None else seed)
        problem = self.ctx.model_problem(model) or (SEED_RULE if chosen is None else None)
        if not problem and not (1 <= max_tokens <= MAX_NEW_TOKENS and 0 <= temperature <= 2):
            problem = f"max_tokens must be from 1 to {MAX_NEW_TOKENS} and temperature from 0 to 2."
        if problem:
            log_refusal("tool", problem)
            raise gr.Error(problem)
        return model, controls(temperature, 40, 0.95, max_tokens, 1.0, chosen)

    async def complete_text(
        self, prompt: str, model: str = "", max_tokens: int = 200, temperature: float = 0.8, seed: int | None = None
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
        model, settings = self.settings(model, max_tokens, temperature, seed)
        served = await asyncio.to_thread(self.ctx.served, model)
        problem = unknown_characters(served.lm, prompt or "")
        if problem:
            raise gr.Error(problem)
        (job,) = submit(served, prompt or "", SamplingParams(**settings))
        return await text_of(job)

    async def chat_reply(
        self,
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
        model, settings = self.settings(model, max_tokens, temperature, seed)
        problem = self.ctx.message_problem(message, model)
        if problem:
            raise gr.Error(problem)
        served = await asyncio.to_thread(self.ctx.served, model)
        job, prompt = start_chat(served, [], message_text(message).strip(), system, settings)
        reply = prompt.reply_prefix + await text_of(job)
        return natural_end(reply) if job.row.finish_reason == "length" else reply

    def offered(self) -> list:
        """The tools, in the order an MCP client lists them."""
        return [getattr(self, tool.__name__) for tool in TOOLS]


TOOLS = (Tools.list_models, Tools.complete_text, Tools.chat_reply)


class ToolsOnly:
    """ASGI middleware: the MCP server offers the tools alone, not every documented event of the UI (Gradio makes each
    a tool; a client's own `?tools=` choice stands)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        query = scope.get("query_string", b"")
        if scope["type"] == "http" and scope["path"].startswith("/gradio_api/mcp") and b"tools=" not in query:
            chosen = "tools=" + ",".join(tool.__name__ for tool in TOOLS)
            scope = {**scope, "query_string": (query + b"&" if query else b"") + chosen.encode()}
        await self.app(scope, receive, send)
