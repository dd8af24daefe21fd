"""The card's sections for what came after pre-training: reinforcement learning, preference tuning and the reward
model, and the benchmarks of a chat model and of the names assistant. Formatting only, from metrics.json."""

from pathlib import Path

from gpt.storage.layout import REWARD_ARCHITECTURES


def dpo_tuned(run: dict) -> bool:
    return bool(run.get("settings", {}).get("dpo"))


def rl_figures(run: dict) -> list[str]:
    """The reward before and after reinforcement learning, on every held-out prompt."""
    s = run["settings"]
    rows = [
        ("at the app's sampling (temperature 0.8, top-k 40, top-p 0.95)", "val_reward"),
        ("greedy (temperature 0)", "greedy_val_reward"),
    ]
    lines = [
        "## Reinforcement learning",
        "",
        f"Group-relative policy gradient (`gpt/posttraining/rl.py`): {s['batch_size']} prompts a step, "
        f"{s['group_size']} replies "
        "to each sampled at temperature 1, each reply's advantage its reward minus its group's mean (groups that all "
        f"score the same skipped), a KL penalty of {s['kl']} to the starting model"
        + (
            f", and {s['replay_share']} x the loss on windows of `{Path(s['replay']).name}` (InstructGPT's "
            "pre-training mix)"
            if s.get("replay")
            else ""
        )
        + f". Reward: `{s['rl']}`. Mean reward on the {run.get('val_prompts', 0):,} held-out prompts:",
        "",
        "| replies | before (the starting model) | after (this model) |",
        "|---|---|---|",
    ]
    for label, key in rows:
        if run.get(key) is not None:
            lines.append(f"| {label} | {run[f'start_{key}']:.3f} | **{run[key]:.3f}** |")
    if run.get("pretraining_val_loss") is not None:  # --replay: what the model kept of its pre-training text
        lines.append(
            f"| pre-training validation loss on `{Path(s['replay']).name}` (lower is better) | "
            f"{run['start_pretraining_val_loss']:.4f} | {run['pretraining_val_loss']:.4f} |"
        )
    return lines


def pair_section(run: dict) -> list[str]:
    """What DPO or the reward model learnt, on the held-out pairs (and for DPO, what it forgot)."""
    s = run["settings"]
    if dpo_tuned(run):
        how = (
            f"## Preference tuning (DPO)\n\nDirect preference optimisation (`gpt/posttraining/dpo.py`, beta "
            f"{s['beta']}) against "
            "the frozen starting model, on the reply tokens only. A pair counts as learnt when the chosen reply's "
            "implicit reward, beta x (log p - log p_start), is above the rejected one's; the margin is the mean gap."
        )
    else:
        how = (
            "## Reward model\n\nThe starting model's transformer with a one-score head (`gpt/posttraining/reward.py`), "
            "trained "
            "on the pairs by the Bradley-Terry loss, -log sigmoid(score(chosen) - score(rejected)). A pair counts as "
            "ordered when the chosen reply scores higher."
        )
    lines = [*how.split("\n"), "", f"On the {run.get('val_pairs', 0):,} held-out pairs:", ""]
    lines += ["| figure | value |", "|---|---|", f"| pair loss (log 2 = 0.693 at the start) | {run['val_loss']:.4f} |"]
    lines += [f"| accuracy | **{run['val_accuracy']:.1%}** |", f"| margin | {run['val_margin']:.3f} |"]
    if run.get("pretraining_val_loss") is not None:
        lines.append(
            f"| pre-training loss on `{Path(s['text']).name}` (before → after) | "
            f"{run['start_pretraining_val_loss']:.4f} → {run['pretraining_val_loss']:.4f} |"
        )
    return lines


def reward_usage(folder: str, kind: str | None) -> list[str]:
    """How to score a reply with the reward model: in transformers when its block is a transformers family (kind),
    else in this library; then as the reward of reinforcement learning."""
    if kind is None:
        scoring = [
            "from gpt.posttraining.reward import load_reward_model, scores  # this library alone loads this block",
            f'model, tokenizer = load_reward_model("{folder}")',
            'ids = tokenizer.encode("<|user|>Good morrow.\\n<|end|><|assistant|>Good morrow to you.\\n<|end|>")',
            "print(scores(model, [ids], pad=0)[0].item())  # higher is better",
        ]
    else:
        name = REWARD_ARCHITECTURES[kind]
        scoring = [
            f"from transformers import AutoTokenizer, {name}",
            f'model = {name}.from_pretrained("{folder}")',
            f'tokenizer = AutoTokenizer.from_pretrained("{folder}")',
            'ids = tokenizer("<|user|>Good morrow.\\n<|end|><|assistant|>Good morrow to you.\\n<|end|>", '
            'return_tensors="pt").input_ids',
            "print(model(ids).logits[0, 0].item())  # higher is better",
        ]
    return [
        "## Use",
        "",
        "```python",
        *scoring,
        "```",
        "",
        f"As the reward of reinforcement learning: `python -m gpt.train --init-from CHAT --rl {folder} --prompts "
        "PROMPTS.jsonl --out DIR`.",
    ]


