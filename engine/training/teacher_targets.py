"""The teacher that runs once: its top-k targets for every response token, computed in one batched pass and kept
in the run store, so token KD (every point of a learning-rate sweep, later epochs, resumes, later runs) reads
them instead of loading and running the teacher (offline KD, as DistillKit does).

Layout (``<data dir>/teacher-targets/<key>/``, written to a temporary folder and renamed, so a folder that
exists is complete)::

    meta.json       the key and what it was made from (teacher, data, template, max length, k, temperature)
    offsets.npy     int64 [rows + 1]: row r's targets are positions offsets[r]:offsets[r + 1]
    indices.npy     int32 [N, k]   the teacher's k most likely next tokens per response position
    logprobs.npy    float32 [N, k] their log-probabilities at the distillation temperature
    tail.npy        float32 [N]    log of the teacher's mass outside them (engine/training/chunked_losses.py)

The key hashes the teacher's identity (its weight files' hash, which also tells two outputs of one stage apart;
a hub id with its revision), the tokenized rows (so the data, the chat template, the tokenizer and the maximum
length all count), k and the temperature. A cache named explicitly (``distill.teacher_cache.path``) whose key
differs is refused with the part that differs, never silently used.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engine.contract.run_files import read_inside
from engine.contract.safe_json import safe_json_loads
from engine.core.context import EngineError
from engine.contract.spec import ModelSpec

log = logging.getLogger(__name__)

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt")
FORMAT = 1


@dataclass
class TeacherTargets:
    """Opened (memory-mapped) cached targets; :meth:`batch` gathers a batch's rows in order."""

    root: Path
    meta: dict
    offsets: np.ndarray
    indices: np.ndarray
    logprobs: np.ndarray
    tail: np.ndarray
    valid: np.ndarray | None = None  # cross-tokenizer targets: bool [N], False where no teacher position matches
    reused: bool = False  # read from a cache an earlier stage, run or sweep built (this stage ran no teacher)
    served: int = 0  # sequences whose targets were read: each one a teacher forward pass a live teacher makes

    @property
    def top_k(self) -> int:
        return int(self.indices.shape[1])

    def batch(self, rows: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Targets of ``rows`` concatenated in order: ([N, k] int64, [N, k] float32, [N] float32)."""
        spans = [(int(self.offsets[r]), int(self.offsets[r + 1])) for r in rows]
        self.served += len(rows)
        pick = np.concatenate([np.arange(a, b) for a, b in spans]) if spans else np.zeros(0, dtype=np.int64)
        return (torch.from_numpy(np.asarray(self.indices[pick], dtype=np.int64)),
                torch.from_numpy(np.asarray(self.logprobs[pick])), torch.from_numpy(np.asarray(self.tail[pick])))

    def valid_batch(self, rows: list[int]) -> torch.Tensor | None:
        """Which of the rows' positions have a teacher target ([N] bool), or None when all do."""
        if self.valid is None:
            return None
        spans = [np.arange(int(self.offsets[r]), int(self.offsets[r + 1])) for r in rows]
        return torch.from_numpy(np.asarray(self.valid[np.concatenate(spans)] if spans else np.zeros(0, bool)))


def store_dir() -> Path:
    from engine.contract.runs import data_dir

    return data_dir() / "teacher-targets"


def _hash_files(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in sorted(paths):
        digest.update(path.name.encode())
        with open(path, "rb") as f:
            digest.update(hashlib.file_digest(f, "sha256").digest())
    return digest.hexdigest()


def teacher_identity(spec: ModelSpec) -> dict:
    """What makes this teacher this teacher: its weights' hash (local folders, GGUF files, the demo kit) or its
    hub id and revision, plus how it is loaded (dtype, 4 bits)."""
    from engine.models.loading import resolve_source

    resolved = resolve_source(spec.source)
    if resolved.kind == "gguf":
        weights = _hash_files([Path(resolved.location) / resolved.gguf_file])
    elif resolved.kind in ("folder", "demo"):
        files = [p for p in Path(resolved.location).iterdir() if p.suffix in WEIGHT_SUFFIXES]
        weights = _hash_files(files) if files else "none"
    else:
        weights = f"hub:{spec.source}@{spec.revision or 'main'}"
    return {"weights": weights, "dtype": spec.dtype, "load_in_4bit": bool(spec.load_in_4bit)}


def data_identity(datasets: list[Any]) -> str:
    """Hash of the tokenized rows (input ids and labels, in order): data, template, tokenizer and length."""
    digest = hashlib.sha256()
    for dataset in datasets:
        for ids, labels in zip(dataset["input_ids"], dataset["labels"]):
            digest.update(np.asarray(ids, dtype=np.int64).tobytes())
            digest.update(np.asarray(labels, dtype=np.int64).tobytes())
        digest.update(b"|")
    return digest.hexdigest()


def key_parts(teacher_spec: ModelSpec, datasets: list[Any], top_k: int, temperature: float, max_length: int,
              template: str) -> dict:
    return {"format": FORMAT, "teacher": teacher_identity(teacher_spec), "teacher_source": teacher_spec.source,
            "data": data_identity(datasets), "template": hashlib.sha256(template.encode()).hexdigest()[:16],
            "max_length": int(max_length), "top_k": int(top_k), "temperature": float(temperature)}


def cache_key(parts: dict) -> str:
    hashed = {k: v for k, v in parts.items() if k != "teacher_source"}  # a moved folder is the same teacher
    return hashlib.sha256(json.dumps(hashed, sort_keys=True).encode()).hexdigest()[:24]


_PART_NAMES = {"teacher": "another teacher (or other teacher weights)", "data": "other data",
               "template": "another chat template", "max_length": "another data.max_length",
               "top_k": "another top_k", "temperature": "another temperature", "format": "another engine version",
               "teacher_rows": "another teacher tokenization (tokenizer or chat template)"}


def open_targets(folder: Path, parts: dict) -> TeacherTargets:
    """Open a cache folder, refusing it unless it was built for exactly ``parts``."""
    try:
        meta = safe_json_loads(read_inside(folder / "meta.json"))  # a FIFO in its place is refused, not read
        if not isinstance(meta, dict):
            raise ValueError("meta.json holds no object")
    except (OSError, ValueError):  # JSONProblem is a ValueError: huge numbers, deep nesting, NaN, bad UTF-8
        raise EngineError(f"distill.teacher_cache.path: {folder} is not a teacher-targets cache (no readable "
                          "meta.json); leave the path empty to build one.") from None
    if meta.get("key") != cache_key(parts):
        built = meta.get("parts") if isinstance(meta.get("parts"), dict) else {}
        differs = next((k for k in _PART_NAMES if built.get(k) != parts.get(k)), "format")
        raise EngineError(f"distill.teacher_cache.path: {folder} was built for {_PART_NAMES[differs]} than this "
                          f"stage uses; leave the path empty to build a matching cache.")
    arrays = {n: np.load(folder / f"{n}.npy", mmap_mode="r") for n in ("offsets", "indices", "logprobs", "tail")}
    if (folder / "valid.npy").exists():
        arrays["valid"] = np.load(folder / "valid.npy", mmap_mode="r")
    return TeacherTargets(root=folder, meta=meta, **arrays)


def check_cache_settings(folder: Path, ctx: Any, teacher_spec: ModelSpec | None) -> None:
    """Preflight: the named cache exists and was built with this stage's k, temperature, length and teacher."""
    try:
        parts = safe_json_loads(read_inside(folder / "meta.json"))["parts"]
        if not isinstance(parts, dict):
            raise ValueError("parts is not an object")
    except (OSError, ValueError, KeyError, TypeError):
        raise EngineError(f"distill.teacher_cache.path: {folder} is not a teacher-targets cache (no readable "
                          "meta.json); leave the path empty to build one.") from None
    d = ctx.stage.distill
    wanted = {"top_k": d.teacher_cache.top_k, "temperature": float(d.temperature),
              "max_length": ctx.spec.data.max_length}
    if teacher_spec is not None:
        wanted["teacher"] = teacher_identity(teacher_spec)
    for name, value in wanted.items():
        if parts.get(name) != value:
            raise EngineError(f"distill.teacher_cache.path: {folder} was built for {_PART_NAMES[name]} than this "
                              "stage uses; leave the path empty to build a matching cache.")


def build_targets(teacher: Any, rows: list[dict], out: Path, *, top_k: int, temperature: float, batch_size: int,
                  device: str, pad_id: int, on_batch: Any = None, chunk_size: int = 256) -> None:
    """Run the teacher once over ``rows`` (longest first) and write its targets into folder ``out``."""
    from engine.training.chunked_losses import teacher_topk
    from engine.training_data.collate import pad_collator

    from engine.models.hidden_states import last_hidden_state

    counts = [sum(1 for t in r["labels"][1:] if t != -100) for r in rows]
    offsets = np.zeros(len(rows) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum(counts)
    total, vocab = int(offsets[-1]), teacher.get_output_embeddings().weight.shape[0]
    k = min(top_k, vocab)
    out.mkdir(parents=True)
    np.save(out / "offsets.npy", offsets)
    arrays = {"indices": np.lib.format.open_memmap(out / "indices.npy", "w+", np.int32, (total, k)),
              "logprobs": np.lib.format.open_memmap(out / "logprobs.npy", "w+", np.float32, (total, k)),
              "tail": np.lib.format.open_memmap(out / "tail.npy", "w+", np.float32, (total,))}
    order = sorted(range(len(rows)), key=lambda i: -len(rows[i]["input_ids"]))
    collate, head = pad_collator(pad_id), teacher.get_output_embeddings()
    for start in range(0, len(order), batch_size):
        picked = order[start:start + batch_size]
        batch = {n: t.to(device) for n, t in collate([rows[i] for i in picked]).items()}
        with torch.no_grad():
            hidden = last_hidden_state(teacher, batch["input_ids"], batch["attention_mask"])  # [B, L, H]
            mask = batch["labels"][:, 1:] != -100
            hs = hidden[:, :-1][mask]  # [n, H], row-major: each row's positions contiguous and in order
            parts = [teacher_topk(head(hs[i:i + chunk_size]), k, temperature) for i in range(0, hs.size(0),
                                                                                           chunk_size)]
        if parts:
            idx, lp, tail = (torch.cat(p).cpu().numpy() for p in zip(*parts))
            at = 0
            for i in picked:
                a, b = int(offsets[i]), int(offsets[i + 1])
                arrays["indices"][a:b], arrays["logprobs"][a:b], arrays["tail"][a:b] = (
                    idx[at:at + b - a], lp[at:at + b - a], tail[at:at + b - a])
                at += b - a
        if on_batch is not None:
            on_batch(min(start + batch_size, len(order)), len(order))
    for array in arrays.values():
        array.flush()
    del arrays


def ensure_targets(ctx: Any, teacher_spec: ModelSpec, datasets: list[Any], load_teacher: Any,
                   pad_id: int, template: str, *, extra_parts: dict | None = None, build: Any = None,
                   root: Path | None = None) -> TeacherTargets:
    """The cached targets for ``datasets`` (rows numbered across them in order), built now if missing.

    ``load_teacher()`` is called only when the cache has to be built; the teacher is dropped afterwards.
    ``build(teacher, folder, on_batch)`` replaces the plain build (cross-tokenizer targets, whose key gets
    ``extra_parts``); ``root`` replaces the run store's folder.
    """
    d = ctx.stage.distill
    settings = d.teacher_cache
    from engine.core import heartbeat

    with heartbeat.activity("hashing the teacher's weights and the data (the teacher-targets cache key)"):
        parts = key_parts(teacher_spec, datasets, settings.top_k, d.temperature, ctx.spec.data.max_length,
                          template)
    parts.update(extra_parts or {})
    key = cache_key(parts)
    if settings.path:
        return _announced(ctx, open_targets(Path(settings.path).expanduser(), parts), reused=True)
    folder = (root or store_dir()) / key
    if (folder / "meta.json").exists():
        ctx.events.log(f"{ctx.stage.name}: teacher targets read from the cache {key} (the teacher is not loaded)")
        return _announced(ctx, open_targets(folder, parts), reused=True)
    rows = [row for dataset in datasets for row in dataset]
    ctx.events.log(f"{ctx.stage.name}: building teacher targets (top-{settings.top_k} + tail) for {len(rows)} "
                   f"sequences, once; cache {key}")
    teacher, started = load_teacher(), time.monotonic()
    tmp = folder.with_name(f"{key}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)

    def on_batch(done: int, total: int) -> None:
        ctx.check_cancel()
        ctx.events.progress(f"{ctx.stage.name}:teacher-targets", done, total, time.monotonic() - started,
                            unit="sequence")

    try:
        with heartbeat.activity(f"building teacher targets for {len(rows)} sequences"):
            if build is not None:
                build(teacher, tmp, on_batch)
            else:
                build_targets(teacher, rows, tmp, top_k=settings.top_k, temperature=d.temperature,
                              batch_size=settings.batch_size, device=ctx.device, pad_id=pad_id,
                              on_batch=on_batch)
        meta = {"key": key, "parts": parts, "rows": len(rows), "built_s": round(time.monotonic() - started, 2)}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
        try:
            os.replace(tmp, folder)
        except OSError:  # another run finished the same cache first: theirs is complete too
            shutil.rmtree(tmp, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return _announced(ctx, open_targets(folder, parts), reused=False)


def _announced(ctx: Any, targets: TeacherTargets, *, reused: bool) -> TeacherTargets:
    """The opened cache, announced as an artifact: reused or built, how long building took, its size on disk."""
    targets.reused = reused
    ctx.events.emit("artifact", stage=ctx.stage.name, kind="teacher_targets", path=str(targets.root),
                    bytes=folder_bytes(targets.root), reused=reused,
                    build_s=float(targets.meta.get("built_s", 0.0)), rows=int(targets.meta.get("rows", 0)))
    return targets


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in Path(folder).iterdir() if p.is_file())


def cache_report(targets: TeacherTargets) -> dict:
    """What the cache saved this stage: reused or built (and how long building took), its size on disk, and the
    teacher forward passes avoided, counted per sequence: every sequence read from the cache (each sweep point,
    epoch and evaluation reads its rows again) is one the live teacher would have run, less the ones the build
    itself ran (none when the cache was reused)."""
    rows = int(targets.meta.get("rows", len(targets.offsets) - 1))
    built = 0 if targets.reused else rows
    return {"key": str(targets.meta.get("key", targets.root.name)), "reused": targets.reused,
            "build_s": float(targets.meta.get("built_s", 0.0)), "bytes": folder_bytes(targets.root), "rows": rows,
            "sequences_read": targets.served, "teacher_passes_avoided": max(targets.served - built, 0)}


def report_sentence(report: dict) -> str:
    """The cache's savings in one line for the run monitor's log."""
    how = "reused (built earlier" if report["reused"] else "built this stage (in"
    return (f"teacher-targets cache {report['key']}: {how} {report['build_s']:.1f} s), "
            f"{report['bytes'] / 1e6:.1f} MB on disk, {report['sequences_read']} sequences read from it, "
            f"{report['teacher_passes_avoided']} teacher forward passes avoided")


def with_row_numbers(datasets: list[Any]) -> list[Any]:
    """Each dataset with a ``row`` column numbering its rows across all of them (the targets' row index)."""
    numbered, first = [], 0
    for dataset in datasets:
        rows = None if dataset is None else list(range(first, first + len(dataset)))
        numbered.append(None if dataset is None else dataset.add_column("row", rows))
        first += 0 if dataset is None else len(dataset)
    return numbered
