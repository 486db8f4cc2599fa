"""GRPO reward functions on hand-made completions: tags alone earn nothing, correct answers and programs do."""
from __future__ import annotations

import pytest

from engine.core.context import EngineError
from engine.rewards.functions import (NEEDS_ANSWER_TAG, answers_match, build_reward_functions, extract_program,
                                    length_score, reward_weights, validate_rewards)
from engine.contract.spec import GRPOSpec, RewardSpec
from engine.contract.vocabulary import REWARDS

ALL = [RewardSpec(name, 1.0) for name in REWARDS]
GOOD = "<think>\nTom has 33 books. He buys 50 more.\n33 + 50 = 83.\n</think>\n<answer>\n83\n</answer>"
EMPTY_TAGS = "<think></think><answer></answer>"
TAGS_NO_ANSWER = "<think>\nTom has 33 books and buys 50 more.\n</think>\n<answer>  </answer>"
SHORT_THINK = "<think>ok</think><answer>83</answer>"
WRONG = "<think>\nTom has 33 books. He buys 50 more.\n33 + 50 = 84.\n</think>\n<answer>84</answer>"
SUM_CODE = "import sys\nprint(sum(int(x) for x in sys.stdin.read().split()))"
TESTS = [{"input": "1 2\n", "output": "3\n"}, {"input": "5 5\n", "output": "10\n"}]


def _rewards(completions: list, **columns) -> dict[str, list]:
    fns = build_reward_functions(ALL, length_range=[4, 40])
    n = len(completions)
    columns = {"answer": ["83"] * n, "tests": [None] * n, **columns}
    return {fn.__name__: fn(prompts=["p"] * n, completions=completions, **columns) for fn in fns}


def test_functions_are_named_after_their_reward() -> None:
    fns = build_reward_functions(ALL, length_range=[4, 40])
    assert [f.__name__ for f in fns] == [s.name for s in ALL]
    assert reward_weights([RewardSpec("format_strict", 0.2), RewardSpec("answer_correct", 1.0)]) == [0.2, 1.0]


def test_tags_without_an_answer_earn_nothing() -> None:
    r = _rewards([EMPTY_TAGS, TAGS_NO_ANSWER, SHORT_THINK])
    for name in NEEDS_ANSWER_TAG:
        assert r[name][:2] == [0.0, 0.0], name
    # an answer behind trivially short reasoning: correct, but no format or structure credit
    assert r["answer_correct"][2] == 1.0
    assert r["format_strict"][2] == r["format_lenient"][2] == r["reasoning_structure"][2] == 0.0


def test_a_correct_answer_earns_correctness_and_format() -> None:
    r = _rewards([GOOD, WRONG])
    assert r["answer_correct"] == [1.0, 0.0]
    assert r["format_strict"] == [1.0, 1.0] and r["format_lenient"] == [1.0, 1.0]
    assert r["reasoning_structure"][0] == 1.0
    assert r["code_tests"] == [None, None]  # no tests: does not apply


def test_format_strict_rejects_extra_text_but_lenient_accepts_it() -> None:
    chatty = "Sure! " + GOOD + " Hope this helps."
    reversed_order = "<answer>83</answer><think>Tom has 33 books and buys 50 more.</think>"
    r = _rewards([chatty, reversed_order])
    assert r["format_strict"] == [0.0, 0.0]
    assert r["format_lenient"] == [1.0, 0.0]


def test_reasoning_structure_rewards_several_distinct_steps() -> None:
    one = "<think>33 + 50 = 83 books in total</think><answer>83</answer>"
    repeated = "<think>33 + 50 = 83.\n33 + 50 = 83.\n33 + 50 = 83.</think><answer>83</answer>"
    r = _rewards([one, repeated, GOOD])
    assert r["reasoning_structure"] == [0.5, 0.5, 1.0]


@pytest.mark.parametrize("given", ["42", "42.0", " 42 ", "42.", "+42", "4.2e1"])
def test_numeric_answers_match(given: str) -> None:
    assert answers_match(given, "42")
    assert answers_match(given, 42)


