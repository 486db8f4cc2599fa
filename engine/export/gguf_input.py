"""A GGUF file as an export source: a person with only ``model-q4_k_m.gguf`` (the common case with llama.cpp and
Ollama) re-exports it at another precision.

The file is checked from its header before anything is written (an architecture this exporter cannot convert is
one sentence), then de-quantized once through the same hash-keyed cache the engine uses for GGUF teachers
(engine/models/gguf_source.py): the export reads that plain folder like any other, and a second export of the
same file unpacks nothing.
"""
from __future__ import annotations

from pathlib import Path

from engine.core.context import EngineError

#: GGUF ``general.architecture`` → the transformers class its unpacked folder holds (what gguf.py converts).
GGUF_ARCHITECTURES = {"qwen2": "Qwen2ForCausalLM"}


def is_gguf(source: str | Path) -> bool:
    return str(source).lower().endswith(".gguf")


def check_gguf_source(path: Path) -> None:
    """The file exists, its header reads, and it holds an architecture the exporter converts (EngineError)."""
    from engine.export.gguf import check_architecture
    from engine.models.gguf_source import check_supported

    path = Path(path).expanduser()
    if not path.is_file():
        raise EngineError(f"GGUF file {path} does not exist; check the path.")
    arch = check_supported(path)["architecture"]
    check_architecture(GGUF_ARCHITECTURES.get(arch, arch or "unnamed"), str(path))


def gguf_export_name(path: Path, name: str = "") -> str:
    """The file name stem for a GGUF source: the one given, else the file's own stem (``qwen-q4_k_m``)."""
    from engine.export.gguf import export_name

    return export_name(Path(path).expanduser().with_suffix(""), name)


def unpacked_source(path: Path) -> Path:
    """The plain folder of ``path`` to export from, unpacked once (heartbeats say so while it runs)."""
    from engine.models.gguf_source import unpacked_folder

    return unpacked_folder(Path(path).expanduser())
