"""Generated instruction data for the demo kit, in English and Spanish, with exact references.

Records follow the engine's canonical schema::

    {"id", "instruction", "context", "response", "category", "language", "answer", "tests", "reasoning"}

``response`` is the plain, natural answer the model should write; ``answer`` is the exact short final answer
(when there is one), ``reasoning`` a short step-by-step trace (word problems, code plans) and ``tests``
stdin→stdout pairs for programming tasks, so the GRPO stage can build its own <think>/<answer> targets and
rewards. Numbers stay small because Qwen's pre-tokenizer splits them into single digits. Everything is
deterministic given the seed.
"""
from __future__ import annotations

import random
from collections.abc import Callable, Sequence

from engine.demo.tasks_code import REASONING_FAMILIES, code_task

LANGUAGES = ("en", "es")

NAMES = {"en": ("Anna", "Tom", "Lucy", "Mark", "Sara", "Ben", "Emma", "Jack"),
         "es": ("Ana", "Pablo", "Lucía", "Carlos", "Sofía", "Diego", "Elena", "Javier")}
ITEMS = {"en": ("apples", "pens", "books", "cookies", "marbles", "stickers"),
         "es": ("manzanas", "lápices", "libros", "galletas", "canicas", "cromos")}
FEMININE = {"manzanas", "galletas", "canicas"}  # Spanish "¿Cuántas …?" agreement
WORDS = {"en": ("red", "blue", "green", "cat", "dog", "bird", "sun", "moon", "tree", "river", "house", "apple",
                "water", "happy", "table", "music"),
         "es": ("rojo", "azul", "verde", "gato", "perro", "pájaro", "sol", "luna", "árbol", "río", "casa",
                "manzana", "agua", "feliz", "mesa", "niño")}
CITIES = {"en": ("London", "Paris", "Boston", "Sydney", "Dublin", "Toronto"),
          "es": ("Madrid", "Lima", "Bogotá", "Quito", "Sevilla", "Montevideo")}
JOBS = {"en": ("teacher", "doctor", "baker", "pilot", "nurse", "farmer"),  # consonant first: "a {job}"
        "es": ("periodista", "dentista", "piloto", "artista", "economista", "taxista")}  # any gender
PETS = {"en": ("cats", "dogs", "birds", "fish"), "es": ("gatos", "perros", "pájaros", "peces")}
THINGS = {"en": ("The movie", "The hotel", "The book", "The trip", "The service", "The meal"),
          "es": ("El servicio", "El hotel", "El libro", "El viaje", "El restaurante", "El concierto")}
SENTIMENT = {"en": {"positive": ("excellent", "wonderful", "great", "fantastic", "pleasant"),
                    "negative": ("terrible", "horrible", "boring", "bad", "awful")},
             "es": {"positive": ("excelente", "maravilloso", "genial", "fantástico", "agradable"),
                    "negative": ("terrible", "horrible", "aburrido", "malo", "pésimo")}}
SENTIMENT_LABEL = {"en": {"positive": "positive", "negative": "negative"},
                   "es": {"positive": "positivo", "negative": "negativo"}}
UNITS = {"en": (("kilometers", "meters", 1000), ("meters", "centimeters", 100), ("kilograms", "grams", 1000),
                ("liters", "milliliters", 1000), ("hours", "minutes", 60), ("minutes", "seconds", 60),
                ("days", "hours", 24), ("weeks", "days", 7)),
         "es": (("kilómetros", "metros", 1000), ("metros", "centímetros", 100), ("kilogramos", "gramos", 1000),
                ("litros", "mililitros", 1000), ("horas", "minutos", 60), ("minutos", "segundos", 60),
                ("días", "horas", 24), ("semanas", "días", 7))}

Task = Callable[[random.Random, str], dict]


def _record(instruction: str, response: str, category: str, *, context: str = "", answer: str | None = None,
            reasoning: str | None = None) -> dict:
    return {"instruction": instruction, "context": context, "response": response, "category": category,
            "answer": answer, "tests": None, "reasoning": reasoning}


def arithmetic(rng: random.Random, lang: str) -> dict:
    """a + b, a − b (non-negative) or a small product, answered as an equation."""
    op = rng.choice("+-x")
    if op == "x":
        a, b = rng.randint(2, 12), rng.randint(2, 9)
        result, expr, spoken = a * b, f"{a} × {b}", {"en": f"{a} times {b}", "es": f"{a} por {b}"}[lang]
    else:
        a, b = rng.randint(1, 99), rng.randint(1, 99)
        if op == "-" and b > a:
            a, b = b, a
        result = a + b if op == "+" else a - b
        expr = spoken = f"{a} {op} {b}"
    templates = {"en": ("What is {}?", "Calculate {}.", "Compute {}."),
                 "es": ("¿Cuánto es {}?", "Calcula {}.", "Resuelve {}.")}[lang]
    step = f"{expr} = {result}"
    return _record(rng.choice(templates).format(spoken), f"{step}.", "arithmetic",
                   answer=str(result), reasoning=step)


