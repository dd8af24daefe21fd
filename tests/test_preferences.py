"""Preference pairs: DPO (--dpo), the reward model (--reward-model) and its use as an RL reward, the rule set."""

import json
from pathlib import Path

import pytest
import torch

from gpt.posttraining.dpo import dpo_loss, reply_logprobs
from gpt.posttraining.preferences import PairRows, judge, read_pairs
from gpt.training.train import main

pytestmark = pytest.mark.slow
LETTERS = "abc"
WEIGHTS = Path(__file__).resolve().parents[1] / "weights"


def toy_pairs(n: int, seed: int = 0) -> list[dict]:
    """The toy preference: of two replies to a letter, the one that ends in "a" is chosen."""
    rng = torch.Generator().manual_seed(seed)
    pairs = []
    for i in range(n):
        words = ["".join(LETTERS[j] for j in torch.randint(3, (2,), generator=rng).tolist()) for _ in range(2)]
        pairs.append(
            {
                "prompt": [{"role": "user", "content": LETTERS[i % 3]}],
                "chosen": [{"role": "assistant", "content": words[0] + "a"}],
                "rejected": [{"role": "assistant", "content": words[1] + "b"}],
            }
        )
    return pairs


def write_jsonl(path, records: list[dict]):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.fixture(scope="module")
def toy(toy_chat_model, tmp_path_factory):
    """The toy chat model over three letters and the toy preference's pairs."""
    return toy_chat_model, write_jsonl(tmp_path_factory.mktemp("pairs") / "pairs.jsonl", toy_pairs(200))


def pair_args(toy, kind: str, out, *more) -> list[str]:
    folder, pairs = toy
    common = "--batch-size 16 --eval-interval 20 --warmup-steps 0 --lr 3e-3 --max-steps 40"
    return ["--init-from", str(folder), f"--{kind}", str(pairs), "--out", str(out), *common.split(), *more]


def test_a_pair_whose_replies_are_the_same_moves_nothing(toy, tmp_path):
    import gpt

    lm = gpt.load(toy[0], device="cpu")
    pair = toy_pairs(1)[0]
    pair["rejected"] = pair["chosen"]
    rows = PairRows(read_pairs(write_jsonl(tmp_path / "same.jsonl", [pair] * 10))[:1], lm.tokenizer, 24)
    logp = reply_logprobs(lm.model.train(), *rows.batch([0]))
    loss, margin = dpo_loss(logp, logp.detach() - 0.3, beta=0.1)
    loss.backward()
    assert margin.item() == 0 and abs(loss.item() - 0.6931) < 1e-3
    assert all(p.grad.abs().max() < 1e-6 for p in lm.model.parameters() if p.grad is not None)


def test_dpo_learns_the_toy_preference_on_held_out_pairs(toy, tmp_path, capsys):
    main(pair_args(toy, "dpo", tmp_path / "dpo", "--beta", "0.5"))
    metrics = json.loads((tmp_path / "dpo" / "metrics.json").read_text())
    curve, run = metrics["curve"], metrics["run"]
    assert curve[0]["val_accuracy"] == 0 and abs(curve[0]["val_loss"] - 0.6931) < 1e-3  # the start: no preference
    assert run["val_accuracy"] > 0.9 and run["val_loss"] < 0.5 and run["val_margin"] > 0
    assert run["val_pairs"] == 20
    assert "held-out pairs: loss" in capsys.readouterr().out
    card = (tmp_path / "dpo" / "README.md").read_text()
    assert "DPO" in card and f"{run['val_accuracy']:.1%}" in card


def test_rpo_alpha_keeps_the_chosen_replies_likely_where_plain_dpo_lets_them_fall(toy, tmp_path):
    """DPO's known failure (likelihood displacement): the chosen replies lose probability along with the rejected.
    The chosen replies' own loss (--rpo-alpha) holds them up, with the preference still learnt."""
    import gpt

    chosen = {}
    for name, more in (("plain", []), ("rpo", ["--rpo-alpha", "1"])):
        main(pair_args(toy, "dpo", tmp_path / name, "--beta", "0.5", *more))
        lm = gpt.load(tmp_path / name, device="cpu")
        rows = PairRows(read_pairs(toy[1])[9::10], lm.tokenizer, 24)
        with torch.no_grad():
            logp = reply_logprobs(lm.model, *rows.batch(list(range(len(rows)))))
        chosen[name] = logp[: len(rows)].mean().item()
        assert json.loads((tmp_path / name / "metrics.json").read_text())["run"]["val_accuracy"] > 0.9
    assert chosen["rpo"] > chosen["plain"] + 0.5, chosen