def chat_measured(bench: dict) -> list[str]:
    """bench/chat.py's figures: the chat model against its base, and the models tuned from it, on conversations from
    the validation text."""
    names = list(bench.get("models") or ("base", "chat"))
    this = bench.get("this", "chat")
    folders = bench.get("models") or {"base": bench["base_name"]}
    heads = [
        f"{n} (`{folders[n]}`)" if n != this and n in folders else "**this model**" if n == this else n for n in names
    ]
    measures = [
        ("prompted as", "layout", "{}"),
        ("reply loss (nats per character, lower is better)", "reply_loss", "{:.4f}"),
        (f"replies that end within {bench['max_new_tokens']} tokens", "ended", "{:.1%}"),
        ("replies that speak another part (role leak)", "role_leak", "{:.1%}"),
        ("replies that hold a blank line", "blank_line", "{:.1%}"),
        ("pre-training validation loss (nats per character)", "pretraining_val_loss", "{:.4f}"),
        ("wins over the chat model's replies, by the rule set", "rules_win_rate", "{:.1%}"),
        ("wins over the chat model's replies, by the reward model", "reward_win_rate", "{:.1%}"),
    ]
    lines = [
        "## Chat, measured",
        "",
        f"`{bench['command']}` on {bench['conversations']} conversations made from the validation text the same way "
        f"as the training ones (replies sampled at temperature 0.8, top-k 40, top-p 0.95; {bench['machine']}):",
        "",
        "| | " + " | ".join(heads) + " |",
        "|---" * (len(names) + 1) + "|",
    ]
    for label, key, form in measures:
        if any(key in bench[n] for n in names):
            cells = [form.format(bench[n][key]) if key in bench[n] else "" for n in names]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    held = bench.get("reward_model")
    if held:
        lines += [
            "",
            f"The reward model `{held['name']}` orders {held['accuracy']:.1%} of {held['pairs']} pairs made from these "
            "conversations (the chat model's two replies to each, ranked by the rule set).",
        ]
    for i, s in enumerate(bench.get("side_by_side", []), 1):
        said = " / ".join(s["said"])
        lines += ["", f"{i}. *{said}*", f"   - the play: {s['play']}"]
        lines += [f"   - {'this model' if n == this else n}: {s[n]}" for n in names if n in s]
    return lines


def assistant_measured(bench: dict) -> list[str]:
    """bench/assistant.py's figures: each stage of the names assistant on requests made from the validation names."""
    lines = [
        "## The three stages, measured",
        "",
        f"`{bench['command']}` on {bench['requests']} requests made from the validation names (a real name meets "
        "each), answered greedily and at the app's sampling (temperature 0.8, top-k 40, top-p 0.95); the base is "
        "prompted with the letters the name must start with. Name loss: the answers' mean loss per character under "
        f"`weights/names` (the validation names' own: {bench['validation_names_loss']:.4f}). {bench['machine']}.",
        "",
        "| stage | minutes | met, greedy | met, sampled | starts / ends / length / contains (sampled) "
        "| name loss | names from names.txt |",
        "|---|---|---|---|---|---|---|",
    ]
    for stage, f in bench["stages"].items():
        kinds = " / ".join(f"{v:.0%}" for v in f["sampled"]["by_kind"].values())
        loss = f["sampled"]["name_loss"]
        lines.append(
            f"| {stage} | {f['minutes']:.1f} | {f['greedy']['met']:.1%} | **{f['sampled']['met']:.1%}** | {kinds} "
            f"| {'—' if loss is None else f'{loss:.4f}'} | {f['sampled']['real_names']:.0%} |"
        )
    lines += [
        "",
        "Each stage's command, in order:",
        "",
        "```bash",
        "python -m gpt.names_task names.txt --out-dir out/names-assistant",
    ]
    lines += [s["command"] for s in bench["stages"].values() if s.get("command")] + ["```"]
    return lines