def word_problem(rng: random.Random, lang: str) -> dict:
    """One- or two-step story problems whose response walks through the steps and states the answer."""
    name, item = rng.choice(NAMES[lang]), rng.choice(ITEMS[lang])
    kind = rng.choice(("more", "less", "groups", "groups_less", "share"))
    en = lang == "en"
    cuantos = "Cuántas" if item in FEMININE else "Cuántos"
    if kind == "more":
        a, b = rng.randint(2, 50), rng.randint(2, 50)
        answer = a + b
        question = (f"{name} has {a} {item} and buys {b} more. How many {item} does {name} have now?" if en else
                    f"{name} tiene {a} {item} y compra {b} más. ¿{cuantos} {item} tiene {name} ahora?")
        steps = f"{a} + {b} = {answer}."
    elif kind == "less":
        a = rng.randint(10, 60)
        b = rng.randint(1, a - 1)
        answer = a - b
        question = (f"{name} has {a} {item} and gives away {b}. How many {item} are left?" if en else
                    f"{name} tiene {a} {item} y regala {b}. ¿{cuantos} {item} le quedan?")
        steps = f"{a} - {b} = {answer}."
    elif kind in ("groups", "groups_less"):
        g, k = rng.randint(2, 9), rng.randint(2, 9)
        product = g * k
        question = (f"{name} has {g} boxes with {k} {item} in each box." if en else
                    f"{name} tiene {g} cajas con {k} {item} en cada caja.")
        steps = f"{g} × {k} = {product}."
        answer = product
        if kind == "groups_less":
            d = rng.randint(1, product - 1)
            answer = product - d
            question += (f" {name} gives away {d}. How many {item} are left?" if en else
                         f" {name} regala {d}. ¿{cuantos} {item} le quedan?")
            steps += f" {product} - {d} = {answer}."
        else:
            question += (f" How many {item} does {name} have?" if en else f" ¿{cuantos} {item} tiene {name}?")
    else:
        k, answer = rng.randint(2, 9), rng.randint(2, 9)
        total = k * answer
        question = (f"{name} shares {total} {item} equally among {k} friends. How many {item} does each friend get?"
                    if en else
                    f"{name} reparte {total} {item} entre {k} amigos por igual. ¿{cuantos} {item} recibe cada amigo?")
        steps = f"{total} / {k} = {answer}."
    closing = f"The answer is {answer}." if en else f"La respuesta es {answer}."
    return _record(question, f"{steps} {closing}", "word_problem", answer=str(answer), reasoning=steps)


def string_task(rng: random.Random, lang: str) -> dict:
    """Reverse a list of words, write a word in capitals, or count a word's letters."""
    words = WORDS[lang]
    kind = rng.choice(("reverse", "upper", "count"))
    en = lang == "en"
    if kind == "reverse":
        chosen = rng.sample(words, rng.randint(3, 5))
        answer = " ".join(reversed(chosen))
        instruction = (f"Reverse the order of these words: {' '.join(chosen)}" if en else
                       f"Invierte el orden de estas palabras: {' '.join(chosen)}")
        return _record(instruction, answer, "string", answer=answer)
    word = rng.choice(words)
    if kind == "upper":
        instruction = (f"Write the word '{word}' in capital letters." if en else
                       f"Escribe la palabra '{word}' en mayúsculas.")
        return _record(instruction, word.upper(), "string", answer=word.upper())
    count = len(word)
    instruction = (f"How many letters does the word '{word}' have?" if en else
                   f"¿Cuántas letras tiene la palabra '{word}'?")
    response = (f"The word '{word}' has {count} letters." if en else f"La palabra '{word}' tiene {count} letras.")
    return _record(instruction, response, "string", answer=str(count))


def sorting(rng: random.Random, lang: str) -> dict:
    """Sort 3–5 numbers up or down."""
    numbers = rng.sample(range(0, 100), rng.randint(3, 5))
    descending = rng.random() < 0.5
    ordered = ", ".join(map(str, sorted(numbers, reverse=descending)))
    listed = ", ".join(map(str, numbers))
    if lang == "en":
        way = "from largest to smallest" if descending else "from smallest to largest"
        instruction = f"Sort these numbers {way}: {listed}."
    else:
        way = "de mayor a menor" if descending else "de menor a mayor"
        instruction = f"Ordena estos números {way}: {listed}."
    return _record(instruction, ordered, "sorting", answer=ordered)


def unit_conversion(rng: random.Random, lang: str) -> dict:
    """Convert 2–9 of a unit into a smaller one."""
    source, target, factor = rng.choice(UNITS[lang])
    value = rng.randint(2, 9)
    result = value * factor
    if lang == "en":
        instruction = f"Convert {value} {source} to {target}."
        response = f"{value} {source} is {result} {target}."
    else:
        instruction = f"Convierte {value} {source} a {target}."
        response = f"{value} {source} son {result} {target}."
    return _record(instruction, response, "unit_conversion", answer=str(result))


