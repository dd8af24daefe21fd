"""What every tab shares: the Context (which models, where feedback goes) and the checks and settings all tabs use.

A check returns Gradio's validator answers, so a problem shows at the field and the event never starts; a handler
repeats the checks an API caller could skip and raises gr.Error with the same words.
"""

import functools
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass

import gradio as gr

from gpt.models.tokenizer import UnknownCharactersError
from gpt.posttraining.feedback import FeedbackLog
from gpt.serving.catalog import AtCapacity, Catalog, ModelUnavailable, NotOffered, Served
from gpt.serving.chat import message_text
from gpt.serving.engine import Job
from gpt.serving.generate import LM
from gpt.serving.sampling import SEED_MAX, SEED_MIN, SamplingParams, Token, check_seed

MAX_NEW_TOKENS = 2000  # the settings' limit, and so the positions a completion can have
SEEDS = random.SystemRandom()  # the random seeds' own source: the compiler and libraries reseed the module's generator
SEED_RULE = f"The seed must be a whole number ({SEED_MIN} to {SEED_MAX}) or blank."
VALID = gr.validate(True, "")  # a validator answers for each input of its event, in order


@dataclass
class Context:
    """The models on offer (loaded once, their engines shared with the API), the API key the usage text mentions, and
    where thumbs and retries are kept (None: feedback is off)."""

    catalog: Catalog
    api_key: str | None = None
    feedback: FeedbackLog | None = None

    def served(self, name: str) -> Served:
        """The model of a catalog name and its engine; a bad name is a gr.Error that says what to give instead,
        naming the model as the visitor named it, never its folder on the server's disk."""
        try:
            return self.catalog.get(name)
        except (NotOffered, ModelUnavailable) as e:
            raise gr.Error(str(e) + ".") from None

    def lm(self, name: str) -> LM:
        return self.served(name).lm

    def model_problem(self, name: str) -> str | None:
        try:
            self.served(name)
        except gr.Error as e:
            return e.message
        return None

    def message_problem(self, message, model_name) -> str | None:
        """What is wrong with a chat message for this model (None: nothing)."""
        message = message_text(message)
        if not message.strip():
            return "The message is empty: type something to say."
        return self.model_problem(model_name) or unknown_characters(self.lm(model_name), message)


def submit(
    served: Served, prompt: str, params: SamplingParams, n: int = 1, top_logprobs: int = 0, say_cut: bool = True
) -> list[Job]:
    """The library's one submit path (Served.submit, as the API's), its refusals as gr.Error and a cut prompt said
    once, in a toast unless the caller says it where it shows its output (say_cut=False: the chat's note)."""
    try:
        submitted = served.submit(prompt, params, n, top_logprobs)
    except AtCapacity:
        raise gr.Error("The server is at capacity: try again in a moment.") from None
    except ValueError as e:
        raise gr.Error(sentence(str(e))) from None
    if submitted.cut and say_cut:
        unit = "characters" if served.lm.tokenizer.kind == "character" else "tokens"
        gr.Warning(
            f"The text is longer than the model's context ({served.lm.block_size} {unit}): only its last "
            f"{submitted.prompt_tokens} are used."
        )
    return submitted.jobs


async def streamed(job: Job) -> AsyncIterator[Token]:
    """A job's tokens; leaving early (Stop) frees its row after the engine's current step."""
    async for token in job.tokens():
        yield token
    if job.row.finish_reason == "error":
        raise gr.Error("Generation failed on the server (it is logged there): try again.")


async def text_of(job: Job) -> str:
    return "".join([token.text async for token in streamed(job)])


def controls(temperature, top_k, top_p, max_new_tokens, repetition_penalty, seed: int) -> dict:
    return dict(
        temperature=float(temperature),
        top_k=int(top_k),
        top_p=float(top_p),
        max_new_tokens=int(max_new_tokens),
        repetition_penalty=float(repetition_penalty),
        seed=seed,
    )


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
    return sentence(str(UnknownCharactersError(unknown, lm.tokenizer.chars)))


def sentence(message: str) -> str:
    """A library's message as the UI shows it: capitalised, with a full stop."""
    return message[0].upper() + message[1:] + "."


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


def answer(problem: str | None) -> dict:
    """A validator's answer for one input: valid, or the problem shown at it."""
    return gr.validate(problem is None, problem or "")


def shown(text: str) -> str:
    """A character as a table cell or a chart label shows it: space and newline made visible."""
    return text.replace(" ", "␣").replace("\n", "↵")
