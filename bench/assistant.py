"""The names assistant, stage by stage: how many requests each model meets, and how name-like its answers are.

python bench/assistant.py [--names ../shared/data/names.txt] [--requests 600] [--write]
python bench/assistant.py --stages rl --rl DIR   # one candidate RL model alone, before it replaces the shipped one

Requests are made from the validation names (line i with i % 10 == 9), one each, so a real name meets every request.
Each stage answers every request greedily and at the app's default sampling (temperature 0.8, top-k 40, top-p 0.95,
request i with seed i):
- the base (a model of names, with no notion of a request), prompted as well as it can be: a new line, then the
  `starts with` letters when the request has them, and the name ends at its line's end;
- the SFT model and the RL model, through their chat template.
Printed: the share of requests met, the share by constraint kind, how name-like the answers are (their mean loss per
character under weights/names, against the validation names' own) and the share that are names in names.txt.
--write puts the figures in weights/names-assistant's metrics.json, where its card shows them.
"""

import argparse
import os
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

import gpt  # noqa: E402
from gpt.posttraining.names_task import KINDS, NAME, base_prompt, names_of, request_for  # noqa: E402
from gpt.serving.chat import chat_prompt  # noqa: E402
from gpt.storage.folder import read_metrics, write_card, write_metrics  # noqa: E402
from gpt.training.data import DocumentBatches, read_text  # noqa: E402
from gpt.training.eval import scored  # noqa: E402

STAGES = {"base": "weights/names-assistant-base", "sft": "weights/names-assistant-sft", "rl": "weights/names-assistant"}
APP = dict(temperature=0.8, top_k=40, top_p=0.95)
SETTINGS = {"greedy": dict(temperature=0), "sampled": APP}


def answers(lm, requests, settings: dict, base: bool) -> list[str]:
    """Each request's answer at these settings (request i with seed i when sampling)."""
    out = []
    for i, request in enumerate(requests):
        seed = {"seed": i} if settings.get("temperature") else {}
        if base:
            prompt = base_prompt(request)
            text = prompt + lm.generate(prompt, stop=["\n"], max_new_tokens=20, **settings, **seed)
        else:
            prompt = chat_prompt(lm, [], str(request))
            text = lm.generate(prompt.text, stop=prompt.stop, max_new_tokens=32, **settings, **seed)
        out.append(text.strip())
    return out


def name_loss(names_lm, words: list[str]) -> float:
    """Mean loss per character (the end of the name included) of words under the names model, from a fresh start."""
    tok = names_lm.tokenizer
    words = [w for w in words if NAME.fullmatch(w)]
    batches = DocumentBatches([tok.encode(w) for w in words], names_lm.row_length, tok.boundary_id)
    return scored(names_lm, batches.all(256))[0]


def measure(requests, replies: list[str], names_lm, known: set[str]) -> dict:
    met = [r.met(a) for r, a in zip(requests, replies)]
    by_kind = {}
    for kind in KINDS:
        asked = [(r, a) for r, a in zip(requests, replies) if kind in r.kinds]
        by_kind[kind] = sum(NAME.fullmatch(a) is not None and r.checks(a)[kind] for r, a in asked) / len(asked)
    words = [a for a in replies if NAME.fullmatch(a)]
    return {
        "met": sum(met) / len(met),
        "by_kind": by_kind,
        "name_loss": name_loss(names_lm, words) if words else None,
        "real_names": sum(a in known for a in replies) / len(replies),
        "examples": replies[:8],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--names", default=str(ROOT.parent / "shared" / "data" / "names.txt"))
    p.add_argument("--requests", type=int, default=600)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--write", action="store_true", help="record the figures in weights/names-assistant")
    p.add_argument("--rl", default=STAGES["rl"], help="the RL model's folder (default: the shipped one)")
    p.add_argument("--stages", default=",".join(STAGES), help="the stages to measure, comma-separated")
    args = p.parse_args()
    stages = {stage: args.rl if stage == "rl" else STAGES[stage] for stage in args.stages.split(",")}
    if args.write and (set(stages) != set(STAGES) or args.rl != STAGES["rl"]):
        sys.exit("error: --write records every shipped stage: leave out --stages and --rl")
    torch.set_num_threads(os.cpu_count() or 1)
    rng = random.Random(args.seed)
    val = names_of(args.names, "val")
    requests = [request_for(n, rng) for n in rng.sample(val, min(args.requests, len(val)))]
    known = set(read_text(args.names).split())
    names_lm = gpt.load(ROOT / "weights" / "names", device="cpu")
    real = name_loss(names_lm, val)
    results: dict = {"requests": len(requests), "validation_names_loss": real, "stages": {}}
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "")
    machine = f"{os.cpu_count()}-vCPU {cpu or 'CPU'}, torch {torch.__version__}"
    print(f"{len(requests)} requests from the validation names; their own loss under weights/names {real:.4f}")
    print(f"{'stage':6} {'settings':8} {'met':>6} " + " ".join(f"{k:>9}" for k in KINDS) + "  name loss  real names")
    for stage, folder in stages.items():
        lm = gpt.load(ROOT / folder, device="cpu")
        run = read_metrics(ROOT / folder).get("run", {})
        results["stages"][stage] = {"minutes": run.get("wall_time_s", 0) / 60, "command": run.get("command")}
        for label, settings in SETTINGS.items():
            t = time.time()
            figures = measure(requests, answers(lm, requests, settings, stage == "base"), names_lm, known)
            results["stages"][stage][label] = figures
            loss = "-" if figures["name_loss"] is None else f"{figures['name_loss']:.4f}"
            kinds = " ".join(f"{figures['by_kind'][k]:9.1%}" for k in KINDS)
            print(
                f"{stage:6} {label:8} {figures['met']:6.1%} {kinds}  {loss:>9}  {figures['real_names']:10.1%}"
                f"   ({time.time() - t:.0f} s)"
            )
    total = sum(s["minutes"] for s in results["stages"].values())
    print("training time: " + ", ".join(f"{k} {v['minutes']:.1f} min" for k, v in results["stages"].items()))
    print(f"the three stages: {total:.1f} min on this machine ({machine})")
    results.update(machine=machine, command="python bench/assistant.py", minutes=total)
    if args.write:
        folder = ROOT / STAGES["rl"]
        metrics = read_metrics(folder)
        metrics["assistant_bench"] = results
        write_metrics(folder, metrics)
        lm = gpt.load(folder, device="cpu")
        write_card(folder, lm.model.config, lm.tokenizer)
        print(f"written to {folder}/metrics.json and its card")


if __name__ == "__main__":
    main()
