"""What ``compression-engine inspect SOURCE`` tells about a model without loading its weights, as one typed
result that the engine prints as a JSON line and the studio reads back (the models page). Stdlib only."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.contract.vocabulary import KD_METHODS


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
    # the tokenizer's real vocabulary (GGUF placeholder padding left out): its size and a hash of its
    # token → id table, so two models' vocabularies are compared without shipping them (kd_pairing)
    tokenizer_tokens: int | None = None
    vocab_digest: str = ""

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelInfo:
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


@dataclass(frozen=True)
class KDPairing:
    """What a teacher/student pair allows, decided from their tokenizers and configs (no weights)."""

    kind: str  # same | placeholder | different | unknown
    methods: tuple[str, ...]  # the distill.method values the pair supports
    reason: str  # one sentence for the method page and the run's log


ALL_KD = KD_METHODS  # every distill.method (engine/contract/vocabulary.py)


def kd_pairing(teacher: ModelInfo | None, student: ModelInfo | None) -> KDPairing:
    """Same vocabulary → token KD as the paper; the same real tokens with placeholder rows (a GGUF teacher) →
    token KD too; different tokenizers → cross-tokenizer KD (ULD) or sequence-level KD."""
    if not teacher or not student or not teacher.vocab_digest or not student.vocab_digest:
        return KDPairing("unknown", ALL_KD, "The tokenizers have not been read yet: the pair is checked when the "
                         "run starts (Read model info tells now).")
    tv, sv = teacher.tokenizer_tokens, student.tokenizer_tokens
    if teacher.vocab_digest == student.vocab_digest:
        if teacher.vocab_size == student.vocab_size:
            return KDPairing("same", ALL_KD, f"Same vocabulary ({tv} tokens, one tokenizer): token-level KD "
                             "compares the two distributions token by token (the paper's joint loss).")
        return KDPairing("placeholder", ALL_KD, f"Same {tv} tokens, with placeholder rows padding one model's "
                         f"vocabulary ({teacher.vocab_size} vs {student.vocab_size} rows): token-level KD maps "
                         "every real token one to one.")
    return KDPairing("different", ("cross_tokenizer", "sequence"),
                     f"Different tokenizers (teacher {tv} tokens, student {sv}, numbered differently): token "
                     "distributions cannot be compared token by token, so use cross-tokenizer KD (ULD: sorted "
                     "probabilities compared by rank, positions aligned by character offsets) or sequence-level "
                     "KD (the student learns the teacher's generated answers).")


def kd_compatibility(teacher: ModelInfo | None, student: ModelInfo | None) -> str:
    """What the pair allows, as a sentence for the models page ("" until both are read)."""
    if not teacher or not student:
        return ""
    return kd_pairing(teacher, student).reason


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
