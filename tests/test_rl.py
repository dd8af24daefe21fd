"""Reinforcement learning (--rl): the group-relative step, its reward on a toy checker, and exact resume."""

import json

import pytest
import torch
from safetensors.torch import load_file

import gpt
from gpt.posttraining.rl import checked, group_advantages, load_reward, policy_loss, reply_text, stop_ids
from gpt.training.eval import validation_loss
from gpt.training.train import main

pytestmark = pytest.mark.slow
LETTERS = "abc"


def starts_with_the_letter(conversation: list[dict], reply: str) -> float:
    """The toy checker: the reply starts with the letter the user sent."""
    return float(reply.startswith(conversation[-1]["content"]))


def always_one(conversation: list[dict], reply: str) -> float:
    return 1.0


def starts_with_the_letter_batched(conversations: list[list[dict]], replies: list[str]) -> list[float]:
    """The toy checker as TRL calls its rewards: a whole step's replies in one call."""
    CALLS.append(len(replies))
    return [starts_with_the_letter(c, r) for c, r in zip(conversations, replies)]


starts_with_the_letter_batched.batched = True
CALLS: list[int] = []


@pytest.fixture(scope="module")
def toy_chat(toy_chat_model, tmp_path_factory):
    """The toy chat model over three letters and prompts that each send one letter."""
    prompts = tmp_path_factory.mktemp("rl") / "prompts.jsonl"
    lines = [{"messages": [{"role": "user", "content": LETTERS[i % 3]}]} for i in range(300)]
    prompts.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return toy_chat_model, prompts


def rl_args(toy_chat, out, reward="starts_with_the_letter", *more):
    folder, prompts = toy_chat
    return [
        *["--init-from", str(folder), "--rl", f"test_rl:{reward}", "--prompts", str(prompts), "--out", str(out)],
        *"--reply-tokens 6 --group-size 8 --batch-size 8 --eval-steps 1 --lr 1e-2 --warmup-steps 0".split(),
        *more,
    ]


def test_advantage_is_reward_minus_group_mean_and_flat_groups_are_skipped():
    rewards = torch.tensor([[1.0, 0.0, 0.0, 1.0], [1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0]])
    advantages, useful = group_advantages(rewards)
    assert advantages[0].tolist() == [0.5, -0.5, -0.5, 0.5]
    assert useful.tolist() == [True, False, False]


def test_policy_loss_follows_the_advantage_and_the_kl_is_zero_at_the_start():
    logp = torch.tensor([[-1.0, -2.0], [-1.0, -2.0]], requires_grad=True)
    mask = torch.tensor([[True, True], [True, False]])
    loss, kl = policy_loss(logp, logp.detach(), mask, torch.tensor([1.0, -1.0]), kl=0.5)
    loss.backward()
    assert kl.item() == 0.0
    # the better reply's tokens are pushed up, the worse one's down, the padding not at all
    assert logp.grad[0, 0] < 0 and logp.grad[1, 0] > 0 and logp.grad[1, 1] == 0


def test_reply_text_ends_at_the_first_turn_token(toy_chat):
    lm = gpt.load(toy_chat[0], device="cpu")
    tok = lm.tokenizer
    ids = tok.encode("ab\n<|end|>c")
    assert reply_text(tok, ids, stop_ids(tok)) == ("ab", True)
    assert reply_text(tok, tok.encode("abc"), stop_ids(tok)) == ("abc", False)
    assert reply_text(tok, tok.encode("ab<|user|>"), stop_ids(tok)) == ("ab", False)  # another turn is no end


def test_a_reward_that_cannot_be_loaded_is_one_line(tmp_path, toy_chat, capsys):
    for spec, says in [("nonsense", "module:function"), ("no_such_module:f", "cannot import"), ("json:nope", "nope")]:
        with pytest.raises(ValueError, match=says):
            load_reward(spec)
    with pytest.raises(SystemExit) as e:
        main(rl_args(toy_chat, tmp_path / "x", "missing"))
    assert "test_rl has no function missing" in str(e.value)


def test_a_batched_reward_is_called_once_a_step_and_learns_alike(tmp_path, toy_chat):
    CALLS.clear()
    steps = ["--max-steps", "3", "--eval-interval", "3"]
    main(rl_args(toy_chat, tmp_path / "b", "starts_with_the_letter_batched", *steps))
    main(rl_args(toy_chat, tmp_path / "o", "starts_with_the_letter", *steps))
    assert CALLS.count(8 * 8) == 3 and min(CALLS) > 1  # each step's 64 replies at once; evaluations in batches too
    batched, one = (json.loads((tmp_path / d / "metrics.json").read_text())["curve"] for d in ("b", "o"))
    assert [e["reward"] for e in batched] == [e["reward"] for e in one]


