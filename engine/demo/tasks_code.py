"""Small programming tasks for the demo kit: write a Python program that reads stdin and prints a result.

Each family has an English and a Spanish statement, a reference program (the response) and a pure-Python
oracle that computes the expected stdout for generated stdin, so every record carries ``tests`` that the
reference program passes (the test suite runs the programs to check it).
"""
from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class CodeFamily:
    """One kind of program: statements, reference code, a stdin generator and the expected-output oracle."""

    name: str
    statement: dict[str, str]  # language -> instruction
    plan: dict[str, str]  # language -> short reasoning trace
    code: str
    make_input: Callable[[random.Random], str]
    oracle: Callable[[str], str]


_EN_PREFIX = "Write a Python program that reads "
_ES_PREFIX = "Escribe un programa en Python que lea "


def _two_ints(rng: random.Random) -> str:
    return f"{rng.randint(0, 99)}\n{rng.randint(0, 99)}\n"


def _one_int(rng: random.Random) -> str:
    return f"{rng.randint(1, 9)}\n"


def _int_list(rng: random.Random) -> str:
    return " ".join(str(rng.randint(0, 99)) for _ in range(rng.randint(3, 6))) + "\n"


_WORDS = ("hello", "python", "casa", "code", "river", "sol", "table", "luna", "green", "perro")


def _word(rng: random.Random) -> str:
    return rng.choice(_WORDS) + "\n"


def _ints(text: str) -> list[int]:
    return [int(tok) for tok in text.split()]


def _binary(name: str, en: str, es: str, plan_en: str, plan_es: str, expr: str,
            fn: Callable[[int, int], int]) -> CodeFamily:
    return CodeFamily(
        name=name,
        statement={"en": _EN_PREFIX + "two integers from standard input, one per line, and prints " + en + ".",
                   "es": _ES_PREFIX + "dos números enteros de la entrada estándar, uno por línea, e imprima "
                   + es + "."},
        plan={"en": f"Read a and b as integers, then print {plan_en}.",
              "es": f"Leer a y b como enteros y después imprimir {plan_es}."},
        code=f"a = int(input())\nb = int(input())\nprint({expr})\n",
        make_input=_two_ints,
        oracle=lambda text: f"{fn(*_ints(text))}\n",
    )


def _list_family(name: str, en: str, es: str, expr: str, fn: Callable[[list[int]], str]) -> CodeFamily:
    return CodeFamily(
        name=name,
        statement={"en": _EN_PREFIX + "a line of integers separated by spaces and prints " + en + ".",
                   "es": _ES_PREFIX + "una línea de números enteros separados por espacios e imprima " + es + "."},
        plan={"en": f"Split the line into integers, then print {en}.",
              "es": f"Separar la línea en enteros y después imprimir {es}."},
        code=f"nums = list(map(int, input().split()))\nprint({expr})\n",
        make_input=_int_list,
        oracle=lambda text: f"{fn(_ints(text))}\n",
    )


