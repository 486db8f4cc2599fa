"""Reward functions of the chain-of-thought GRPO stage, in TRL's calling convention.

Each function is ``fn(prompts, completions, **kwargs) -> list[float | None]``: completions are strings or chat
message lists, and dataset columns (``answer``, ``tests``) arrive as keyword lists, one entry per completion.
``None`` means "does not apply to this record" (TRL turns it into NaN and leaves it out of the mean), so one
data set can mix problems with reference answers and programs with tests. Names are those of ``spec.REWARDS``:

* ``format_strict``   1 if the completion is exactly ``<think>…</think> <answer>…</answer>`` and nothing else;
* ``format_lenient``  1 if both tag pairs appear, in that order, anywhere;
* ``reasoning_structure``  up to 1 for reasoning made of several steps (lines, sentences, equations);
* ``length``          1 inside ``GRPOSpec.length_range`` (tokens), falling off linearly outside it;
* ``answer_correct``  1 if the ``<answer>`` content equals the reference ``answer`` (exactly after normalising
  case, spaces and a final period, or numerically: "42", "42.0" and " 42 " all match 42);
* ``code_tests``      fraction of the record's ``tests`` the program in the answer passes (engine.rewards.sandbox).

Format and structure rewards are gated: they pay nothing unless an answer is actually given (a non-empty answer
block) and the reasoning has at least ``min_reasoning_words`` words, so the tags alone cannot carry the reward
(the failure of the paper's own GRPO run, where format reward rose while correctness stayed at zero).
Length counts tokens from TRL's ``completion_ids`` when given, else with the tokenizer handed to the factory,
else whitespace-separated words.
"""
from __future__ import annotations

import math
import re
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from collections.abc import Callable

from engine.contract.errors import echo
from engine.contract.safe_json import JSONProblem, safe_json_loads
from engine.core.context import EngineError
from engine.rewards.sandbox import run_tests
from engine.contract.spec import REWARDS, RewardSpec

RewardFunction = Callable[..., list]

_STRICT = re.compile(r"\s*<think>(?P<think>(?:(?!</?think>|</?answer>).)*)</think>\s*"
                     r"<answer>(?P<answer>(?:(?!</?think>|</?answer>).)*)</answer>\s*", re.S)
_THINK = re.compile(r"<think>(?P<think>.*?)</think>", re.S)
_ANSWER_AFTER = re.compile(r"</think>.*?<answer>(?P<answer>.*?)</answer>", re.S)
_ORDERED = re.compile(r"<think>(?P<think>.*?)</think>.*?<answer>(?P<answer>.*?)</answer>", re.S)
_ANSWER = re.compile(r"<answer>(?P<answer>.*?)</answer>", re.S)
_FENCE = re.compile(r"```(?:python|py|Python)?[ \t]*\n(?P<code>.*?)```", re.S)
_NUMBER = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?")
_STEP_SPLIT = re.compile(r"\n+|(?<=[.!?;])\s+")
NEEDS_ANSWER_TAG = ("format_strict", "format_lenient", "reasoning_structure", "answer_correct")


def completion_text(completion: Any) -> str:
    """The text of a completion given as a string or as chat messages (the assistant turns joined)."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        return str(completion.get("content", ""))
    if isinstance(completion, (list, tuple)):
        return "".join(str(m.get("content", "")) if isinstance(m, dict) else str(m) for m in completion)
    return str(completion)


def think_block(text: str) -> str | None:
    match = _THINK.search(text)
    return match["think"].strip() if match else None


def answer_block(text: str) -> str | None:
    """The content of the answer tags (the first one after the reasoning if there is reasoning)."""
    match = _ANSWER_AFTER.search(text) or _ANSWER.search(text)
    return match["answer"].strip() if match else None


def extract_program(text: str) -> str | None:
    """A program from the answer block (its ```python fence if it has one), else from the last fence."""
    answer = answer_block(text)
    if answer:
        fences = _FENCE.findall(answer)
        return fences[-1] if fences else answer.strip("`\n ")
    fences = _FENCE.findall(text)
    return fences[-1] if fences else None


def _words(text: str) -> int:
    return len(text.split())


def earns_format_credit(text: str, min_reasoning_words: int) -> bool:
    """The gate of format and structure rewards: reasoning then a non-empty answer, the reasoning not trivial."""
    match = _ORDERED.search(text)
    return bool(match and match["answer"].strip() and _words(match["think"]) >= min_reasoning_words)


def _normalise(text: str) -> str:
    text = re.sub(r"\s+", " ", str(text)).strip().lower()
    return text.rstrip(".").strip()


def _as_number(text: str) -> float | None:
    text = _normalise(text).replace(" ", "")
    if re.fullmatch(r"[-+]?\d{1,3}(,\d{3})+(\.\d+)?", text):
        text = text.replace(",", "")  # thousands separators
    if not _NUMBER.fullmatch(text):
        return None
    try:
        return float(text)
    except ValueError:
        return None


def answers_match(given: str, reference: Any) -> bool:
    """Exact match after normalising case, spaces and a final period, or equal as numbers."""
    ref = str(reference)
    if _normalise(given) == _normalise(ref):
        return True
    a, b = _as_number(given), _as_number(ref)
    return a is not None and b is not None and math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)