def test_a_batched_reward_must_score_every_reply_with_a_number():
    with pytest.raises(ValueError, match="one number per reply: got 1 for 2 replies"):
        checked([1.0], ["a", "b"])
    with pytest.raises(ValueError, match="finite number, got nan"):
        checked([1.0, float("nan")], ["a", "b"])
    assert checked([1, 0.5], ["a", "b"]) == [1.0, 0.5]


def test_groups_that_all_score_the_same_change_nothing(tmp_path, toy_chat):
    out = tmp_path / "flat"
    main(rl_args(toy_chat, out, "always_one", "--max-steps", "5", "--eval-interval", "5"))
    before = gpt.load(toy_chat[0], device="cpu").model.state_dict()
    after = load_file(out / "checkpoint" / "state-5.safetensors")
    assert all(torch.equal(before[k], after[f"model.{k}"]) for k in before if k != "lm_head.weight")
    curve = json.loads((out / "metrics.json").read_text())["curve"]
    assert curve[-1]["skipped"] == 1.0


def test_replay_learns_the_base_text_beside_the_policy_and_the_card_gives_its_loss(tmp_path, toy_chat):
    """--replay with --rl (InstructGPT's pre-training mix): the text's validation loss ends lower than the same run's
    without it; metrics and card give it before and after."""
    text = tmp_path / "letters.txt"
    text.write_text("abc\ncab\n" * 200)
    steps = ["--max-steps", "6", "--eval-interval", "6"]
    main(rl_args(toy_chat, tmp_path / "ptx", "starts_with_the_letter", *steps, "--replay", str(text)))
    main(rl_args(toy_chat, tmp_path / "rl", "starts_with_the_letter", *steps))
    metrics = json.loads((tmp_path / "ptx" / "metrics.json").read_text())
    run = metrics["run"]
    assert run["best_step"] == 6, run  # the toy reward rose too: the model compared is the trained one
    alone = validation_loss(gpt.load(tmp_path / "rl", device="cpu"), text.read_text())[0]
    assert run["pretraining_val_loss"] < alone - 0.1 and run["pretraining_val_loss"] < run["start_pretraining_val_loss"]
    assert run["start_pretraining_val_loss"] == validation_loss(gpt.load(toy_chat[0]), text.read_text())[0]
    assert metrics["curve"][-1]["text_loss"] > 0
    card = (tmp_path / "ptx" / "README.md").read_text()
    assert "to the starting model, and 0.25 x the loss on windows of `letters.txt` (InstructGPT's" in card
    assert "replays" not in card and "share of" not in card  # --sft's wording of --replay is not RL's
    assert f"{run['start_pretraining_val_loss']:.4f} | {run['pretraining_val_loss']:.4f}" in card


def test_rl_raises_the_reward_on_a_toy_checker(tmp_path, toy_chat):
    out = tmp_path / "rl"
    main(rl_args(toy_chat, out, "starts_with_the_letter", "--max-steps", "40", "--eval-interval", "20"))
    run = json.loads((out / "metrics.json").read_text())["run"]
    assert run["val_reward"] > run["start_val_reward"] + 0.3, run
    assert run["greedy_val_reward"] >= run["start_greedy_val_reward"]
    card = (out / "README.md").read_text()
    assert "RL-tuned" in card and "test_rl:starts_with_the_letter" in card
    assert f"{run['start_val_reward']:.3f}" in card and f"{run['val_reward']:.3f}" in card


def test_resume_of_an_rl_run_equals_an_uninterrupted_one(tmp_path, toy_chat):
    schedule = ["--eval-interval", "4", "--lr-decay-steps", "12"]
    main(rl_args(toy_chat, tmp_path / "full", "starts_with_the_letter", "--max-steps", "12", *schedule))
    main(rl_args(toy_chat, tmp_path / "split", "starts_with_the_letter", "--max-steps", "8", *schedule))
    main(["--out", str(tmp_path / "split"), "--resume", "--max-steps", "12"])
    full, split = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("full", "split"))
    assert [e["val_reward"] for e in split["curve"]] == [e["val_reward"] for e in full["curve"]]
    assert [e["reward"] for e in split["curve"]] == [e["reward"] for e in full["curve"]]
    a, b = (load_file(tmp_path / d / "checkpoint" / "state-12.safetensors") for d in ("full", "split"))
    assert all(torch.equal(a[k], b[k]) for k in a if k.startswith("model."))
