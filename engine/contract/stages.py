"""The stage classes: one dataclass per stage kind, holding only the settings blocks that kind reads — as TRL gives
each trainer its own config. ``SFTStage(train)``, ``DistillStage(train, distill, generation)``,
``GRPOStage(train, grpo, generation)``, ``QuantizeStage(quantize, generation)``, ``EvaluateStage(generation)``,
``ExportStage(export)``; :class:`StageSpec` is what they share (kind, name, model).

:func:`read_stage` builds one from a spec file's mapping. A setting that only other kinds use is refused with a
sentence naming it, unless it holds exactly the default: specs written before the stages had classes of their
own carry every block in every stage (the review page dumped them all), and those still load, with one warning
per stage naming what is ignored. Which class a kind has is said by ``stage_kinds.py``. Stdlib only.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

from engine.contract.errors import echo
from engine.contract.spec_fields import (build, check_choice, check_fraction, check_numbers, check_positive, fail,
                                         nested, option)
from engine.contract.stage_specs import DistillSpec, ExportSpec, GenerationSpec, GRPOSpec, QuantizeSpec, TrainSpec
from engine.contract.vocabulary import SFT_FORMATS

log = logging.getLogger(__name__)
NAME_PATTERN = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}"  # stage and display names: they become file names
_REFERENCES_HELP = ("Fraction of training records whose reference answers this stage may use (a seeded choice, the "
                    "same records in every stage). Distillation has the teacher answer the others; SFT simply has "
                    "fewer examples.")
_KIND_HELP = ("What the stage does: one of the kinds of the table in engine/contract/stage_kinds.py; fixed by the "
              "stage's class.")
_MAX_EVAL_HELP = "At most this many held-out records are evaluated (0 = all)."
_EVAL_MINUTES_HELP = ("Minutes the held-out answers may take; fewer samples are used where the device is too slow "
                      "for max_eval_samples (the events and the report say so). 0 = sized to the device: 10 minutes "
                      "on a CPU, no limit on a GPU.")
_DRAFT_HELP = ("Held-out prompts on which each model smaller than the reference is measured as the reference's draft "
               "model (speculative decoding: the share of draft tokens the reference accepts, and the speed-up of "
               "its greedy decoding). 0 = sized to the device: 8 on a CPU, 32 on a GPU; -1 = not measured.")


@dataclass
class StageSpec:
    """One step of the pipeline, as every kind has it. ``model`` names a base model (teacher, student), an earlier
    stage (whose output model it then uses) or a model folder. Built through a kind's own class."""

    kind: str = option("", _KIND_HELP, init=False)
    name: str = option("", "Unique name of the stage; its output model is saved under models/<name>.")
    model: str = option("student", "The model this stage trains, quantizes or exports: teacher, student, an "
                        "earlier stage's name or a model folder.")

    BLOCKS: ClassVar[dict[str, type]] = {}  # settings groups of this kind: field name → settings class
    ALWAYS_WRITTEN: ClassVar[tuple[str, ...]] = ("kind", "name", "model")  # dump_spec keeps these

    def __post_init__(self) -> None:
        if type(self) is StageSpec:
            raise TypeError("StageSpec is what every stage shares; build a kind's class (SFTStage, DistillStage, "
                            "…) or use engine.contract.stage_kinds.build_stage")
        check_numbers(self, self.name if isinstance(self.name, str) and self.name else "stage")
        if not self.name:
            self.name = self.kind
        # the name becomes a folder name (models/<name>): never '.', '..' or a hidden or over-long name
        if not isinstance(self.name, str) or not re.fullmatch(NAME_PATTERN, self.name):
            fail("stage.name", f"{echo(self.name)} must start with a letter, digit or '_', use only letters, digits, "
                  "'_', '.' and '-', and have at most 64 characters.")
        if not isinstance(self.model, str) or not self.model.strip():
            fail(f"{self.name}.model", "is empty; name teacher, student, an earlier stage or a model folder.")
        for key, cls in self.BLOCKS.items():
            setattr(self, key, nested(cls, getattr(self, key), f"{self.name}.{key}"))

    def model_refs(self) -> dict[str, str]:
        """Where this stage names a model (field → reference), checked against the stages before it."""
        return {"model": self.model}


