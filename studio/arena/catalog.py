"""Which models the arena can load: the run history's models, their quantized copies, the original teacher and
student of each run's spec, the demo models, or any hub id, folder or GGUF file the user names.

Stdlib only (plus the engine's light ``spec``/``runs`` modules): model sizes come from ``config.json`` and the
safetensors headers, never from loading weights.
"""
from __future__ import annotations

import json
import logging
import struct
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from engine.contract.safe_json import load_json_file

log = logging.getLogger(__name__)

DEMO_SOURCES = (("demo teacher", "demo:teacher", "teacher"), ("demo student", "demo:student", "student"))
_QUANT_STATE_MARKERS = ("absmax", "quant_map", "quant_state")


@dataclass
class ModelChoice:
    """A model the user can put in a pane; ``role`` is teacher, student or empty when unknown."""

    label: str
    source: str
    load_in_4bit: bool = False
    role: str = ""
    run_id: str = ""
    run_path: str = ""
    parameters: int | None = None
    precision: str = ""
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def custom_choice(source: str, load_in_4bit: bool = False) -> ModelChoice:
    """A choice for a source typed or browsed by the user (hub id, folder, .gguf file, demo:…)."""
    source = source.strip()
    path = Path(source).expanduser()
    label = path.name if path.exists() else source
    info = describe_folder(path) if path.is_dir() else {}
    role = "teacher" if source == "demo:teacher" else "student" if source == "demo:student" else ""
    return ModelChoice(label=label or source, source=str(path) if path.exists() else source,
                       load_in_4bit=load_in_4bit, role=role, parameters=info.get("parameters"),
                       precision=precision_text(info.get("dtype", ""), info.get("quantized", False) or load_in_4bit,
                                                info.get("quant_type", "")))


def precision_text(dtype: str, quantized: bool, quant_type: str = "") -> str:
    """'4-bit nf4', 'bfloat16', … as shown in a pane header."""
    if quantized:
        return f"4-bit {quant_type}".strip() if quant_type else "4-bit"
    return str(dtype).replace("torch.", "")


def size_text(parameters: int | None) -> str:
    """A parameter count as people say it: 494 M, 3.1 B, 512 k."""
    if not parameters:
        return "size unknown"
    for scale, unit in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if parameters >= scale:
            value = parameters / scale
            return f"{value:.1f} {unit} params" if value < 100 else f"{value:.0f} {unit} params"
    return f"{parameters} params"


def safetensors_parameters(folder: Path) -> int | None:
    """Parameters counted from the safetensors headers (a JSON block at the start of each file).

    4-bit weights are stored packed two to a byte, so for a quantized folder this counts stored elements; the
    loaded event's exact number replaces it once the model is loaded.
    """
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        return None
    total = 0
    for file in files:
        try:
            with open(file, "rb") as handle:
                (length,) = struct.unpack("<Q", handle.read(8))
                header = json.loads(handle.read(length))
        except (OSError, ValueError, struct.error):
            return None
        for name, entry in header.items():
            if name == "__metadata__" or not isinstance(entry, dict):
                continue
            if any(marker in name for marker in _QUANT_STATE_MARKERS):
                continue  # quantization state (absmax, quant maps) is not parameters
            count = 1
            for dim in entry.get("shape", []):
                count *= int(dim)
            total += count * 2 if entry.get("dtype") == "U8" else count  # packed 4-bit: two per byte
    return total or None


def describe_folder(folder: Path) -> dict[str, Any]:
    """What config.json and the weight headers say about a model folder (no weights loaded)."""
    info: dict[str, Any] = {}
    try:
        config = load_json_file(folder / "config.json")
    except (OSError, ValueError):
        return info
    if not isinstance(config, dict):
        return info
    qconfig = config.get("quantization_config") or {}
    info["quantized"] = bool(qconfig.get("load_in_4bit") or qconfig.get("_load_in_4bit"))
    info["quant_type"] = qconfig.get("bnb_4bit_quant_type", "") if info["quantized"] else ""
    info["dtype"] = str(config.get("torch_dtype") or config.get("dtype") or "")
    info["architecture"] = (config.get("architectures") or [""])[0]
    info["parameters"] = safetensors_parameters(folder)
    return info


def _spec_of(run_path: Path) -> Any:
    """The run's spec, or None when it cannot be read (a broken run must not hide the others)."""
    try:
        from engine.contract.spec import load_spec

        return load_spec(run_path / "spec.yaml")
    except Exception as exc:  # noqa: BLE001 - SpecError, YAML errors, a missing file: all mean "no spec"
        log.info("cannot read the spec of %s: %s", run_path, exc)
        return None