def reasoning_steps(think: str) -> int:
    """Distinct, non-trivial steps of a reasoning: lines or sentences of at least two words (repeats count once)."""
    steps = {re.sub(r"\s+", " ", s).strip().lower() for s in _STEP_SPLIT.split(think)}
    return sum(1 for s in steps if _words(s) >= 2)


def _texts(completions: list) -> list[str]:
    return [completion_text(c) for c in completions]


def _column(kwargs: dict, name: str, n: int) -> list:
    values = kwargs.get(name)
    return list(values) if values is not None else [None] * n


def make_format_strict(min_reasoning_words: int = 3) -> RewardFunction:
    def format_strict(prompts: list, completions: list, **kwargs: Any) -> list[float]:
        return [float(bool(_STRICT.fullmatch(t)) and earns_format_credit(t, min_reasoning_words))
                for t in _texts(completions)]
    return format_strict


def make_format_lenient(min_reasoning_words: int = 3) -> RewardFunction:
    def format_lenient(prompts: list, completions: list, **kwargs: Any) -> list[float]:
        return [float(earns_format_credit(t, min_reasoning_words)) for t in _texts(completions)]
    return format_lenient


def make_reasoning_structure(min_reasoning_words: int = 3, target_steps: int = 2) -> RewardFunction:
    def reasoning_structure(prompts: list, completions: list, **kwargs: Any) -> list[float]:
        out = []
        for text in _texts(completions):
            if not earns_format_credit(text, min_reasoning_words):
                out.append(0.0)
                continue
            out.append(min(1.0, reasoning_steps(think_block(text) or "") / target_steps))
        return out
    return reasoning_structure


def length_score(n_tokens: int, low: int, high: int) -> float:
    """1 inside [low, high]; n/low below it; falling linearly to 0 at 2·high above it."""
    if n_tokens < low:
        return n_tokens / low
    if n_tokens > high:
        return max(0.0, 1.0 - (n_tokens - high) / high)
    return 1.0


