"""The names assistant's task: the request grammar's generator and parser agree, and the reward checks answers."""

import json
import random

import pytest
from conftest import make_names

from gpt.posttraining.names_task import KINDS, Request, base_prompt, main, namelike_reward, parse, request_for, reward


def asked(text: str) -> list[dict]:
    return [{"role": "system", "content": "Be brief."}, {"role": "user", "content": text}]


@pytest.mark.parametrize(
    "request_text, reply, expected",
    [
        ('A name that starts with "em".', "emma", 1.0),
        ('A name that starts with "em".', " emma\n", 1.0),  # the turn's newline and spaces around do not count
        ('A name that starts with "em".', "Emma", 0.0),  # lower case only
        ('A name that starts with "em".', "em ma", 0.0),  # one word
        ('A name that starts with "em".', "emma2", 0.0),  # letters only
        ('A name that starts with "em".', "", 0.0),
        ('A name that ends with "lyn" and has 7 letters.', "madilyn", 1.0),
        ('A name that ends with "lyn" and has 7 letters.', "evelyn", 0.0),  # 6 letters
        ('A name that starts with "a", ends with "a" and contains "nn".', "anna", 1.0),
        ('A name that starts with "a", ends with "a" and contains "nn".', "ana", 0.0),
        ("A name that has 12 letters.", "christabelle", 1.0),
        ("Tell me a name.", "emma", 0.0),  # not a request: nothing to meet
    ],
)
def test_reward_on_hand_made_cases(request_text, reply, expected):
    assert reward(asked(request_text), reply) == expected


def test_the_name_like_reward_prefers_a_name_to_a_string_of_letters_that_meets_as_well():
    """namelike_reward scores a step's replies at once under the shipped weights/names: a met real name near 1, a met
    string of letters well below it, an unmet answer at most 0, and each reply as if scored alone."""
    request = asked('A name that starts with "em" and has 6 letters.')
    replies = ["emilia", "emxqzv", "emma", "em ma", "emmaline"]
    scores = namelike_reward([request] * len(replies), replies)
    assert [reward(request, r) for r in replies] == [1.0, 1.0, 0.0, 0.0, 0.0]
    assert scores[0] > 0.8 and scores[1] < scores[0] - 0.5  # the letters cost several nats a character more
    assert all(s <= 0 for s in scores[2:]) and scores[3] == 0.0  # not one word: no name to score
    alone = [namelike_reward([request], [r])[0] for r in replies]
    assert scores == pytest.approx(alone, abs=1e-5)  # padding in the batch changes no score


@pytest.mark.parametrize(
    "text, says",
    [
        ('A name that ends with "a" and starts with "b".', "in the order"),
        ('A name that starts with "a", ends with "b".', "C, D and E"),
        ('A name that starts with "a", ends with "b", has 4 letters and contains "ab".', "C, D and E"),
        ("A name that has 2 letters.", "from 3 to 12"),
        ("A name that has 13 letters.", "from 3 to 12"),
        ('A name that starts with "abcd".', "C, D and E"),
        ('A name that starts with "A".', "C, D and E"),
        ('A name that contains "a".', "C, D and E"),
        ('a name that starts with "a".', "C, D and E"),
        ('A name that starts with "a"', "C, D and E"),
    ],
)
def test_text_outside_the_grammar_is_refused_with_the_rule(text, says):
    with pytest.raises(ValueError, match=says):
        parse(text)


def test_generator_and_parser_agree_and_the_name_meets_its_request():
    rng = random.Random(0)
    names = make_names(300).split() + ["al", "bo", "christabelle", "x"]
    seen = set()
    for name in names * 5:
        request = request_for(name, rng)
        text = str(request)
        assert parse(text) == request and request.met(name), (name, text)
        assert text.startswith("A name that ") and text.endswith(".") and 1 <= len(request.kinds) <= 3
        assert request.kinds == sorted(request.kinds, key=KINDS.index)
        seen.add(tuple(request.kinds))
    assert len(seen) >= 12  # every kind alone, in pairs and in threes
    assert (
        str(Request(starts="ma", ends="a", length=6))
        == 'A name that starts with "ma", ends with "a" and has 6 letters.'
    )
    assert base_prompt(Request(starts="ma", length=6)) == "\nma" and base_prompt(Request(length=6)) == "\n"


def test_the_script_makes_each_stage_s_data_from_the_training_names(tmp_path):
    names = tmp_path / "names.txt"
    names.write_text(make_names(200))
    main([str(names), "--out-dir", str(tmp_path / "data"), "--sft", "2", "--prompts", "50"])
    lines = names.read_text().split("\n")
    train = {n for i, n in enumerate(lines) if i % 10 != 9 and n}
    val_only = {n for i, n in enumerate(lines) if i % 10 == 9 and n} - train
    assert set((tmp_path / "data" / "names.txt").read_text().split()) == train
    sft = [json.loads(x)["messages"] for x in (tmp_path / "data" / "sft.jsonl").read_text().splitlines()]
    assert len(sft) == 2 * len([n for i, n in enumerate(lines) if i % 10 != 9 and n])
    for user, answer in sft:
        assert parse(user["content"]).met(answer["content"]) and answer["content"] not in val_only
    prompts = [json.loads(x)["messages"] for x in (tmp_path / "data" / "prompts.jsonl").read_text().splitlines()]
    assert len(prompts) == 50 and all(len(p) == 1 and parse(p[0]["content"]) for p in prompts)
