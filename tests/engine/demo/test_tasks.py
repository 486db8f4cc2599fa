"""Generated demo data: schema, determinism, both languages, and references that are actually right."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter

import pytest

from engine.demo.tasks import generate_reasoning_records, generate_records
from engine.demo.tasks_code import FAMILIES, REASONING_FAMILIES

KEYS = {"id", "instruction", "context", "response", "category", "language", "answer", "tests", "reasoning"}
CATEGORIES = {"arithmetic", "word_problem", "string", "sorting", "unit_conversion", "closed_qa",
              "classification", "code"}

# Runs many (program, stdin) pairs in ONE interpreter: each program gets its own namespace and stdin/stdout.
_DRIVER = """
import io, json, sys, contextlib
results = []
for code, stdin in json.load(sys.stdin):
    out = io.StringIO()
    sys.stdin = io.StringIO(stdin)
    with contextlib.redirect_stdout(out):
        exec(code, {"__name__": "__main__"})
    results.append(out.getvalue())
sys.stdout.write(json.dumps(results))
"""


@pytest.fixture(scope="module")
def records() -> list[dict]:
    return generate_records(1200, seed=3)


@pytest.fixture(scope="module")
def reasoning() -> list[dict]:
    return generate_reasoning_records(600, seed=4)


def test_schema_and_categories(records, reasoning) -> None:
    for record in records + reasoning:
        assert set(record) == KEYS
        assert record["language"] in ("en", "es") and record["category"] in CATEGORIES
        assert record["instruction"] and record["response"] and isinstance(record["context"], str)
        assert (record["tests"] is not None) == (record["category"] == "code")
    assert {r["category"] for r in records} == CATEGORIES
    assert len({r["id"] for r in records}) == len(records)


def test_deterministic_by_seed() -> None:
    assert generate_records(50, seed=11) == generate_records(50, seed=11)
    assert generate_records(50, seed=11) != generate_records(50, seed=12)
    assert generate_reasoning_records(30, seed=5) == generate_reasoning_records(30, seed=5)


def test_both_languages_and_spanish_is_spanish(records) -> None:
    counts = Counter(r["language"] for r in records)
    assert counts["en"] == counts["es"] == 600
    spanish = " ".join(r["instruction"] + r["response"] for r in records if r["language"] == "es")
    for word in ("¿Cuánto", "Escribe", "respuesta", "Ordena", "tiene"):
        assert word in spanish
    assert "How many" not in spanish and "The answer" not in spanish
    assert generate_records(10, seed=1, languages=("es",))[0]["language"] == "es"
    with pytest.raises(ValueError):
        generate_records(3, seed=1, languages=("fr",))


def test_reasoning_records_carry_answer_or_tests(reasoning) -> None:
    assert {r["category"] for r in reasoning} == {"word_problem", "arithmetic", "code"}
    for record in reasoning:
        assert record["reasoning"]
        assert (record["answer"] is not None) or record["tests"]


def test_reasoning_programs_never_hinge_on_copying_a_number(records, reasoning) -> None:
    """The GRPO set's programs are told apart by words, not by a digit the student would have to copy (the
    ``times_k`` families stay in the instruction set only)."""
    programs = {f.code.rstrip("\n"): f for f in FAMILIES}
    used = {programs[r["response"]].name for r in reasoning if r["category"] == "code"}
    assert used == {f.name for f in REASONING_FAMILIES}
    assert not any(name.startswith("times_") for name in used)
    assert any(programs[r["response"]].name.startswith("times_") for r in records if r["category"] == "code")


def _check_equations(text: str) -> list[int]:
    """Evaluates every 'a op b = c' in text, asserting each; returns the results in order."""
    results = []
    for a, op, b, c in re.findall(r"(\d+) ([-+×/]) (\d+) = (\d+)", text):
        a, b, c = int(a), int(b), int(c)
        value = {"+": a + b, "-": a - b, "×": a * b, "/": a // b if b and a % b == 0 else None}[op]
        assert value == c, text
        results.append(c)
    return results


def test_arithmetic_and_word_problem_answers_are_right(records, reasoning) -> None:
    checked = 0
    for record in records + reasoning:
        if record["category"] in ("arithmetic", "word_problem"):
            results = _check_equations(record["reasoning"])
            assert results and str(results[-1]) == record["answer"]
            assert record["answer"] in record["response"]
            checked += 1
    assert checked > 300


def test_other_answers_are_right(records) -> None:
    for record in records:
        cat, answer, instruction = record["category"], record["answer"], record["instruction"]
        if cat == "sorting":
            numbers = [int(x) for x in re.findall(r"\d+", instruction.split(":")[1])]
            descending = "largest to" in instruction or "mayor a menor" in instruction
            assert answer == ", ".join(map(str, sorted(numbers, reverse=descending)))
        elif cat == "unit_conversion":
            value = int(re.findall(r"\d+", instruction)[0])
            assert int(answer) % value == 0 and int(answer) // value in (7, 24, 60, 100, 1000)
        elif cat == "closed_qa":
            assert answer in record["context"] and answer in record["response"]
        elif cat == "classification" and answer in ("even", "odd", "par", "impar"):
            n = int(re.findall(r"\d+", instruction)[0])
            assert answer in (("even", "par") if n % 2 == 0 else ("odd", "impar"))
        elif cat == "string" and "'" in instruction:
            word = instruction.split("'")[1]
            assert answer in (word.upper(), str(len(word)))


def test_code_references_pass_their_tests(records, reasoning) -> None:
    pairs = [(r["response"], t["input"], t["output"]) for r in records + reasoning if r["tests"] for t in r["tests"]]
    assert len(pairs) > 300
    payload = json.dumps([[code, stdin] for code, stdin, _ in pairs])
    done = subprocess.run([sys.executable, "-c", _DRIVER], input=payload, capture_output=True, text=True,
                          timeout=60, check=True)
    outputs = json.loads(done.stdout)
    assert outputs == [expected for *_, expected in pairs]


def test_each_code_family_runs_as_a_real_program() -> None:
    import random

    rng = random.Random(0)
    for family in FAMILIES[:6] + FAMILIES[9:12]:
        stdin = family.make_input(rng)
        done = subprocess.run([sys.executable, "-c", family.code], input=stdin, capture_output=True, text=True,
                              timeout=20, check=True)
        assert done.stdout == family.oracle(stdin), family.name