def make_length(length_range: tuple[int, int] | list[int], tokenizer: Any = None) -> RewardFunction:
    low, high = int(length_range[0]), int(length_range[1])

    def length(prompts: list, completions: list, completion_ids: list | None = None, **kwargs: Any) -> list[float]:
        texts = _texts(completions)
        if completion_ids is not None:
            counts = [len(ids) for ids in completion_ids]
        elif tokenizer is not None:
            counts = [len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
        else:
            counts = [_words(t) for t in texts]
        return [length_score(n, low, high) for n in counts]
    return length


def make_answer_correct() -> RewardFunction:
    def answer_correct(prompts: list, completions: list, **kwargs: Any) -> list[float | None]:
        texts = _texts(completions)
        out: list[float | None] = []
        for text, reference in zip(texts, _column(kwargs, "answer", len(texts))):
            if reference is None or str(reference).strip() == "":
                out.append(None)  # no reference answer: this reward does not apply (e.g. a programming task)
                continue
            given = answer_block(text)
            out.append(float(bool(given) and answers_match(given, reference)))
        return out
    return answer_correct


def make_code_tests(timeout_s: float = 2.0, memory_mb: int = 256, workers: int = 2) -> RewardFunction:
    def score(text: str, tests: Any) -> float | None:
        if isinstance(tests, str):  # rows keep tests as JSON text; text that is not (any more) scores nothing
            try:
                tests = safe_json_loads(tests) if tests.strip() else None
            except JSONProblem:
                return None
            if not isinstance(tests, list):
                return None
        if not tests:
            return None  # no tests: this reward does not apply (e.g. a word problem)
        program = extract_program(text)
        if not program:
            return 0.0
        return run_tests(program, list(tests), timeout_s=timeout_s, cpu_s=max(1, math.ceil(timeout_s)),
                         memory_mb=memory_mb)

    def code_tests(prompts: list, completions: list, **kwargs: Any) -> list[float | None]:
        texts = _texts(completions)
        tests = _column(kwargs, "tests", len(texts))
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:  # the programs run in child processes
            return list(pool.map(score, texts, tests))
    return code_tests


def build_reward_functions(specs: list[RewardSpec], *, length_range: tuple[int, int] | list[int] = (16, 128),
                           tokenizer: Any = None, min_reasoning_words: int = 3,
                           code_timeout_s: float = 2.0) -> list[RewardFunction]:
    """One function per spec, each with ``__name__`` equal to its reward name (TRL logs rewards/<name>/mean)."""
    makers: dict[str, Callable[[], RewardFunction]] = {
        "format_strict": lambda: make_format_strict(min_reasoning_words),
        "format_lenient": lambda: make_format_lenient(min_reasoning_words),
        "reasoning_structure": lambda: make_reasoning_structure(min_reasoning_words),
        "length": lambda: make_length(length_range, tokenizer),
        "answer_correct": make_answer_correct,
        "code_tests": lambda: make_code_tests(code_timeout_s),
    }
    functions = []
    for spec in specs:
        if spec.name not in makers:
            raise EngineError(f"unknown reward {echo(spec.name)}; choose from {', '.join(REWARDS)}.")
        fn = makers[spec.name]()
        fn.__name__ = fn.__qualname__ = spec.name
        functions.append(fn)
    return functions


def reward_weights(specs: list[RewardSpec]) -> list[float]:
    return [float(spec.weight) for spec in specs]


def check_code_sandbox(allow_unsandboxed: bool = False) -> str:
    """The kernel boundary the code_tests programs run behind (engine.rewards.sandbox.mechanism); EngineError where
    there is none and the user has not opted in with ``grpo.allow_unsandboxed_code``."""
    from engine.rewards.sandbox import mechanism

    found = mechanism()
    if found == "none" and not allow_unsandboxed:
        raise EngineError("the code_tests reward runs model-written programs, and this system offers no kernel "
                          "sandbox for them (no Landlock in the kernel, no bubblewrap installed); install "
                          "bubblewrap, use a kernel with Landlock, or set grpo.allow_unsandboxed_code: true if the "
                          "engine already runs in a container or VM.")
    return found


def validate_rewards(specs: list[RewardSpec], template: str, records: list[dict],
                     allow_unsandboxed: bool = False) -> None:
    """EngineError (one sentence) for rewards the data or the template cannot support, or code rewards the
    system cannot sandbox."""
    names = [spec.name for spec in specs]
    for name in names:
        if name not in REWARDS:
            raise EngineError(f"unknown reward {echo(name)}; choose from {', '.join(REWARDS)}.")
    if len(set(names)) != len(names):
        raise EngineError("a reward is listed twice in grpo.rewards; give each reward once with its weight.")
    if "{prompt}" not in template:
        raise EngineError("grpo.template has no {prompt} slot for the task; add {prompt} where the task goes.")
    if any(name in NEEDS_ANSWER_TAG for name in names) and "<answer>" not in template:
        raise EngineError("grpo.template does not ask for the answer inside <answer></answer>, which the format "
                          "and correctness rewards read; add the <answer></answer> slot to the template.")
    if "code_tests" in names and not any(r.get("tests") for r in records):
        raise EngineError("the code_tests reward needs records with tests (stdin/stdout pairs), and this data "
                          "has none; remove code_tests or use data with a tests column.")
    if "code_tests" in names:
        check_code_sandbox(allow_unsandboxed)
    if "answer_correct" in names and not any(str(r.get("answer") or "").strip() for r in records):
        raise EngineError("the answer_correct reward needs records with a reference answer, and this data has "
                          "none; remove answer_correct or map an answer column.")
