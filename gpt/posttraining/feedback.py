"""Users' thumbs and retries in the app, kept as preference data for training (`python app.py --feedback DIR`).

Two JSONL files a day in DIR, in TRL's formats, which `datasets` reads and `--dpo` / `--reward-model` take as they are:
- labels-DAY.jsonl: every thumb, {"prompt": [messages], "completion": [the reply], "label": true | false} (KTO's);
- pairs-DAY.jsonl: {"prompt": [...], "chosen": [...], "rejected": [...]} whenever one turn has a liked reply and a
  disliked or retried one (DPO's and the reward model's).
A record holds the conversation up to the reply and the model's name, nothing about who sent it. Each write replaces
the file whole (write aside, then rename), so a reader or a crash never meets half a record.
"""

import json
import threading
from datetime import date
from pathlib import Path

from gpt.serving.chat import message_text
from gpt.storage.atomic import write_atomic


def prompt_of(history: list[dict], index: int, system: str = "") -> list[dict]:
    """The messages that led to the reply at history[index]: the system message, then every turn before it (each
    content as text, whether the browser sent a string or a list of parts)."""
    lead = [{"role": "system", "content": system}] if system.strip() else []
    return lead + [{"role": m["role"], "content": message_text(m["content"])} for m in history[:index]]


class FeedbackLog:
    """Appends records to the day's files in a folder; one lock per log, as requests arrive on several threads."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.lock = threading.Lock()

    def path(self, kind: str) -> Path:
        return self.folder / f"{kind}-{date.today().isoformat()}.jsonl"

    def append(self, kind: str, record: dict) -> None:
        with self.lock:
            path = self.path(kind)
            before = path.read_text(encoding="utf-8") if path.is_file() else ""
            line = json.dumps(record, ensure_ascii=False) + "\n"
            write_atomic(path, lambda p: p.write_text(before + line, encoding="utf-8"))

    def thumb(self, turns: dict, prompt: list[dict], reply: str, liked: bool, model: str) -> int:
        """A thumb on a reply: its label record, and a pair with each reply of the same turn it now outranks or is
        outranked by. `turns` is the session's state: for each prompt, its replies "liked" and "rejected" (disliked
        or retried). The number of pairs written."""
        turn = turns.setdefault(json.dumps(prompt), {"liked": [], "rejected": []})
        said = [{"role": "assistant", "content": reply}]
        self.append("labels", {"prompt": prompt, "completion": said, "label": liked, "model": model})
        others = turn["rejected"] if liked else turn["liked"]
        pairs = [(reply, other) if liked else (other, reply) for other in dict.fromkeys(others) if other != reply]
        for chosen, rejected in pairs:
            record = {"prompt": prompt, "chosen": [{"role": "assistant", "content": chosen}]}
            self.append("pairs", record | {"rejected": [{"role": "assistant", "content": rejected}], "model": model})
        turn["liked" if liked else "rejected"].append(reply)
        return len(pairs)

    @staticmethod
    def retried(turns: dict, prompt: list[dict], reply: str) -> None:
        """A reply the user asked to sample again: it stands as the rejected side of a pair if another is liked."""
        turns.setdefault(json.dumps(prompt), {"liked": [], "rejected": []})["rejected"].append(reply)