def closed_qa(rng: random.Random, lang: str) -> dict:
    """Extract one fact (age, city, job, pets) about a person from a short context."""
    name, city, job = rng.choice(NAMES[lang]), rng.choice(CITIES[lang]), rng.choice(JOBS[lang])
    age, pets, kind = rng.randint(18, 80), rng.randint(2, 9), rng.choice(PETS[lang])
    field = rng.choice(("age", "city", "job", "pets"))
    if lang == "en":
        context = f"{name} is a {job} from {city}. {name} is {age} years old and has {pets} {kind}."
        qa = {"age": (f"How old is {name}?", f"{name} is {age} years old.", str(age)),
              "city": (f"Where is {name} from?", f"{name} is from {city}.", city),
              "job": (f"What is {name}'s job?", f"{name} is a {job}.", job),
              "pets": (f"How many {kind} does {name} have?", f"{name} has {pets} {kind}.", str(pets))}
    else:
        context = f"{name} es {job} y vive en {city}. {name} tiene {age} años y {pets} {kind}."
        qa = {"age": (f"¿Cuántos años tiene {name}?", f"{name} tiene {age} años.", str(age)),
              "city": (f"¿Dónde vive {name}?", f"{name} vive en {city}.", city),
              "job": (f"¿En qué trabaja {name}?", f"{name} es {job}.", job),
              "pets": (f"¿Cuántos {kind} tiene {name}?", f"{name} tiene {pets} {kind}.", str(pets))}
    question, response, answer = qa[field]
    return _record(question, response, "closed_qa", context=context, answer=answer)


def classification(rng: random.Random, lang: str) -> dict:
    """Parity of a number, or the sentiment of a two-clause review."""
    en = lang == "en"
    if rng.random() < 0.5:
        n = rng.randint(1, 999)
        label = ("even" if en else "par") if n % 2 == 0 else ("odd" if en else "impar")
        instruction = f"Is {n} even or odd?" if en else f"¿El número {n} es par o impar?"
        response = f"{n} is {label}." if en else f"{n} es {label}."
        return _record(instruction, response, "classification", answer=label)
    polarity = rng.choice(("positive", "negative"))
    first, second = rng.sample(THINGS[lang], 2)
    adj1, adj2 = rng.sample(SENTIMENT[lang][polarity], 2)
    was = "was" if en else "fue"
    joiner = "and" if en else "y"
    review = f"{first} {was} {adj1} {joiner} {second.lower()} {was} {adj2}."
    label = SENTIMENT_LABEL[lang][polarity]
    instruction = ("Is the sentiment of this review positive or negative?" if en else
                   "¿El sentimiento de esta reseña es positivo o negativo?")
    response = f"The sentiment is {label}." if en else f"El sentimiento es {label}."
    return _record(instruction, response, "classification", context=review, answer=label)


def code(rng: random.Random, lang: str) -> dict:
    """A small stdin→stdout Python program (see :mod:`engine.demo.tasks_code`)."""
    return code_task(rng, lang)


def reasoning_code(rng: random.Random, lang: str) -> dict:
    """A program whose statement names its operation in words (no number to copy; see ``REASONING_FAMILIES``)."""
    return code_task(rng, lang, REASONING_FAMILIES)


#: Instruction-following mix (category generator, weight).
INSTRUCTION_MIX: tuple[tuple[Task, float], ...] = (
    (arithmetic, 1.0), (word_problem, 1.0), (string_task, 1.5), (sorting, 1.0),
    (unit_conversion, 1.0), (closed_qa, 1.0), (classification, 1.0), (code, 1.0),
)
#: Reasoning mix for GRPO: every record has an exact ``answer`` or ``tests``.
REASONING_MIX: tuple[tuple[Task, float], ...] = ((word_problem, 2.0), (arithmetic, 1.0), (reasoning_code, 2.0))


def _generate(n: int, seed: int, languages: Sequence[str], mix: Sequence[tuple[Task, float]],
              prefix: str) -> list[dict]:
    unknown = set(languages) - set(LANGUAGES)
    if unknown or not languages:
        raise ValueError(f"languages must be a non-empty subset of {LANGUAGES}, got {tuple(languages)}")
    if n < 0:
        raise ValueError(f"n must be non-negative, got {n}")
    rng = random.Random(seed)
    tasks, weights = zip(*mix)
    records = []
    for index in range(n):
        lang = languages[index % len(languages)]
        task = rng.choices(tasks, weights=weights)[0]
        record = {"id": f"{prefix}-{lang}-{index:05d}", **task(rng, lang), "language": lang}
        records.append(record)
    return records


def generate_records(n: int, seed: int, languages: Sequence[str] = LANGUAGES) -> list[dict]:
    """``n`` instruction records across all categories, languages alternating, deterministic in ``seed``."""
    return _generate(n, seed, tuple(languages), INSTRUCTION_MIX, "demo")


def generate_reasoning_records(n: int, seed: int, languages: Sequence[str] = LANGUAGES) -> list[dict]:
    """``n`` reasoning records (word problems, arithmetic, code) that all carry ``answer`` or ``tests``."""
    return _generate(n, seed, tuple(languages), REASONING_MIX, "reason")