@dataclass
class SFTStage(StageSpec):
    """Supervised fine-tuning of ``model`` on the references."""

    kind: str = option("sft", _KIND_HELP, init=False)
    train: TrainSpec = option(default_factory=TrainSpec, help="Optimisation settings.")
    references: float = option(1.0, _REFERENCES_HELP)
    format: str = option("plain", "How examples are written: plain (the data preset's prompt and response) or "
                         "cot_template (a cold start for GRPO: the prompt in the template of the GRPO stage that "
                         "starts from this one — grpo.template, by default engine/contract/cot_template.py's — and "
                         "the response <think>reasoning</think> <answer>answer</answer>, the format the GRPO "
                         "rewards score; records without a reasoning trace are left out).")

    BLOCKS: ClassVar[dict[str, type]] = {"train": TrainSpec}

    def __post_init__(self) -> None:
        super().__post_init__()
        check_fraction(f"{self.name}.references", self.references, open_low=True)
        check_choice(f"{self.name}.format", self.format, SFT_FORMATS)


@dataclass
class DistillStage(StageSpec):
    """Distillation of ``model`` (the student) from ``teacher``, by the method in ``distill``."""

    kind: str = option("distill", _KIND_HELP, init=False)
    teacher: str = option("teacher", "The teacher model: teacher, student, an earlier stage's name or a model "
                          "folder.")
    train: TrainSpec = option(default_factory=TrainSpec, help="Optimisation settings.")
    distill: DistillSpec = option(default_factory=DistillSpec, help="Distillation settings.")
    generation: GenerationSpec = option(default_factory=GenerationSpec, help="How the teacher answers prompts "
                                        "(sequence-level KD, and token KD's prompts without references).")
    references: float = option(1.0, _REFERENCES_HELP)

    BLOCKS: ClassVar[dict[str, type]] = {"train": TrainSpec, "distill": DistillSpec, "generation": GenerationSpec}

    def __post_init__(self) -> None:
        super().__post_init__()
        check_fraction(f"{self.name}.references", self.references, open_low=True)

    def model_refs(self) -> dict[str, str]:
        return {"model": self.model, "teacher": self.teacher}


@dataclass
class GRPOStage(StageSpec):
    """Chain-of-thought GRPO of ``model`` with the rewards in ``grpo``, scored on held-out prompts after."""

    kind: str = option("grpo", _KIND_HELP, init=False)
    train: TrainSpec = option(default_factory=TrainSpec, help="Optimisation settings.")
    grpo: GRPOSpec = option(default_factory=GRPOSpec, help="GRPO settings.")
    generation: GenerationSpec = option(default_factory=GenerationSpec, help="Generation settings of the "
                                        "held-out scoring (its batch size).")
    max_eval_samples: int = option(200, high=10 ** 9, help=_MAX_EVAL_HELP)

    BLOCKS: ClassVar[dict[str, type]] = {"train": TrainSpec, "grpo": GRPOSpec, "generation": GenerationSpec}

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(f"{self.name}.max_eval_samples", self.max_eval_samples, allow_zero=True)


@dataclass
class QuantizeStage(StageSpec):
    """4-bit quantization of ``model``, with a before/after report on held-out records."""

    kind: str = option("quantize", _KIND_HELP, init=False)
    quantize: QuantizeSpec = option(default_factory=QuantizeSpec, help="Quantization settings.")
    generation: GenerationSpec = option(default_factory=GenerationSpec, help="Generation settings of the report.")
    max_eval_samples: int = option(200, high=10 ** 9, help=_MAX_EVAL_HELP)
    eval_minutes: float = option(0.0, high=10 ** 6, help=_EVAL_MINUTES_HELP)

    BLOCKS: ClassVar[dict[str, type]] = {"quantize": QuantizeSpec, "generation": GenerationSpec}

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(f"{self.name}.max_eval_samples", self.max_eval_samples, allow_zero=True)
        check_positive(f"{self.name}.eval_minutes", self.eval_minutes, allow_zero=True)


