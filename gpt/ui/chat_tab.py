"""The Chat tab: a streamed conversation in the model's own layout, with retry, edit and undo, a system message for
chat-tuned models, and (when the operator turns it on) thumbs and retries kept as preference data."""

import asyncio
import json
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import gradio as gr

from gpt.posttraining.feedback import prompt_of
from gpt.serving.catalog import Served
from gpt.serving.chat import ChatPrompt, chat_prompt, known, layout, message_text, natural_end, turns_of
from gpt.serving.engine import Job
from gpt.serving.generate import LM
from gpt.serving.sampling import SamplingParams
from gpt.ui.context import (
    VALID,
    Context,
    answer,
    check_settings,
    controls,
    log_refusal,
    logged,
    parse_seed,
    streamed,
    submit,
    unknown_characters,
)


def memory_note(lm: LM, prompt: ChatPrompt, turns: int) -> str:
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


def speed_note(tokens: int, seconds: float, first: float | None) -> str:
    """How fast the reply came, as chat UIs show it: its tokens, their rate and the wait for the first."""
    if not tokens:
        return ""
    rate = f"{tokens / seconds:,.0f} tokens/s; the first after {1000 * first:,.0f} ms"
    return f" · {tokens} tokens in {seconds:.2f} s ({rate})"


def conversation_record(history, system: str) -> dict | None:
    """The conversation as one line of the trainer's chat data (`--sft`: OpenAI's messages), or None before a reply.
    A turn the model ended without a word (shown as …) is left out: it would teach that silence."""
    turns = [(user, reply) for user, reply in turns_of(history) if reply.strip() not in ("", "…")]
    if not turns:
        return None
    messages = [{"role": "system", "content": system}] if system.strip() else []
    for user, reply in turns:
        messages += [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]
    return {"messages": messages}


def kept_record(model: str, history) -> dict:
    """What the browser keeps of the conversation (gr.BrowserState): the model it was with, and its messages."""
    return {"model": model, "history": list(history or [])}


def restored(saved, model: str) -> list:
    """The conversation kept in this browser, if it was with the model the page opened on (else a fresh one)."""
    return saved["history"] if isinstance(saved, dict) and saved.get("model") == model else []


def start_chat(served: Served, turns: list, message: str, system: str, settings: dict) -> tuple[Job, ChatPrompt]:
    """A chat reply's job on the model's engine, and the prompt it continues (the chat tab and the MCP tool)."""
    lm = served.lm
    prompt = chat_prompt(lm, turns, message, system=known(lm, system or ""))
    # a toast would lie over the conversation on a phone: memory_note says what was cut, under it
    (job,) = submit(served, prompt.text, SamplingParams(**settings, stop=tuple(prompt.stop)), say_cut=False)
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


def edited(history, edit: gr.EditData) -> tuple[list, str]:
    """The conversation up to the edited message, and its new text (to be sent again)."""
    index = edit.index[0] if isinstance(edit.index, (list, tuple)) else edit.index
    return list(history or [])[:index], message_text(edit.value)