def test_reward_model_learns_the_preference_and_transformers_scores_it_the_same(toy, tmp_path):
    from transformers import GPT2ForSequenceClassification

    from gpt.posttraining.reward import load_reward_model, pad_id, padded

    main(pair_args(toy, "reward-model", tmp_path / "rm"))
    run = json.loads((tmp_path / "rm" / "metrics.json").read_text())["run"]
    assert run["val_accuracy"] > 0.9, run
    model, tokenizer = load_reward_model(tmp_path / "rm")
    said = ("<|user|>a\n<|end|><|assistant|>ba\n<|end|>", "<|user|>b\n<|end|><|assistant|>cb\n<|end|>", "<|user|>c\n")
    rows = [tokenizer.encode(t) for t in said]  # of different lengths: the padded rows are read at their own ends
    ours = model(*padded(rows, pad_id(tokenizer), "cpu"))
    theirs = GPT2ForSequenceClassification.from_pretrained(tmp_path / "rm").eval()
    ids, _ = padded(rows, pad_id(tokenizer), "cpu")
    with torch.no_grad():
        scores = theirs(ids).logits[:, 0]
    assert torch.allclose(ours.detach(), scores, atol=1e-4)
    assert ours[0] > ours[1]  # ends in "a", and ended its turn
    card = (tmp_path / "rm" / "README.md").read_text()
    assert "GPT2ForSequenceClassification" in card and f"{run['val_accuracy']:.1%}" in card


def test_a_reward_model_of_the_modern_block_is_transformers_qwen3_scorer(toy, tmp_path):
    from transformers import Qwen3ForSequenceClassification

    import gpt
    from gpt.models.model import GPTConfig
    from gpt.posttraining.reward import RewardModel, load_reward_model, pad_id, padded, save_reward_folder

    tokenizer = gpt.load(toy[0], device="cpu").tokenizer
    config = GPTConfig(tokenizer.vocab_size, 24, 2, 2, 32, rotary=True, rms_norm=True, qk_norm=True, mlp="swiglu")
    torch.manual_seed(0)
    model = RewardModel(config)
    for p in model.parameters():
        torch.nn.init.normal_(p, mean=1.0 if p.dim() == 1 else 0.0, std=0.2)
    metrics = {"run": {"name": "rm", "settings": {"reward_model": True}}}
    save_reward_folder(model, tokenizer, tmp_path / "rm", metrics, torch.float32)
    loaded, _ = load_reward_model(tmp_path / "rm")
    rows = [tokenizer.encode(t) for t in ("<|user|>a\n<|end|><|assistant|>ba\n<|end|>", "<|user|>c\n")]
    ids, lengths = padded(rows, pad_id(tokenizer), "cpu")
    theirs = Qwen3ForSequenceClassification.from_pretrained(tmp_path / "rm").eval()
    with torch.no_grad():
        ours, again, scores = model.eval()(ids, lengths), loaded(ids, lengths), theirs(ids).logits[:, 0]
    assert torch.equal(ours, again) and torch.allclose(ours, scores, atol=1e-4)
    assert "Qwen3ForSequenceClassification" in (tmp_path / "rm" / "README.md").read_text()


def test_a_reward_model_is_an_rl_reward(toy, tmp_path):
    main(pair_args(toy, "reward-model", tmp_path / "rm"))
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"messages": p["prompt"]} for p in toy_pairs(200)])
    args = ["--init-from", str(toy[0]), "--rl", str(tmp_path / "rm"), "--prompts", str(prompts)]
    args += "--reply-tokens 6 --group-size 8 --batch-size 8 --lr 1e-2 --warmup-steps 0 --max-steps 30".split()
    main([*args, "--eval-interval", "30", "--out", str(tmp_path / "rl")])
    curve = json.loads((tmp_path / "rl" / "metrics.json").read_text())["curve"]
    assert curve[-1]["val_reward"] > curve[0]["val_reward"] + 0.5, curve


def test_bad_pairs_are_one_line(toy, tmp_path, capsys):
    folder, pairs = toy
    bad = tmp_path / "bad.jsonl"
    cases = [
        ('{"prompt": "hi", "chosen": [], "rejected": []}', '"prompt" must be a non-empty list'),
        ('{"messages": []}', 'with "prompt", "chosen" and "rejected"'),
        (json.dumps({**toy_pairs(1)[0], "chosen": [{"role": "user", "content": "a"}]}), "one assistant message"),
        (json.dumps({**toy_pairs(1)[0], "chosen": [{"role": "assistant", "content": "z"}]}), "line 1"),
    ]
    for line, says in cases:
        bad.write_text(line + "\n")
        with pytest.raises(SystemExit) as e:
            main(["--init-from", str(folder), "--dpo", str(bad), "--out", str(tmp_path / "x")])
        assert says in str(e.value) and str(e.value).startswith("error: ")
    with pytest.raises(SystemExit) as e:
        main(["--dpo", str(pairs), "--out", str(tmp_path / "x")])
    assert "--init-from" in str(e.value)


