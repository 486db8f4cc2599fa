"""Run specs: the typed, validated description of one Compression Studio run.

A run is a list of stages (teacher SFT, student SFT, distillation, GRPO, quantization, evaluation) over one data
set and two base models. Specs are read and written as YAML or JSON; every field carries help text (reused as GUI
tooltips) and every ``__post_init__`` rejects bad values with one sentence naming the field.

Stdlib only (PyYAML imported lazily): the studio imports this module, so it must never pull in torch.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import ClassVar
from pathlib import Path

# The F401s below: re-exported names; spec.py is the contract's front door for the studio and the engine.
from engine.contract.bounded_text import MAX_SPEC_BYTES, parse_bounded, read_spec_file  # noqa: F401
from engine.contract.errors import SpecError, echo  # SpecError re-exported
from engine.contract.spec_fields import (DEFAULT_HIGH, SEED_HIGH, STEPS_HIGH, TOKENS_HIGH, build,  # noqa: F401
                                         changed_only, check_choice, check_finite, check_fraction, check_numbers,
                                         check_positive, check_value, fail, field_help, nested, option, to_dict,
                                         updated)
from engine.contract.stage_kinds import STAGE_KIND_TABLE, STAGE_KINDS, build_stage, stage_kind  # noqa: F401
from engine.contract.stage_specs import (DistillSpec, ExportSpec, GenerationSpec, GRPOSpec, LoraSpec,  # noqa: F401
                                         QuantizeSpec, RewardSpec, TeacherCacheSpec, TrainSpec)
from engine.contract.stages import (DistillStage, EvaluateStage, ExportStage, GRPOStage,  # noqa: F401
                                    QuantizeStage, SFTStage, StageSpec, spec_warnings)
from engine.contract.vocabulary import (BASE_MODELS, DATA_FORMATS, DATA_PRESETS, DEVICES, DIVERGENCES,  # noqa: F401
                                        DISTRIBUTED_CONFIG_PREFIX, DISTRIBUTED_STRATEGIES, DTYPES, GGUF_FORMATS,
                                        KD_METHODS, PRECISIONS, QUANT_TYPES, REPORT_TO, REWARDS, SCHEDULERS,
                                        SFT_FORMATS)


@dataclass
class ModelSpec:
    ALWAYS_WRITTEN: ClassVar[tuple[str, ...]] = ("source",)  # dump_spec keeps these
    source: str = option("demo:teacher", "Where the model comes from: a hub id (Qwen/Qwen2.5-0.5B-Instruct), a local "
                         "folder, a .gguf file, or demo:teacher / demo:student for the embedded demo kit.")
    dtype: str = option("auto", "Weights dtype for inference (a frozen teacher, evaluation, chat): auto (bfloat16 on "
                        "a GPU that supports it, else float32), float32, bfloat16 or float16. A model being trained "
                        "loads in its stage's train.precision instead (fp32 master weights unless bf16-pure).")
    load_in_4bit: bool = option(False, "Load the weights in 4-bit NF4 (bitsandbytes) to save memory, e.g. for a "
                                "large frozen teacher.")
    revision: str = option("", "Hub revision (branch, tag or commit); empty for the default.")

    def __post_init__(self) -> None:
        check_numbers(self, "model")
        if not str(self.source).strip():
            fail("model.source", "is empty; give a hub id, a local folder, a .gguf file or demo:teacher.")
        check_choice("model.dtype", self.dtype, DTYPES)


@dataclass
class DataSpec:
    ALWAYS_WRITTEN: ClassVar[tuple[str, ...]] = ("preset",)  # dump_spec keeps these
    preset: str = option("demo", "Data set: demo, demo_reasoning, dolly_en, dolly_es, bugnet, pytorrent, "
                         "codeforces_cot, local (a JSONL/JSON/CSV/Parquet file given in path), or hub (any data set "
                         "on the Hugging Face hub, given in hub_id).")
    path: str = option("", "Local file (local preset), or a local copy of a preset's or hub data set's data to use "
                       "instead of the hub.")
    hub_id: str = option("", "Hub preset: the data set's id on the Hugging Face hub, e.g. tatsu-lab/alpaca or "
                         "HuggingFaceH4/no_robots.")
    hub_config: str = option("", "Hub preset: the data set's configuration (subset), if it has several.")
    split: str = option("train", "Hub preset: the split to read, e.g. train or train_sft.")
    format: str = option("auto", "How rows are laid out: auto (detected from the columns), columns (instruction/"
                         "response columns, see columns), alpaca (instruction, input, output), sharegpt "
                         "(conversations: [{from, value}]) or messages (OpenAI: [{role, content}]). Chat formats "
                         "train on every assistant turn.")
    columns: dict = option({}, "Column mapping: canonical name → column in the data. Canonical names: instruction "
                           "(required), response (required for training), context, category, answer, tests, id, "
                           "and messages (the conversation column of chat data).")
    roles: dict = option({}, "Chat formats: role names in the data → user, assistant or system (human/gpt/system, "
                         "user/assistant and bot/model are known already).")
    max_samples: int = option(0, high=10 ** 9, help="Use at most this many records (0 = all); applied before "
                              "splitting.")
    validation_fraction: float = option(0.05, "Fraction of records held out for validation during training.")
    test_fraction: float = option(0.1, "Fraction of records held out for the final evaluation.")
    max_length: int = option(512, high=TOKENS_HIGH, help="Truncate prompt + response to this many tokens.")
    seed: int = option(0, high=SEED_HIGH, help="Seed of the train/validation/test split.")

    def __post_init__(self) -> None:
        check_numbers(self, "data")
        check_choice("data.preset", self.preset, DATA_PRESETS)
        if self.preset == "local" and not str(self.path).strip():
            fail("data.path", "is empty; the local preset needs the path of a JSONL, JSON, CSV or Parquet file.")
        if self.preset == "hub" and not re.fullmatch(r"[\w.-]+(/[\w.-]+)?", str(self.hub_id).strip()):
            fail("data.hub_id", f"{echo(self.hub_id)} is not a hub data set id; the hub preset needs one like "
                  "tatsu-lab/alpaca.")
        check_choice("data.format", self.format, DATA_FORMATS)
        if not str(self.split).strip():
            fail("data.split", "is empty; name the split to read, e.g. train.")
        if not isinstance(self.columns, dict):
            fail("data.columns", f"must map canonical names to column names, got {echo(self.columns)}.")
        if not isinstance(self.roles, dict) or any(v not in ("user", "assistant", "system")
                                                   for v in self.roles.values()):
            fail("data.roles", f"must map role names in the data to user, assistant or system, got {echo(self.roles)}.")
        check_positive("data.max_samples", self.max_samples, allow_zero=True)
        check_positive("data.seed", self.seed, allow_zero=True)
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in self.columns.items()):
            fail("data.columns", "must map canonical names to column names (text), e.g. {instruction: question}.")
        check_fraction("data.validation_fraction", self.validation_fraction, open_high=True)
        check_fraction("data.test_fraction", self.test_fraction, open_high=True)
        if self.validation_fraction + self.test_fraction >= 1:
            fail("data.test_fraction", "validation_fraction + test_fraction must leave records for training.")
        if not isinstance(self.max_length, int) or self.max_length < 16:
            fail("data.max_length", f"must be an integer ≥ 16, got {echo(self.max_length)}.")


@dataclass
class RunSpec:
    # dump_spec keeps these even at their defaults: a spec file always says its models, data and stages
    ALWAYS_WRITTEN: ClassVar[tuple[str, ...]] = ("name", "teacher", "student", "data", "stages")
    name: str = option("run", "A short name for the run (shown in the run history).")
    teacher: ModelSpec = option(default_factory=lambda: ModelSpec("demo:teacher"), help="The large model.")
    student: ModelSpec = option(default_factory=lambda: ModelSpec("demo:student"), help="The small model.")
    data: DataSpec = option(default_factory=DataSpec, help="The task data.")
    stages: list = option([], "The pipeline, in order.")
    device: str = option("auto", "Where to train: auto (CUDA, then MPS, then CPU), cuda, mps or cpu.")
    processes: int = option(1, high=4096, help="Processes (one per GPU) started through accelerate launch; 1 = a "
                            "plain process.")
    distributed: str = option(DISTRIBUTED_STRATEGIES[0], "How several processes share the work: "
                              + ", ".join(DISTRIBUTED_STRATEGIES) + f", or {DISTRIBUTED_CONFIG_PREFIX}"
                              "/path/to/accelerate.yaml.")
    report_to: list = option([], "Experiment trackers the training stages also report to, when installed: "
                             + ", ".join(REPORT_TO) + ". TensorBoard event files are written to the run folder's "
                             "tensorboard/ in any case.")
    cpu_threads: int = option(0, high=1 << 16, help="CPU threads for torch when training on the CPU (0 = torch's "
                              "default, one per "
                              "core). Tiny models run faster on one thread: thread start-up costs more than "
                              "their matrix products.")

    def __post_init__(self) -> None:
        check_numbers(self, "")
        if not isinstance(self.name, str) or not self.name.strip() or len(self.name) > 200:
            fail("name", f"must be a short text (1 to 200 characters), got {echo(self.name, 40)}.")
        for key, cls in (("teacher", ModelSpec), ("student", ModelSpec), ("data", DataSpec)):
            setattr(self, key, nested(cls, getattr(self, key), key))
        if not isinstance(self.stages, list):
            fail("stages", "must be a list of stages.")
        self.stages = [build_stage(s, f"stages[{i}]") for i, s in enumerate(self.stages)]
        if not self.stages:
            fail("stages", f"is empty; add at least one stage ({', '.join(STAGE_KINDS[:-1])} or {STAGE_KINDS[-1]}).")
        check_choice("device", self.device, DEVICES)
        check_positive("processes", self.processes)
        check_positive("cpu_threads", self.cpu_threads, allow_zero=True)
        if isinstance(self.report_to, str):
            self.report_to = [self.report_to] if self.report_to not in ("", "none") else []
        if not isinstance(self.report_to, list):
            fail("report_to", f"must be a list of tracker names, got {echo(self.report_to)}.")
        for name in self.report_to:
            check_choice("report_to", name, tuple(REPORT_TO))
        if (self.distributed not in DISTRIBUTED_STRATEGIES
                and not str(self.distributed).startswith(DISTRIBUTED_CONFIG_PREFIX)):
            fail("distributed", f"{echo(self.distributed)} is not one of {', '.join(DISTRIBUTED_STRATEGIES)} or "
                 f"{DISTRIBUTED_CONFIG_PREFIX}PATH.")
        self._check_references()

    def _check_references(self) -> None:
        known = set(BASE_MODELS)
        for stage in self.stages:
            if stage.name in known:
                fail(f"stages.{stage.name}", "names a stage like an earlier stage or a base model; rename it.")
            refs = stage.model_refs()
            for where, ref in refs.items():
                if ref not in known and not _looks_like_path(ref):
                    fail(f"{stage.name}.{where}", f"{echo(ref)} is neither teacher, student, an earlier stage "
                          f"({', '.join(sorted(known - set(BASE_MODELS))) or 'none yet'}) nor a model folder.")
            known.add(stage.name)

    def stage(self, name: str) -> StageSpec:
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise KeyError(name)


def _looks_like_path(ref: str) -> bool:
    return "/" in ref or ref.startswith(("~", ".", "demo:")) or ref.endswith(".gguf")


def load_spec(path: str | Path) -> RunSpec:
    """Read a run spec from a .yaml/.yml or .json file; SpecError names the file and the field."""
    path = Path(path)
    text = read_spec_file(path)
    try:
        values = parse_spec_text(text, json_format=path.suffix.lower() == ".json")
        return build(RunSpec, values, "spec")
    except SpecError as exc:
        raise SpecError(f"{path}: {exc}") from None


def parse_spec_text(text: str, *, json_format: bool = False) -> dict:
    """The mapping in a spec's text, refusing resource bombs (alias expansion, nesting, size) with a sentence."""
    values = parse_bounded(text, json_format=json_format)
    if not isinstance(values, dict):
        raise SpecError("the spec must be a mapping with name, teacher, student, data and stages.")
    return values


def dump_spec(spec: RunSpec, path: str | Path | None = None) -> str:
    """YAML text of a spec (written to ``path`` when given; .json paths get JSON): what differs from the
    defaults, and each stage's kind and name, so that it is about the size of what was written; loading it
    gives the same spec back."""
    data = changed_only(spec)
    if path is not None and Path(path).suffix.lower() == ".json":
        text = json.dumps(data, indent=2)
    else:
        import yaml

        # flow style for blocks of plain values ({learning_rate: 2.0e-05, epochs: 3.0}): a spec reads as written
        text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True, default_flow_style=None, width=110)
    if path is not None:
        Path(path).write_text(text, encoding="utf-8")
    return text


def base_model_of(spec: RunSpec, ref: str) -> str:
    """The base model (teacher/student/path) a stage's output descends from; its tokenizer is the same."""
    names = {s.name: s for s in spec.stages}
    while ref in names:
        ref = names[ref].model
    return ref