def _stage_role(spec: Any, stage_name: str) -> str:
    """teacher when a stage fine-tunes the teacher (or derives from a stage that did), else student."""
    if spec is None:
        return "teacher" if "teacher" in stage_name else "student"
    roles = {"teacher": "teacher", "student": "student"}
    for stage in spec.stages:
        roles[stage.name] = roles.get(stage.model, "student")
    return roles.get(stage_name, "student")


def run_choices(run_path: Path, run_name: str = "", run_id: str = "") -> list[ModelChoice]:
    """The models of one run: each saved stage output (quantized copies included), then its base models."""
    run_path = Path(run_path)
    run_id = run_id or run_path.name
    run_name = run_name or run_id
    spec = _spec_of(run_path)
    choices: list[ModelChoice] = []
    models_dir = run_path / "models"
    stage_order = [s.name for s in spec.stages] if spec is not None else []
    folders = sorted((p for p in models_dir.glob("*") if (p / "config.json").exists()),
                     key=lambda p: (stage_order.index(p.name) if p.name in stage_order else 99, p.name))
    for folder in folders:
        info = describe_folder(folder)
        choices.append(ModelChoice(
            label=f"{run_name} · {folder.name}", source=str(folder), role=_stage_role(spec, folder.name),
            run_id=run_id, run_path=str(run_path), parameters=info.get("parameters"),
            precision=precision_text(info.get("dtype", ""), info.get("quantized", False), info.get("quant_type", "")),
            extra={"stage": folder.name, "quantized": info.get("quantized", False)}))
    if spec is not None:
        for role in ("teacher", "student"):
            model = getattr(spec, role)
            choices.append(ModelChoice(
                label=f"{run_name} · {role} (original)", source=model.source, load_in_4bit=model.load_in_4bit,
                role=role, run_id=run_id, run_path=str(run_path),
                precision="4-bit nf4" if model.load_in_4bit else model.dtype))
    return choices


def list_runs(store: Any | None) -> list:
    """The store's run records, newest first; none when there is no store or its index cannot be read (the
    arena and the wizard still work with typed sources and the demo models)."""
    if store is None:
        return []
    try:
        return store.list()
    except Exception as exc:  # noqa: BLE001 - an unreadable index must not break the views that list models
        log.warning("cannot list runs: %s", exc)
        return []


def catalog(store: Any | None) -> list[ModelChoice]:
    """Every model of every run in ``store`` (an engine.contract.runs.RunStore; newest run first), then the demo
    models."""
    choices: list[ModelChoice] = []
    for record in list_runs(store):
        choices.extend(run_choices(Path(record.path), record.name, record.id))
    for label, source, role in DEMO_SOURCES:
        choices.append(ModelChoice(label=label, source=source, role=role))
    return choices


def default_lineup(choices: list[ModelChoice], count: int = 3) -> list[ModelChoice]:
    """The usual arena: the (fine-tuned) teacher, the distilled student and its 4-bit copy, from the newest run."""
    if not choices:
        return []
    run_id = choices[0].run_id
    pool = [c for c in choices if c.run_id == run_id]
    trained = [c for c in pool if c.extra.get("stage")]
    teachers = [c for c in trained if c.role == "teacher"] or [c for c in pool if c.role == "teacher"]
    students = [c for c in trained if c.role == "student" and not c.extra.get("quantized")]
    quantized = [c for c in trained if c.extra.get("quantized")]
    students = students or [c for c in pool if c.role == "student"]
    lineup = [group[-1] for group in (teachers, students, quantized) if group]
    for choice in pool:
        if len(lineup) >= count:
            break
        if choice not in lineup:
            lineup.append(choice)
    return lineup[:count]


def trained_models(store: Any | None) -> list[ModelChoice]:
    """The full-precision models the runs saved (``<run name> · <stage>`` → ``runs/<id>/models/<stage>``), newest
    run first: what a new run can start from (the wizard's model sources; a 4-bit copy is not a training source)."""
    return [c for c in catalog(store) if c.extra.get("stage") and not c.extra.get("quantized")]


def find_label(choices: list[ModelChoice], text: str) -> ModelChoice | None:
    """The choice labelled ``text`` (labels, not list positions, name models: lists change as runs come and go)."""
    text = text.strip()
    return next((c for c in choices if c.label == text), None)


def models_signature(runs_dir: Path, shown: dict[str, str]) -> tuple:
    """What the model lists depend on: each run's shown status and the modification time of its ``models``
    folder (a stage's model saved by rename adds an entry there). Cheap: one ``stat`` per run."""
    items = []
    for run_id, status in sorted(shown.items()):
        try:
            mtime = (Path(runs_dir) / run_id / "models").stat().st_mtime_ns
        except OSError:
            mtime = 0
        items.append((run_id, status, mtime))
    return tuple(items)
