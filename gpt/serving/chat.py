"""Chat with a model: through its chat template when it was chat-tuned, else in a layout of the text it knows.

- Template (a model fine-tuned with --sft): each message is its role's turn token, its text, a newline and
  `<|end|>` (a turn ends at a line's end, where the base model would end a speech with a blank line); the reply
  follows `<|assistant|>` and ends at the model's newline and `<|end|>` (or where it would start the user's turn).
  A system message leads the conversation.

A model that was never chat-tuned gets a layout of the kind of text it was trained on:

The layout comes from the folder's record of its training text (gpt/training/data.py's describe_text); a folder
without one gets the scene layout when its characters can spell it, as before the record existed.

- Scene layout (a model trained on a play): the user's lines are spoken by one character and the model answers as
  another (the pair that most often speak in turn in the text). Speeches are separated by a blank line, so the reply
  ends where the next speaker would begin ("\\n\\n").

      KATHARINA:
      <user message>

      PETRUCHIO:
      <model reply>

- Plain layout (any other running text): one turn per line, the user's then the model's; the reply ends at the end
  of its line.
- Document models (one item per line, such as names): each message is the start of an item and the model finishes
  it; earlier turns are not context, since items are independent.

The prompt keeps the newest turns that fit in the context, dropping the oldest first.
"""

from dataclasses import dataclass

from gpt.models.tokenizer import END, TURNS, turn
from gpt.serving.generate import LM

USER, MODEL = "ROMEO", "JULIET"


@dataclass
class ChatPrompt:
    text: str  # what the model continues
    stop: list[str]  # where the reply ends
    dropped_turns: int  # earlier turns left out to fit the context
    reply_prefix: str = ""  # what the shown reply starts with (a document model finishes the user's item)


NATURAL_ENDS = ".!?;:\n"


def natural_end(text: str, margin: int = 40) -> str:
    """A reply cut by the token limit, ended where the model offered a boundary near the end, or marked as cut."""
    cut = max(text.rfind(c, len(text) - margin) for c in NATURAL_ENDS)
    if cut > 0:
        return text[: cut + 1].rstrip("\n")
    return text.rstrip() + "…"


def message_text(content) -> str:
    """A message's text: a string, or a list of parts (OpenAI's and the browser's form) whose text parts join."""
    if isinstance(content, str):
        return content
    if isinstance(content, dict):
        return content.get("text", "") or ""
    if isinstance(content, list):
        return "".join(message_text(part) for part in content)
    return ""


def turns_of(messages: list[dict]) -> list[tuple[str, str]]:
    """(user, model) turns from role/content messages, oldest first; system messages and unanswered ones are skipped."""
    turns, user = [], None
    for message in messages or []:
        if message.get("role") == "user":
            user = message_text(message.get("content"))
        elif message.get("role") == "assistant" and user is not None:
            turns.append((user, message_text(message.get("content"))))
            user = None
    return turns


def layout(lm: LM) -> str:
    if lm.tokenizer.specials:
        return "template"
    if lm.tokenizer.documents:
        return "document"
    if lm.about.get("chat") in ("scene", "plain"):
        return lm.about["chat"]
    return "plain" if lm.tokenizer.unknown(f"{USER}:\n{MODEL}:\n\n") else "scene"


def speakers(lm: LM) -> tuple[str, str]:
    """Who speaks the user's lines and who the model's, in the scene layout."""
    return tuple(lm.about.get("speakers") or (USER, MODEL))


def known(lm: LM, text: str) -> str:
    """Text without the characters the model cannot read (a shown reply may carry the app's "…" mark)."""
    unknown = set(lm.tokenizer.unknown(text))
    return "".join(c for c in text if c not in unknown)


def speech(who: str, text: str) -> str:
    return f"{who}:\n{text.strip()}\n\n"


def chat_prompt(
    lm: LM, history: list[tuple[str, str]], message: str, reply_room: int | None = None, system: str = ""
) -> ChatPrompt:
    """The prompt for the model's next turn; history is a list of (user, model) turns, oldest first. A system
    message is honoured by a chat template; the other layouts have no place for it."""
    message = message.strip()
    if not message:
        raise ValueError("the message is empty: type something to say")
    kind = layout(lm)
    if kind == "document":
        return ChatPrompt(message, [], len(history), reply_prefix=message)
    user, model = speakers(lm)
    lead = turn("system", system) if kind == "template" and system.strip() else ""
    if kind == "template":
        tail, stop = turn("user", message) + "<|assistant|>", ["\n" + END, *TURNS]  # no turn token is ever reply text
    elif kind == "scene":
        tail, stop = speech(user, message) + f"{model}:\n", ["\n\n"]
    else:
        tail, stop = f"{message}\n", ["\n"]
    room = lm.block_size - (reply_room if reply_room is not None else lm.block_size // 4)
    used = len(lm.tokenizer.encode(lead + tail))
    kept: list[str] = []
    for said, answer in reversed(history):
        if kind == "template":
            text = turn("user", said) + turn("assistant", answer)
        elif kind == "scene":
            text = speech(user, said) + speech(model, answer)
        else:
            text = f"{said.strip()}\n{answer.strip()}\n"
        text = known(lm, text)
        used += len(lm.tokenizer.encode(text))
        if used > room:
            break
        kept.insert(0, text)
    return ChatPrompt(lead + "".join(kept) + tail, stop, len(history) - len(kept))