@pytest.mark.parametrize("given,ref", [("43", "42"), ("42 apples", "42"), ("", "42"), ("4 2", "42.5")])
def test_wrong_answers_do_not_match(given: str, ref: str) -> None:
    assert not answers_match(given, ref)


def test_text_answers_match_ignoring_case_and_spaces() -> None:
    assert answers_match("  Positive.", "positive")
    assert answers_match("1,000", "1000")
    assert not answers_match("negative", "positive")


def test_answer_correct_with_chat_message_completions() -> None:
    completions = [[{"role": "assistant", "content": GOOD}], [{"role": "assistant", "content": WRONG}]]
    r = _rewards(completions, answer=["83.0", None])
    assert r["answer_correct"] == [1.0, None]


def test_length_shaping() -> None:
    assert length_score(20, 16, 128) == 1.0 and length_score(8, 16, 128) == 0.5
    assert length_score(192, 16, 128) == 0.5 and length_score(1000, 16, 128) == 0.0
    fn = build_reward_functions([RewardSpec("length")], length_range=[2, 4])[0]
    assert fn(["p"] * 3, ["a b c", "a", "a b c d e f g h"]) == [1.0, 0.5, 0.0]
    # TRL's completion_ids win over whitespace words
    assert fn(["p"], ["a"], completion_ids=[[1, 2, 3]]) == [1.0]


def test_code_tests_runs_the_program_from_the_answer() -> None:
    fenced = f"<think>Read the numbers and add them up.</think><answer>\n```python\n{SUM_CODE}\n```\n</answer>"
    bare = f"<think>Read the numbers and add them up.</think><answer>\n{SUM_CODE}\n</answer>"
    fence_only = f"Here it is:\n```python\n{SUM_CODE}\n```"
    wrong = "<think>Read the numbers and add them up.</think><answer>print(3)</answer>"
    loop = "<think>Read the numbers and loop forever.</think><answer>while True: pass</answer>"
    completions = [fenced, bare, fence_only, wrong, loop, "no program at all"]
    fn = build_reward_functions([RewardSpec("code_tests")], code_timeout_s=1.0)[0]
    scores = fn(["p"] * 6, completions, tests=[TESTS] * 6)
    assert scores == [1.0, 1.0, 1.0, 0.5, 0.0, 0.0]
    assert extract_program("nothing") is None


def test_mixed_data_rewards_apply_per_record() -> None:
    code = f"<think>Read the numbers and add them up.</think><answer>{SUM_CODE}</answer>"
    r = _rewards([GOOD, code], answer=["83", None], tests=[None, TESTS])
    assert r["answer_correct"] == [1.0, None] and r["code_tests"] == [None, 1.0]


def test_validation_sentences() -> None:
    template = GRPOSpec().template
    answers = [{"answer": "1", "tests": None}]
    with pytest.raises(EngineError, match="code_tests reward needs records with tests"):
        validate_rewards([RewardSpec("code_tests")], template, answers)
    with pytest.raises(EngineError, match="answer_correct reward needs records with a reference answer"):
        validate_rewards([RewardSpec("answer_correct")], template, [{"answer": None, "tests": TESTS}])
    with pytest.raises(EngineError, match="<answer></answer>"):
        validate_rewards([RewardSpec("answer_correct")], "Solve: {prompt}", answers)
    with pytest.raises(EngineError, match=r"\{prompt\}"):
        validate_rewards([RewardSpec("answer_correct")], "<answer></answer>", answers)
    bad = RewardSpec("length")
    bad.name = "vibes"
    with pytest.raises(EngineError, match="unknown reward 'vibes'"):
        validate_rewards([bad], template, answers)
    with pytest.raises(EngineError, match="unknown reward 'vibes'"):
        build_reward_functions([bad])
    validate_rewards([RewardSpec("answer_correct"), RewardSpec("format_strict")], template, answers)
