"""The named data sets of the paper, each as: where it lives, how its columns become canonical records, and how
a record is put to the model (the prompt template).

Column names were checked against the data sets' hub cards and the code of projects that load them:

- ``dolly_en``  databricks/databricks-dolly-15k (train): instruction, context, response, category.
- ``dolly_es``  argilla/databricks-dolly-15k-curated-multilingual, split ``es`` (splits are languages: de, en,
  es, fr): instruction, context, response, category (the Spanish translation) plus instruction_original_en,
  context_original_en, response_original_en (the English source, unused) and an integer id.
- ``bugnet``    alexjercan/bugnet, config ``Python``, read through its parquet export (revision refs/convert/parquet:
  the main branch holds a loading script, bugnet.py, next to its JSONL files, and datasets ≥ 4 refuses any
  repository with a script): problem_id, language, original_status, fail (buggy code),
  pass (accepted code), change (replace/insert/delete), i1, i2, j1, j2, error, stderr, description, input,
  output. Prompt: the buggy program and its error (stderr, else error); target: the fixed program; the
  input/output pair becomes a test; change is the category (per-category scores by kind of edit).
- ``pytorrent`` 0n1xus/pytorrent-standalone (PyTorrent's standalone functions; its parquet export, revision
  refs/convert/parquet, as the main branch holds a loading script that datasets ≥ 4 no longer runs):
  CodeSearchNet/CodeXGLUE columns docstring → code (func_name, repo, path, …). The docstring literal is cut
  out of the target code so the answer does not contain the prompt. The column names follow the CodeXGLUE
  code-to-text schema the loader script declares; any docstring/code file works through data.columns.
- ``codeforces_cot`` open-r1/codeforces-cots, config ``solutions_py``: id, title, description, input_format,
  output_format, note, examples (list of {input, output}), prompt, generation (DeepSeek-R1's
  ``<think>…</think>`` then the solution), … The instruction is rebuilt from the statement fields (the
  ``prompt`` column carries a long generation instruction), examples become tests and the visible examples of
  the prompt, the think part becomes ``reasoning`` and what follows it the ``response``.

Stdlib only: the GUI lists presets and their templates without importing the ML stack.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from engine.contract.data.records import ColumnRef, identity_mapping

Finish = Callable[[dict, Mapping[str, Any]], dict]


@dataclass(frozen=True)
class Template:
    """How one record becomes the user message: ``body`` for records without context, ``with_context`` for those
    with one; ``{instruction}`` and ``{context}`` are the slots (filled stripped of surrounding whitespace)."""

    body: str = "{instruction}"
    with_context: str = "{instruction}\n\nContext: {context}"

    def render(self, instruction: str, context: str) -> str:
        text = self.with_context if context.strip() else self.body
        return text.replace("{instruction}", instruction.strip()).replace("{context}", context.strip())


@dataclass(frozen=True)
class Preset:
    name: str
    title: str
    description: str
    hub_id: str = ""  # empty: not on the hub (demo kit, local file)
    config: str | None = None
    split: str = "train"
    revision: str | None = None
    columns: Mapping[str, ColumnRef] = field(default_factory=identity_mapping)
    language: str = "en"  # default for records without a language column
    category: str = "general"  # default for records without a category
    templates: Mapping[str, Template] = field(default_factory=lambda: {"en": Template()})
    row_filter: Mapping[str, str] = field(default_factory=dict)  # keep rows whose column equals the value
    finish: Finish | None = None  # adjusts a canonical record from its raw row (derived fields)
    code: bool = False  # answers are programs (fences stripped before scoring)
    license: str = ""

    def template_for(self, language: str) -> Template:
        return self.templates.get(language) or self.templates.get(self.language) or next(iter(self.templates.values()))

    @property
    def on_hub(self) -> bool:
        return bool(self.hub_id)

    def accepts(self, row: Any) -> bool:
        """Row filters (e.g. BugNet's Python rows) apply only where the row has that column."""
        if not isinstance(row, Mapping):
            return True
        return all(row.get(column, wanted) == wanted for column, wanted in self.row_filter.items())


# ------------------------------------------------------------------ derived fields ---------------------------------

def _bugnet_finish(record: dict, row: Mapping[str, Any]) -> dict:
    """The test case of the row (stdin → expected stdout) becomes ``tests``."""
    if record["tests"] is None and isinstance(row.get("input"), str) and isinstance(row.get("output"), str):
        record["tests"] = [{"input": row["input"], "output": row["output"]}]
    return record


_DOCSTRING = re.compile(r'[ \t]*[rRuUbB]{0,2}("""|\'\'\')(.*?)\1[ \t]*\n?', re.DOTALL)


def _pytorrent_finish(record: dict, row: Mapping[str, Any]) -> dict:
    """Cut the docstring literal out of the function (CodeSearchNet's ``code`` keeps it)."""
    code = record["response"]
    for match in _DOCSTRING.finditer(code):
        words = record["instruction"].split()[:6]
        if all(w in match.group(2) for w in words):
            stripped = code[:match.start()] + code[match.end():]
            if stripped.strip():
                record["response"] = stripped
            break
    return record


_THINK = re.compile(r"^\s*<think>(.*?)</think>\s*(.*)$", re.DOTALL)


def _codeforces_finish(record: dict, row: Mapping[str, Any]) -> dict:
    """Statement from its parts, examples as visible context and as tests, R1's think part as reasoning."""
    parts = [f"# {row['title']}" if row.get("title") else "", row.get("description") or "",
             f"## Input Format\n{row['input_format']}" if row.get("input_format") else "",
             f"## Output Format\n{row['output_format']}" if row.get("output_format") else "",
             f"## Note\n{row['note']}" if row.get("note") else ""]
    if row.get("description"):
        record["instruction"] = "\n\n".join(p.strip() for p in parts if p and p.strip())
    examples = record["tests"] or []
    if examples and not record["context"]:
        record["context"] = "\n\n".join(f"Input:\n{t['input'].rstrip()}\nOutput:\n{t['output'].rstrip()}"
                                        for t in examples)
    match = _THINK.match(record["response"])
    if match:
        record["reasoning"] = record["reasoning"] or match.group(1).strip()
        answer = match.group(2).strip()
        record["response"] = answer or record["response"]
    return record


# ------------------------------------------------------------------ the presets ------------------------------------

_PLAIN_EN = Template("{instruction}", "{instruction}\n\nContext: {context}")
_PLAIN_ES = Template("{instruction}", "{instruction}\n\nContexto: {context}")
# The demo kit's vocabulary covers exactly these joins (engine.demo.kit.coverage_texts).
_DEMO = Template("{instruction}", "{instruction}\n\n{context}")
_DOLLY_ES = Template("Responde en español a la siguiente instrucción.\n\n{instruction}",
                     "Responde en español a la siguiente instrucción usando el contexto.\n\n{instruction}\n\n"
                     "Contexto: {context}")
_BUGNET = Template("Fix the bug in this Python program. Reply with the whole corrected program only.\n\n"
                   "```python\n{instruction}\n```",
                   "Fix the bug in this Python program. Running it failed with this error:\n{context}\n\n"
                   "```python\n{instruction}\n```\n\nReply with the whole corrected program only.")
_PYTORRENT = Template("Write a Python function that does the following:\n{instruction}",
                      "Write a Python function that does the following:\n{instruction}\n\n{context}")
_CODEFORCES = Template("Solve this competitive programming problem in Python 3. Read the input from standard "
                       "input and write the answer to standard output.\n\n{instruction}",
                       "Solve this competitive programming problem in Python 3. Read the input from standard "
                       "input and write the answer to standard output.\n\n{instruction}\n\n## Examples\n{context}")

PRESETS: dict[str, Preset] = {p.name: p for p in (
    Preset("demo", "Demo kit: instructions", "Generated English and Spanish tasks with exact references (the "
           "embedded demo; no network).", templates={"en": _DEMO}, category="demo"),
    Preset("demo_reasoning", "Demo kit: reasoning", "Generated word problems, arithmetic and small programs with "
           "answers, reasoning traces and tests (for GRPO).", templates={"en": _DEMO}, category="demo"),
    Preset("dolly_en", "Dolly-15k (English)", "databricks-dolly-15k: 15k human-written instruction/response "
           "pairs in 8 categories.", hub_id="databricks/databricks-dolly-15k",
           columns={"instruction": "instruction", "context": "context", "response": "response",
                    "category": "category", "id": "id"},
           templates={"en": _PLAIN_EN, "es": _PLAIN_ES}, license="CC BY-SA 3.0"),
    Preset("dolly_es", "Dolly-15k (Spanish)", "Argilla's curated multilingual Dolly, Spanish translation.",
           hub_id="argilla/databricks-dolly-15k-curated-multilingual", split="es", language="es",
           columns={"instruction": "instruction", "context": "context", "response": "response",
                    "category": "category", "id": "id"},
           templates={"es": _DOLLY_ES, "en": _PLAIN_EN}, license="CC BY-SA 3.0"),
    Preset("bugnet", "BugNet (Python)", "CodeNet submissions that failed, their error, and the user's accepted "
           "fix.", hub_id="alexjercan/bugnet", config="Python", revision="refs/convert/parquet",
           columns={"instruction": "fail", "context": ("stderr", "error"), "response": "pass",
                    "category": "change", "id": "id", "tests": "tests"},
           row_filter={"language": "Python"}, templates={"en": _BUGNET}, category="fix", finish=_bugnet_finish,
           code=True, license="CodeNet: Apache-2.0"),
    Preset("pytorrent", "PyTorrent (docstring → code)", "Python functions from PyPI libraries with their "
           "docstrings.", hub_id="0n1xus/pytorrent-standalone", revision="refs/convert/parquet",
           columns={"instruction": "docstring", "response": ("code", "original_string"), "id": "id",
                    "category": "category"},
           templates={"en": _PYTORRENT}, category="function", finish=_pytorrent_finish, code=True),
    Preset("codeforces_cot", "Codeforces CoT (Python)", "Codeforces problems with DeepSeek-R1 reasoning traces "
           "and Python solutions; examples as tests.", hub_id="open-r1/codeforces-cots", config="solutions_py",
           columns={"instruction": ("description", "prompt"), "response": "generation", "tests": "examples",
                    "id": "id", "category": "contest_type", "reasoning": "reasoning", "context": "context"},
           row_filter={"finish_reason": "stop"}, templates={"en": _CODEFORCES}, category="codeforces",
           finish=_codeforces_finish, code=True,
           license="CC BY 4.0"),
    Preset("local", "Local file", "Your own JSONL, JSON, CSV or Parquet file with a column mapping.",
           templates={"en": _PLAIN_EN, "es": _PLAIN_ES}),
    Preset("hub", "Any Hugging Face hub data set (id, config, split)", "Any data set on the Hugging Face hub "
           "(data.hub_id, hub_config, split) in instruction/response columns, Alpaca, ShareGPT or messages form.",
           templates={"en": _PLAIN_EN, "es": _PLAIN_ES}),
)}


def preset_for(spec: Any) -> Preset:
    """The preset of a DataSpec; the hub preset gets the spec's data set id, configuration and split."""
    preset = get_preset(spec.preset)
    if preset.name == "hub":
        from dataclasses import replace

        return replace(preset, hub_id=str(spec.hub_id).strip(), config=str(spec.hub_config).strip() or None,
                       split=str(spec.split).strip() or "train")
    return preset


def get_preset(preset: str | Preset) -> Preset:
    """A preset by name (or the preset itself); ValueError naming the known ones."""
    if isinstance(preset, Preset):
        return preset
    try:
        return PRESETS[preset]
    except KeyError:
        raise ValueError(f"data.preset: {preset!r} is not one of {', '.join(PRESETS)}.") from None


def render_prompt(record: Mapping[str, Any], preset: str | Preset) -> str:
    """The user message for a record: the preset's template in the record's language."""
    p = get_preset(preset)
    template = p.template_for(str(record.get("language") or p.language))
    return template.render(str(record["instruction"]), str(record.get("context") or ""))
