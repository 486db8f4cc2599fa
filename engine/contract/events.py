"""One typed payload per event type: every key an event's ``data`` may carry (TypedDicts, so both sides can be
type-checked), which of them it must carry, and :func:`payload_problems`, which says what an event lacks or carries
undeclared. The wire format itself is :mod:`engine.contract.protocol`. Stdlib only.

The payloads are closed: the test suite sets :data:`STRICT_ENV`, under which every EventWriter — the pipeline's
stages, the chat service, the CLI's tools and the studio's stand-ins, in-process or as child processes — refuses
an event carrying a key its type does not declare. A new key is declared here first, where the studio's reader
sees it. (Missing required keys are checked over a whole demo run, tests/integration/test_pipeline.py: unit tests
of the writer emit partial events on purpose.)
"""
# No `from __future__ import annotations` here: TypedDict reads NotRequired[...] only from evaluated annotations.
import sys
from typing import Any, TypedDict

if sys.version_info >= (3, 11):
    from typing import NotRequired
else:  # Python 3.10 has no NotRequired (the contract must still import there: the studio starts on it). The keys
    # then count as required in missing_keys, a check only the test suite (Python 3.11, CI's) makes.
    class NotRequired:
        def __class_getitem__(cls, item: Any) -> Any:
            return item

STRICT_ENV = "COMPRESSION_STRICT_EVENTS"  # "1": EventWriter.emit refuses an event with undeclared keys


class HelloData(TypedDict):
    engine_version: str
    pid: int
    command: str
    protocol: int


class StatusData(TypedDict):
    state: str  # running | cancelling | finished | cancelled | failed
    stage: str
    message: str
    index: NotRequired[int]  # the stage's place in the pipeline, 1-based, on the status that starts a stage
    count: NotRequired[int]
    plan: NotRequired[list[dict[str, Any]]]  # every stage's {stage, kind, model, steps}, on the status that starts one


class SweepPoint(TypedDict):
    index: int  # 0-based place of the learning rate being trained in the sweep
    count: int  # how many rates the sweep trains
    learning_rate: float


class ProgressData(TypedDict):
    stage: str
    step: int
    total: int
    fraction: float  # of this training (of this sweep point's, in a sweep)
    elapsed_s: float
    eta_s: float | None
    unit: str
    model: NotRequired[str]  # chat service: the model being loaded
    sweep: NotRequired[SweepPoint]  # while a learning-rate sweep trains one of its rates
    part: NotRequired[dict[str, int]]  # {index (0-based), count}: one of the stage's parts (the evaluated models)


class MetricData(TypedDict):
    stage: str
    step: int
    values: dict[str, float | None]  # metric name (engine.contract.metric_names) → value; non-finite → None
    model: NotRequired[str]  # evaluation: the display name of the model these scores are of
    sweep: NotRequired[SweepPoint]  # a sweep point's curves restart at step 1: they are a series of their own


class LogData(TypedDict):
    level: str
    message: str
    model: NotRequired[str]  # chat service: the model the line is about
    action: NotRequired[str]  # chat service: what happened to it (unloaded)
    request_id: NotRequired[str]  # chat service: the request a warning is about (its answer was shortened)


class SampleData(TypedDict):
    stage: str
    step: int
    prompt: str
    completion: str
    rewards: NotRequired[dict[str, float | None]]  # GRPO samples (evaluation samples send an empty mapping)
    model: NotRequired[str]  # evaluation samples: the display name of the model that answered
    reference: NotRequired[str]  # evaluation samples: the reference answer the completion is scored against


class ArtifactData(TypedDict):
    stage: str
    kind: str  # model | checkpoint | eval | report | data | gguf | modelfile | teacher_targets
    path: str
    format: NotRequired[str]  # gguf: its file type (engine.contract.vocabulary.GGUF_FORMATS)
    bytes: NotRequired[int]  # gguf: its size; teacher_targets: the cache folder's size on disk
    reused: NotRequired[bool]  # teacher_targets: read from a cache an earlier stage or run built
    build_s: NotRequired[float]  # teacher_targets: seconds its build took (when it was built, this run or before)
    rows: NotRequired[int]  # teacher_targets: sequences it holds targets for


class ErrorData(TypedDict):
    message: str
    stage: NotRequired[str]
    detail: NotRequired[str]
    request_id: NotRequired[str]  # chat service: the request that failed ("" for a command without one)
    model: NotRequired[str]  # chat service


class DoneData(TypedDict):
    status: NotRequired[str]  # finished | cancelled | failed (runs); finished | stopped (a chat request)
    summary: NotRequired[dict[str, Any]]  # runs: stages, scores, elapsed_s; export: files, bytes, elapsed_s
    # the chat service: one request's statistics
    request_id: NotRequired[str]
    model: NotRequired[str]
    prompt_tokens: NotRequired[int]
    completion_tokens: NotRequired[int]
    ttft_s: NotRequired[float | None]
    tokens_per_s: NotRequired[float | None]
    text: NotRequired[str]
    # a generation with a draft model: {model, acceptance, proposed, accepted} (engine/evaluation/drafting.py)
    draft: NotRequired[dict[str, Any] | None]


class TokenData(TypedDict):  # chat service
    request_id: str
    model: str
    text: str
    tokens_per_s: NotRequired[float | None]  # the answer's speed so far (None until two steps are timed)
    draft_acceptance: NotRequired[float | None]  # with a draft model: the share of its tokens kept so far


class LoadedData(TypedDict):  # chat service
    model: str
    source: NotRequired[str]
    device: NotRequired[str]
    parameters: NotRequired[int]
    dtype: NotRequired[str]
    memory_bytes: NotRequired[int]
    quantized: NotRequired[bool]
    estimate_bytes: NotRequired[int | None]
    load_s: NotRequired[float]
    chat_template: NotRequired[bool]


class ScoreData(TypedDict):  # chat service: the engine's ROUGE-L of a prediction against a reference
    id: str
    rougeL: float


PAYLOADS: dict[str, Any] = {  # Any: mypy types a TypedDict class object as plain `type`
    "hello": HelloData, "status": StatusData, "progress": ProgressData, "metric": MetricData, "log": LogData,
    "sample": SampleData, "artifact": ArtifactData, "error": ErrorData, "done": DoneData, "token": TokenData,
    "loaded": LoadedData, "score": ScoreData,
}


def missing_keys(event_type: str, data: dict[str, Any]) -> list[str]:
    """The required keys of ``event_type``'s payload that ``data`` lacks (empty: the event is well formed)."""
    return sorted(k for k in PAYLOADS[event_type].__required_keys__ if k not in data)


def undeclared_keys(event_type: str, data: dict[str, Any]) -> list[str]:
    """The keys of ``data`` that ``event_type``'s payload does not declare (a reader would not know them)."""
    declared = PAYLOADS[event_type].__annotations__
    return sorted(str(k) for k in data if k not in declared)


def payload_problems(event_type: str, data: dict[str, Any], *, required: bool = True) -> str:
    """One sentence naming what ``data`` lacks (unless ``required`` is false) or carries undeclared for its event
    type; "" when it is well formed."""
    missing = missing_keys(event_type, data) if required else []
    extra = undeclared_keys(event_type, data)
    parts = ([f"lacks {', '.join(missing)}"] if missing else []) + (
        [f"carries undeclared {', '.join(extra)} (declare them in engine/contract/events.py)"] if extra else [])
    return f"a {event_type!r} event {' and '.join(parts)}." if parts else ""