def test_the_rule_set_ranks_what_users_would():
    message = "What shall I say to my lord?"
    good = "Say thou art his lord's servant.\n<|end|>more"
    assert judge(message, good) == {"ends": True, "one part": True, "no blank line": True, "takes up": True}
    cut = "Nothing at all, sir, nothing"
    assert judge(message, cut)["ends"] is False and judge(message, cut)["takes up"] is False
    leak = "Go, sir.\nROMEO:\nI will.\n<|end|>"
    assert judge(message, leak)["one part"] is False
    assert judge(message, "Go.<|user|>hi")["one part"] is False and judge(message, "Go.<|user|>hi")["ends"] is False
    assert judge(message, "Go.\n\nStay, lord.\n<|end|>")["no blank line"] is False
    assert not any(judge(message, "\n<|end|>").values())  # saying nothing is not a reply that ends well


def test_feedback_records_go_into_dpo_unchanged(toy, tmp_path):
    """Thumbs kept by the app's FeedbackLog are pairs --dpo reads as written, and labels in KTO's form."""
    from gpt.posttraining.feedback import FeedbackLog

    log = FeedbackLog(tmp_path / "feedback")
    written = toy_pairs(20, seed=1)
    for pair in written:
        turns = {}  # a session each: the same letter asked again is another conversation
        log.retried(turns, pair["prompt"], pair["rejected"][0]["content"])
        assert log.thumb(turns, pair["prompt"], pair["chosen"][0]["content"], True, "chat") == 1
    (pairs,) = (tmp_path / "feedback").glob("pairs-*.jsonl")
    read = read_pairs(pairs)
    assert [(p.prompt, [p.chosen], [p.rejected]) for p in read] == [
        (w["prompt"], w["chosen"], w["rejected"]) for w in written
    ]
    (labels,) = (tmp_path / "feedback").glob("labels-*.jsonl")
    assert [json.loads(line)["label"] for line in labels.read_text().splitlines()] == [True] * 20
    main(["--init-from", str(toy[0]), "--dpo", str(pairs), "--out", str(tmp_path / "dpo"), "--max-steps", "2"])
    assert json.loads((tmp_path / "dpo" / "metrics.json").read_text())["run"]["val_pairs"] == 2


def test_a_reward_model_is_not_offered_as_a_writer(toy, tmp_path):
    """gpt.load on a reward model's folder says what it is; the app's catalog leaves it out of the models offered."""
    import gpt
    from gpt.serving.catalog import Catalog
    from gpt.storage.folder import ModelFileError

    main(pair_args(toy, "reward-model", tmp_path / "rm", "--max-steps", "2"))
    with pytest.raises(ModelFileError, match="a reward model, which scores replies"):
        gpt.load(tmp_path / "rm")
    catalog = Catalog.from_settings(f"{tmp_path}/*,{toy[0]}", None, "")
    assert list(catalog.sources) == ["chat"]


def test_the_ranking_script_writes_pairs_the_rules_order(toy, tmp_path, capsys):
    from gpt.posttraining.preferences import main as rank

    conversations = [
        {"messages": [{"role": "user", "content": w}, {"role": "assistant", "content": "a"}]}
        for w in ("abca", "bcab", "cabc", "aabb") * 10
    ]
    path = write_jsonl(tmp_path / "chats.jsonl", conversations)
    rank([str(toy[0]), str(path), "--out", str(tmp_path / "pairs.jsonl"), "--max-new-tokens", "8"])
    said = capsys.readouterr().out
    records = [json.loads(line) for line in (tmp_path / "pairs.jsonl").read_text().splitlines()]
    assert f"{len(records):,} pairs from 40 conversations" in said
    for record in records:
        assert record["prompt"][-1]["role"] == "user" and len(record["prompt"]) == 1  # the reply is left out
        assert record["chosen"][0]["role"] == record["rejected"][0]["role"] == "assistant"
    for model, says in ((str(WEIGHTS / "names"), "not chat-tuned"), (str(tmp_path / "none"), "neither a model folder")):
        with pytest.raises(SystemExit, match=says):
            rank([model, str(path), "--out", str(tmp_path / "x.jsonl")])
