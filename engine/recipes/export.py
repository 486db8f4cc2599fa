"""The ``export`` stage: a model of the run (a base model, an earlier stage's output or a folder) written as GGUF
files for llama.cpp, Ollama and LM Studio, with an Ollama Modelfile, into ``models/<stage>/``.

Reads top to bottom: validate (architecture and quantizer, before the run starts) → find a local folder of the
model (a GGUF source: its unpacked folder) → convert (engine/export/gguf.py, all or nothing for the formats this
machine can write; a missing quantizer costs only its own format, in a warning) → announce each file.
"""
from __future__ import annotations

import time
from pathlib import Path

from engine.core.context import RunContext, StageResult
from engine.contract.spec import BASE_MODELS, ModelSpec, base_model_of, to_dict


def validate(ctx: RunContext) -> None:
    """Preflight: the formats can be written, and the architecture the exported model will have (that of the
    base model it descends from) can be converted."""
    from engine.export.gguf import check_architecture, check_formats
    from engine.models.loading import load_config

    check_formats(ctx.stage.export.formats)
    base = base_model_of(ctx.spec, ctx.stage.model)
    source = getattr(ctx.spec, base).source if base in BASE_MODELS else base
    if source.lower().endswith(".gguf"):  # re-exported from its unpacked folder (engine/export/gguf_input.py)
        from engine.export.gguf_input import check_gguf_source

        check_gguf_source(Path(source))
        return
    config = load_config(source)
    check_architecture((config.architectures or [config.model_type])[0], source)


def _local_folder(ctx: RunContext, spec: ModelSpec) -> Path:
    """A folder of safetensors to convert; a hub model is saved once into the stage's work folder."""
    from engine.models.loading import load_model, load_tokenizer, resolve_source, save_model

    resolved = resolve_source(spec.source)
    if resolved.kind in ("folder", "demo"):
        return Path(resolved.location)
    if resolved.kind == "gguf":  # de-quantized once through the engine's GGUF cache, reused by later exports
        from engine.export.gguf_input import unpacked_source

        return unpacked_source(resolved.gguf_path)
    target = ctx.work_dir / "source"
    if not (target / "config.json").exists():
        ctx.events.log(f"{ctx.stage.name}: saving a local copy of {spec.source} to convert")
        save_model(load_model(spec, "cpu"), load_tokenizer(spec), target, f"# Copy of {spec.source}\n")
    return target


def run_stage(ctx: RunContext) -> StageResult:
    from engine.export.gguf import export_gguf

    stage, settings = ctx.stage, ctx.stage.export
    folder = _local_folder(ctx, ctx.model_spec(stage.model))
    start = time.perf_counter()
    ctx.events.log(f"{stage.name}: exporting {folder} to GGUF ({', '.join(settings.formats)})")

    def on_progress(phase: str, done: int, total: int) -> None:
        ctx.check_cancel()
        ctx.events.progress(stage.name, done, total, time.perf_counter() - start, unit="tensor")

    # files named after the run and the stage or base model ("demo-kd-student-q8_0.gguf"); a folder by its name
    named = stage.model in BASE_MODELS or stage.model in {s.name for s in ctx.spec.stages}
    name = f"{ctx.spec.name}-{stage.model}" if named else folder.name
    # overwrite: models/<stage> belongs to this run (a resumed stage replaces its earlier attempt's files)
    result = export_gguf(folder, ctx.output_dir, settings.formats, name=name, ollama=settings.ollama,
                         on_progress=on_progress, overwrite=True)
    for fmt, path in result.files.items():
        ctx.events.emit("artifact", stage=stage.name, kind="gguf", format=fmt, path=str(path),
                        bytes=result.sizes[fmt])
    if result.modelfile:
        ctx.events.emit("artifact", stage=stage.name, kind="modelfile", path=str(result.modelfile))
    for sentence in result.skipped.values():  # the run finishes with the formats it could write, and says so
        ctx.events.log(f"{stage.name}: {sentence} The other formats were written.", level="warning")
    summary = {"export": to_dict(settings), "files": {fmt: str(p) for fmt, p in result.files.items()},
               "bytes": result.sizes}
    if result.skipped:
        summary["skipped"] = result.skipped
    return StageResult(model_dir=None, summary=summary)
