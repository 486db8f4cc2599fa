"""What ``compression-engine inspect SOURCE`` tells about a model without loading its weights, as one typed
result that the engine prints as a JSON line and the studio reads back (the models page). Stdlib only."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class ModelInfo:
    source: str = ""
    architecture: str = "unknown architecture"
    model_type: str = ""
    parameters: int | None = None  # exact, counted on the meta device
    vocab_size: int | None = None
    hidden_size: int | None = None
    layers: int | None = None
    dtype: str = ""
    tie_word_embeddings: bool = False
    note: str = ""  # what the answer could not check (e.g. offline: sizes from the published config, no weights)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelInfo":
        """Tolerant of keys it does not know (a newer engine) and of missing ones (an older one)."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def describe(self) -> str:
        """One line for the models page."""
        parts = [self.architecture, f"{format_count(self.parameters)} parameters",
                 f"vocabulary {self.vocab_size if self.vocab_size is not None else '?'}",
                 f"{self.layers if self.layers is not None else '?'} layers × "
                 f"{self.hidden_size if self.hidden_size is not None else '?'}", self.dtype, self.note]
        return "  ·  ".join(p for p in parts if p)


def format_count(n: Any) -> str:
    """1.2 B, 494.0 M, 3.1 k — or '?' when unknown."""
    if not isinstance(n, (int, float)):
        return "?"
    for scale, unit in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return str(int(n))


def kd_compatibility(teacher: ModelInfo | None, student: ModelInfo | None) -> str:
    """Whether token-level KD is possible (it needs one vocabulary), as a sentence for the models page."""
    if not teacher or not student:
        return ""
    tv, sv = teacher.vocab_size, student.vocab_size
    if tv is None or sv is None:
        return "Vocabulary sizes unknown: token-level KD will be checked when the run starts."
    if tv == sv:
        return f"Same vocabulary ({tv} tokens): token-level KD (the paper's joint loss) is possible."
    return (f"Different vocabularies (teacher {tv}, student {sv}): token-level KD is not possible; "
            "use sequence-level KD, which learns from the teacher's generated answers.")


def missing_local_source(source: str) -> str:
    """Why a model source that names a local file or folder cannot be used (it is not there, or a folder without
    config.json), as the engine would refuse it at the run's start; "" for one that is there, a hub id or the
    demo kit. The wizard asks before the launch, so that a typo costs no failed run."""
    source = str(source).strip()
    if not source or source.startswith("demo:"):
        return ""
    path = Path(source).expanduser()
    if source.lower().endswith(".gguf"):
        return "" if path.is_file() else f"the GGUF file {path} does not exist; check the path (GGUF… picks one)."
    if not (path.exists() or source.startswith(("/", ".", "~"))):
        return ""  # a hub id (org/name): only the engine, with the network, can tell
    if not path.is_dir():
        return (f"the model folder {path} does not exist; pick a folder saved with save_pretrained (Folder…), a "
                ".gguf file or a hub id such as Qwen/Qwen2.5-0.5B-Instruct.")
    if not (path / "config.json").is_file():
        return f"{path} is not a model folder (it has no config.json); pick the folder save_pretrained wrote."
    return ""
