"""One typed payload per event type: the keys every event's ``data`` carries (TypedDicts, so both sides can be
type-checked) and :func:`missing_keys`, which the tests run over every event the engine, the chat service and
the studio's stand-ins emit. The wire format itself is :mod:`engine.contract.protocol`. Stdlib only."""
# No `from __future__ import annotations` here: TypedDict reads NotRequired[...] only from evaluated annotations.
from typing import Any, NotRequired, TypedDict


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
    sweep: NotRequired[SweepPoint]  # while a learning-rate sweep trains one of its rates
    part: NotRequired[dict[str, int]]  # {index (0-based), count}: one of the stage's parts (the evaluated models)


class MetricData(TypedDict):
    stage: str
    step: int
    values: dict[str, float | None]  # metric name (engine.contract.metric_names) → value; non-finite → None
    sweep: NotRequired[SweepPoint]  # a sweep point's curves restart at step 1: they are a series of their own


class LogData(TypedDict):
    level: str
    message: str


class SampleData(TypedDict):
    stage: str
    step: int
    prompt: str
    completion: str
    rewards: NotRequired[dict[str, float | None]]  # GRPO samples
    model: NotRequired[str]  # evaluation samples


class ArtifactData(TypedDict):
    stage: str
    kind: str  # model | checkpoint | eval | report | data | gguf | modelfile
    path: str


class ErrorData(TypedDict):
    message: str
    stage: NotRequired[str]
    detail: NotRequired[str]


class DoneData(TypedDict):
    status: NotRequired[str]  # finished | cancelled | failed (runs); the chat service's done carries request stats
    summary: NotRequired[dict[str, Any]]


class TokenData(TypedDict):  # chat service
    request_id: str
    model: str
    text: str


class LoadedData(TypedDict):  # chat service
    model: str


class ScoreData(TypedDict):  # chat service: the engine's ROUGE-L of a prediction against a reference
    id: str
    rougeL: float


PAYLOADS: dict[str, type] = {
    "hello": HelloData, "status": StatusData, "progress": ProgressData, "metric": MetricData, "log": LogData,
    "sample": SampleData, "artifact": ArtifactData, "error": ErrorData, "done": DoneData, "token": TokenData,
    "loaded": LoadedData, "score": ScoreData,
}


def missing_keys(event_type: str, data: dict[str, Any]) -> list[str]:
    """The required keys of ``event_type``'s payload that ``data`` lacks (empty: the event is well formed)."""
    payload = PAYLOADS[event_type]
    return sorted(k for k in payload.__required_keys__ if k not in data)