class ChatTab:
    def __init__(self, ctx: Context):
        self.ctx = ctx

    @logged
    def check_chat(self, message, history, model_name, *settings):
        """Checks before a chat turn starts (the settings, then the system message): a problem is shown at the box,
        which keeps the message and stays usable."""
        seed, system = settings[5], settings[6] if len(settings) > 6 else ""
        problem, bad_model = self.ctx.message_problem(message, model_name), self.ctx.model_problem(model_name)
        bad_system = None if bad_model else unknown_characters(self.ctx.lm(model_name), system or "")
        return [answer(problem), VALID, answer(bad_model), *check_settings(seed), answer(bad_system)]

    async def chat(
        self,
        message,
        history,
        model_name,
        temperature,
        top_k,
        top_p,
        max_new_tokens,
        repetition_penalty,
        seed,
        system="",
    ):
        """One chat turn, streamed: yields (the cleared box, the conversation, a note on seed and memory). The system
        message leads the conversation of a chat-tuned model; the other layouts have no place for it."""
        served = await asyncio.to_thread(self.ctx.served, model_name)
        lm = served.lm
        problem = self.ctx.message_problem(message, model_name)  # a retried or edited message skips the validator
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
        reply, count, started, first = prompt.reply_prefix, 0, time.perf_counter(), None
        async for token in streamed(job):
            reply += token.text
            count += 1
            first = first or time.perf_counter() - started
            history[-1]["content"] = reply
            yield "", history, note
        note += speed_note(count, time.perf_counter() - started, first)
        if job.row.finish_reason == "length":
            reply = natural_end(reply)
        if not reply.strip():
            note += " · the model ended its turn without a word (shown as …): retry for another sample"
        history[-1]["content"] = reply if reply.strip() else "…"
        yield "", history, note

    def thumb(self, history, system, model_name, turns: dict, data: gr.LikeData) -> tuple[dict, str]:
        """A thumb up or down on a reply, kept as a preference record (--feedback); the note says what was kept."""
        feedback = self.ctx.feedback
        index = data.index[0] if isinstance(data.index, (list, tuple)) else data.index
        if data.liked not in (True, False) or feedback is None or history[index]["role"] != "assistant":
            return turns, gr.skip()
        prompt = prompt_of(history, index, system or "")
        pairs = feedback.thumb(turns, prompt, message_text(history[index]["content"]), data.liked, model_name)
        kept = "a thumb up" if data.liked else "a thumb down"
        return turns, f"kept {kept}" + (f" and {pairs} preference pair(s)" if pairs else "") + f" in {feedback.folder}"

    def retried(self, history, system, turns: dict) -> dict:
        """The reply a retry replaces: the rejected side of a pair when another reply to the same turn is liked."""
        index = last_reply(history)
        if self.ctx.feedback is not None and index is not None:
            prompt = prompt_of(history, index, system or "")
            self.ctx.feedback.retried(turns, prompt, message_text(history[index]["content"]))
        return turns

    def export(self, history, system) -> str | None:
        """The conversation as a JSONL file the trainer reads (`--sft --data`), for the Export button to download."""
        record = conversation_record(history, system or "")
        if record is None:
            return None
        path = Path(tempfile.mkdtemp(prefix="chat-")) / "conversation.jsonl"
        path.write_text(json.dumps(record, ensure_ascii=False) + "\n", encoding="utf-8")
        return str(path)

    def build(self, texts: dict, lm: LM, model_name, settings: list) -> SimpleNamespace:
        """The tab's components and events; returns the parts a newly loaded model changes."""
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
            saved = gr.BrowserState(None, storage_key="gpt-chat")  # this browser's last conversation, across reloads
            examples = gr.Dataset(components=[box], samples=texts["examples"], label="examples")
            with gr.Row():
                note = gr.Markdown()
                download = gr.DownloadButton("Export", size="sm", scale=0, elem_id="chat-export")
                clear = gr.Button("Clear", size="sm", scale=0)
            if self.ctx.feedback is not None:
                gr.Markdown(
                    "Feedback is on: 👍/👎 on a reply, and the replies you retry, are kept on this server as "
                    "training data (the conversation and the model's name, nothing about you).",
                    elem_id="feedback-note",
                )
                turns = gr.State({})
                chatbot.like(self.thumb, [chatbot, system, model_name, turns], [turns, note], api_visibility="private")
                chatbot.retry(self.retried, [chatbot, system, turns], turns, api_visibility="private")
        sent = box.submit(
            self.chat,
            [box, chatbot, model_name, *settings, system],
            [box, chatbot, note],
            validator=self.check_chat,
            api_name="chat",
        )
        box.stop(None, cancels=[sent])
        exported = dict(fn=self.export, inputs=[chatbot, system], outputs=download)
        kept = dict(fn=kept_record, inputs=[model_name, chatbot], outputs=saved, api_visibility="private")
        sent.then(**exported, api_name="export").then(**kept)
        again = dict(
            fn=self.chat,
            inputs=[resent, chatbot, model_name, *settings, system],
            outputs=[box, chatbot, note],
            api_visibility="private",
        )

        def settled(event) -> None:  # once a turn has its reply: the Export file and the copy kept in the browser
            event.then(**exported, api_visibility="private").then(**kept)

        settled(examples.click(lambda example: example[0], examples, resent, api_visibility="private").then(**again))
        settled(chatbot.retry(without_last_turn, chatbot, [chatbot, resent], api_visibility="private").then(**again))
        settled(chatbot.edit(edited, chatbot, [chatbot, resent], api_visibility="private").then(**again))
        settled(chatbot.undo(without_last_turn, chatbot, [chatbot, box], api_visibility="private"))
        forget = {"model": None, "history": []}  # (a None would leave the browser's copy as it was)
        clear.click(lambda: ([], "", None, forget), None, [chatbot, note, download, saved], api_visibility="private")
        return SimpleNamespace(
            box=box, chatbot=chatbot, system=system, examples=examples, note=note, saved=saved, download=download
        )