def _families() -> list[CodeFamily]:
    families = [
        _binary("sum", "their sum", "su suma", "a + b", "a + b", "a + b", lambda a, b: a + b),
        _binary("difference", "the first minus the second", "el primero menos el segundo",
                "a - b", "a - b", "a - b", lambda a, b: a - b),
        _binary("product", "their product", "su producto", "a * b", "a * b", "a * b", lambda a, b: a * b),
        _binary("maximum", "the larger one", "el mayor", "max(a, b)", "max(a, b)", "max(a, b)", max),
        _binary("minimum", "the smaller one", "el menor", "min(a, b)", "min(a, b)", "min(a, b)", min),
        _list_family("list_max", "the largest number", "el número más grande", "max(nums)",
                     lambda xs: str(max(xs))),
        _list_family("list_min", "the smallest number", "el número más pequeño", "min(nums)",
                     lambda xs: str(min(xs))),
        _list_family("list_sum", "the sum of the numbers", "la suma de los números", "sum(nums)",
                     lambda xs: str(sum(xs))),
        _list_family("list_sorted", "the numbers sorted in ascending order",
                     "los números ordenados de menor a mayor", "*sorted(nums)",
                     lambda xs: " ".join(map(str, sorted(xs)))),
        CodeFamily(
            name="reverse",
            statement={"en": _EN_PREFIX + "a word from standard input and prints it reversed.",
                       "es": _ES_PREFIX + "una palabra de la entrada estándar e imprima la palabra al revés."},
            plan={"en": "Read the word and print it with a reversed slice.",
                  "es": "Leer la palabra e imprimirla con un corte invertido."},
            code="s = input()\nprint(s[::-1])\n", make_input=_word,
            oracle=lambda text: text.strip("\n")[::-1] + "\n",
        ),
        CodeFamily(
            name="upper",
            statement={"en": _EN_PREFIX + "a word from standard input and prints it in uppercase.",
                       "es": _ES_PREFIX + "una palabra de la entrada estándar e imprima la palabra en mayúsculas."},
            plan={"en": "Read the word and print it with upper().",
                  "es": "Leer la palabra e imprimirla con upper()."},
            code="s = input()\nprint(s.upper())\n", make_input=_word,
            oracle=lambda text: text.strip("\n").upper() + "\n",
        ),
        CodeFamily(
            name="count_up",
            statement={"en": _EN_PREFIX + "an integer n and prints the numbers from 1 to n, one per line.",
                       "es": _ES_PREFIX + "un número entero n e imprima los números del 1 al n, uno por línea."},
            plan={"en": "Read n, loop i from 1 to n and print each i.",
                  "es": "Leer n, recorrer i del 1 al n e imprimir cada i."},
            code="n = int(input())\nfor i in range(1, n + 1):\n    print(i)\n", make_input=_one_int,
            oracle=lambda text: "".join(f"{i}\n" for i in range(1, int(text) + 1)),
        ),
    ]
    for k in range(2, 10):
        families.append(CodeFamily(
            name=f"times_{k}",
            statement={"en": _EN_PREFIX + f"an integer n and prints n multiplied by {k}.",
                       "es": _ES_PREFIX + f"un número entero n e imprima n multiplicado por {k}."},
            plan={"en": f"Read n as an integer and print n * {k}.",
                  "es": f"Leer n como entero e imprimir n * {k}."},
            code=f"n = int(input())\nprint(n * {k})\n",
            make_input=lambda rng: f"{rng.randint(0, 99)}\n",
            oracle=lambda text, k=k: f"{int(text) * k}\n",
        ))
    return families


FAMILIES: tuple[CodeFamily, ...] = tuple(_families())
#: The GRPO reasoning set leaves out ``times_k``: those programs hinge on copying the digit k out of the statement,
#: which the 0.5 M demo student cannot learn from the kit's data (measured: it cannot even copy a two-digit number
#: for a "which is larger" question), so GRPO could only shift its guess toward the digits that are frequent in the
#: training split — measured as a loss on held-out prompts (bench/RESULTS_grpo.md). The instruction set keeps them.
REASONING_FAMILIES: tuple[CodeFamily, ...] = tuple(f for f in FAMILIES if not f.name.startswith("times_"))


def code_task(rng: random.Random, lang: str, families: tuple[CodeFamily, ...] = FAMILIES) -> dict:
    """One programming record (without id): statement, reference program, plan and 3 stdin→stdout tests."""
    family = rng.choice(families)
    inputs: list[str] = []
    for _ in range(30):  # three distinct inputs (a few families have few possible inputs)
        candidate = family.make_input(rng)
        if candidate not in inputs:
            inputs.append(candidate)
        if len(inputs) == 3:
            break
    return {
        "instruction": family.statement[lang],
        "context": "",
        "response": family.code.rstrip("\n"),
        "category": "code",
        "answer": None,
        "tests": [{"input": text, "output": family.oracle(text)} for text in inputs],
        "reasoning": family.plan[lang],
    }