@dataclass
class EvaluateStage(StageSpec):
    """Answers of each model in ``models`` (or of ``model`` alone) on the test split: ROUGE-L, exact match, and
    retention against ``reference``."""

    kind: str = option("evaluate", _KIND_HELP, init=False)
    models: dict = option({}, "Display name → model reference, e.g. {teacher: teacher_sft}; empty: model alone.")
    reference: str = option("teacher", "The display name that retention is measured against.")
    generation: GenerationSpec = option(default_factory=GenerationSpec, help="Generation settings.")
    max_eval_samples: int = option(200, high=10 ** 9, help=_MAX_EVAL_HELP)
    eval_minutes: float = option(0.0, high=10 ** 6, help=_EVAL_MINUTES_HELP)
    draft_samples: int = option(0, high=10 ** 6, help=_DRAFT_HELP)

    BLOCKS: ClassVar[dict[str, type]] = {"generation": GenerationSpec}

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.models, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                        for k, v in self.models.items()):
            fail(f"{self.name}.models", "must map display names to model references (text), e.g. "
                  "{teacher: teacher_sft}.")
        for display in self.models:  # a display name becomes a file name (predictions-<name>.jsonl) too
            if not re.fullmatch(NAME_PATTERN, display):
                fail(f"{self.name}.models", f"display name {echo(display)} must start with a letter, digit or '_', use "
                      "only letters, digits, '_', '.' and '-', and have at most 64 characters.")
        if self.models and self.reference not in self.models:
            fail(f"{self.name}.reference", f"{echo(self.reference)} is not one of the evaluated models "
                  f"({', '.join(self.models)}).")
        check_positive(f"{self.name}.max_eval_samples", self.max_eval_samples, allow_zero=True)
        check_positive(f"{self.name}.eval_minutes", self.eval_minutes, allow_zero=True)
        if self.draft_samples < -1:
            fail(f"{self.name}.draft_samples", f"must be -1 (off), 0 (sized to the device) or a count, not "
                 f"{self.draft_samples}.")

    def model_refs(self) -> dict[str, str]:
        return {"model": self.model, **{f"models.{k}": v for k, v in self.models.items()}}


@dataclass
class ExportStage(StageSpec):
    """GGUF files (and an Ollama Modelfile) of ``model``."""

    kind: str = option("export", _KIND_HELP, init=False)
    export: ExportSpec = option(default_factory=ExportSpec, help="GGUF export settings.")

    BLOCKS: ClassVar[dict[str, type]] = {"export": ExportSpec}


def _is_default(cls: type, key: str, value: Any) -> bool:
    """Whether ``value`` is what a class that has field ``key`` holds by default (a block: built and compared)."""
    f = next(f for f in dataclasses.fields(cls) if f.name == key)
    default = f.default if f.default_factory is dataclasses.MISSING else f.default_factory()
    if dataclasses.is_dataclass(default):
        try:
            return isinstance(value, dict) and build(type(default), value, key) == default
        except Exception:  # noqa: BLE001 - a block that does not even build is not the default
            return False
    return value == default


def read_stage(cls: type[StageSpec], values: dict, where: str, others: dict[str, list[type[StageSpec]]]) -> StageSpec:
    """Stage ``cls`` from a spec file's mapping. ``others`` names, for every setting some stage class has, the
    classes that have it: a setting only other kinds have is refused by name, or, holding exactly the default (as
    specs written before the stages had classes of their own do), dropped with one warning naming what is
    ignored."""
    own = {f.name for f in dataclasses.fields(cls)}
    name = values.get("name") or cls.kind
    ignored = []
    for key in [k for k in values if k not in own and k in others]:
        if not any(_is_default(c, key, values[key]) for c in others[key]):
            what = f"a {key!r} block" if any(key in c.BLOCKS for c in others[key]) else f"{key!r}"
            kinds = [c.kind for c in others[key]]
            fail(where, f"stage {echo(name)} ({cls.kind}) has {what}, which only {_words(kinds)} stages use: remove "
                 "it.")
        ignored.append(key)
    if ignored:
        log.warning("stage %s (%s): ignoring %s, which %s stages do not use (each holds its default, as specs "
                    "written by earlier versions do); remove %s.", echo(name), cls.kind, ", ".join(ignored), cls.kind,
                    "it" if len(ignored) == 1 else "them")
    return build(cls, {k: v for k, v in values.items() if k not in ignored}, where)


def _words(kinds: list[str]) -> str:
    return kinds[0] if len(kinds) == 1 else ", ".join(kinds[:-1]) + " and " + kinds[-1]


class _Notes(logging.Handler):
    def __init__(self, notes: list[str]) -> None:
        super().__init__(logging.WARNING)
        self.notes = notes

    def emit(self, record: logging.LogRecord) -> None:
        self.notes.append(record.getMessage())


@contextlib.contextmanager
def spec_warnings() -> Iterator[list[str]]:
    """The warnings given while specs are read inside the block (settings an older version wrote that are
    ignored), as sentences, for a reader that shows them to a person rather than to a log."""
    notes: list[str] = []
    handler = _Notes(notes)
    log.addHandler(handler)
    try:
        yield notes
    finally:
        log.removeHandler(handler)
