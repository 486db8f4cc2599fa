"""GGUF files as model sources: checked from their header, unpacked once into a cache, reused afterwards.

transformers reads a GGUF file by de-quantizing every tensor (25–65 s for a 0.5B model), and the model it returns
cannot be saved, quantized to 4 bits by bitsandbytes, or trained like a normal one. So the first load unpacks the
file into a plain ``save_pretrained`` folder (float16 for a quantized file: see ``_storage_dtype``; plus the
tokenizer and the chat template) under ``<data dir>/gguf-cache/<sha256 prefix>/``, written
atomically; every later load — of any stage, run or process — reads that folder like any local model.

The key is the file's SHA-256 (a copied or renamed file finds its cache); hashing a large file takes seconds, so
the hash of a (path, size, mtime) is remembered in ``gguf-cache/index.json``.

Bad input (an architecture transformers cannot read from GGUF, a tensor type nothing can de-quantize) is refused
from the header alone, in one sentence, before anything is written.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any

from engine.contract.safe_json import load_json_file
from engine.core.context import EngineError
from engine.models.source_checks import brief

log = logging.getLogger(__name__)

CACHE_DIR = "gguf-cache"
KEY_LENGTH = 16  # hex digits of the SHA-256 kept in the folder name
COMPLETE = "gguf-source.json"  # written last: a folder without it is an unfinished unpack
FLOAT_TYPES = ("F32", "F16", "BF16")
F16_SAFE_MAX = 6.0e4  # float16's largest finite value is 65504
_RENAMED_ARCHITECTURES = {"qwen2moe": "qwen2_moe", "qwen3moe": "qwen3_moe", "gpt-oss": "gpt_oss",
                          "minimax-m2": "minimax_m2"}
_lock = threading.Lock()  # one unpack at a time per process (the chat service loads from threads)


def cache_root() -> Path:
    from engine.contract.runs import data_dir

    return data_dir() / CACHE_DIR


def file_sha256(path: Path) -> str:
    """The file's SHA-256, remembered per (path, size, mtime) so a multi-GB file is hashed once."""
    path = Path(path).resolve()
    stat = path.stat()
    index_path = cache_root() / "index.json"
    stamp = f"{path}|{stat.st_size}|{stat.st_mtime_ns}"
    try:
        index = load_json_file(index_path, limit=64 << 20)
    except (OSError, ValueError):
        index = {}
    if not isinstance(index, dict):  # a damaged cache index is a cache miss, never a failure
        index = {}
    if isinstance(index.get(stamp), str):
        return index[stamp]
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(16 * 2**20), b""):
            digest.update(block)
    index[stamp] = digest.hexdigest()
    index_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = index_path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(index, indent=1), encoding="utf-8")
    os.replace(tmp, index_path)
    return index[stamp]


_SCALAR_BYTES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}  # GGUF value type → size
_STRING, _ARRAY = 8, 9


class _Bounds:
    """A walk over a GGUF header that checks every declared count and length against the bytes that are left.
    gguf-py believes the header: a 40-byte file declaring a 2**40-element array makes it build a list that
    size (killed for memory), so the header is walked here first, in constant memory."""

    def __init__(self, data: Any) -> None:
        self.data, self.pos = data, 0

    def take(self, fmt: str) -> int:
        import struct

        value = struct.unpack_from(fmt, self.data, self.pos)[0]  # struct.error past the end: a cut-short file
        self.pos += struct.calcsize(fmt)
        return value

    def skip(self, count: int, size: int, what: str) -> None:
        if count * size > len(self.data) - self.pos:
            raise ValueError(f"{what} declares {count:,} × {size} bytes, more than the file holds")
        self.pos += count * size

    def value(self, kind: int, depth: int = 0) -> None:
        if kind == _STRING:
            self.skip(self.take("<Q"), 1, "a string")
        elif kind == _ARRAY and depth < 4:
            item, count = self.take("<I"), self.take("<Q")
            if item in _SCALAR_BYTES:
                self.skip(count, _SCALAR_BYTES[item], "an array")
            else:
                self.skip(count, 8, "an array")  # every string or array element takes at least 8 bytes
                self.pos -= count * 8
                for _ in range(count):
                    self.value(item, depth + 1)
        elif kind in _SCALAR_BYTES:
            self.skip(1, _SCALAR_BYTES[kind], "a value")
        else:
            raise ValueError(f"unknown value type {kind}")


def _check_bounds(path: Path) -> None:
    """Every count and length in the GGUF header fits inside the file (see :class:`_Bounds`)."""
    import mmap

    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        walk = _Bounds(data)
        if data[:4] != b"GGUF" or walk.skip(1, 4, "the magic") or walk.take("<I") not in (2, 3):
            raise ValueError("not a GGUF file of version 2 or 3")
        tensors, fields = walk.take("<Q"), walk.take("<Q")
        walk.skip(fields, 13, "the metadata")  # key length (8) + key (≥ 1) + type (4)
        walk.pos -= fields * 13
        for _ in range(fields):
            walk.value(_STRING)  # the key
            walk.value(walk.take("<I"))
        walk.skip(tensors, 24, "the tensor table")  # name length (8) + dims (4) + type (4) + offset (8)


_headers: dict[tuple[str, int, int], dict] = {}  # (path, size, mtime) → header: parsed once per process


def header(path: Path) -> dict:
    """Architecture, tensor types (type → count) and name of a GGUF file, read from its header once per process:
    every source check of a run (resolve, config, dtype, memory plan) asks again, and a 0.5B file's header walk
    takes about a second. Keyed by path, size and mtime, so a file replaced on disk is read again."""
    path = Path(path)
    try:
        stat = path.stat()
        key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    except OSError:
        key = None  # parse_header says why in its sentence
    if key is not None and key in _headers:
        return dict(_headers[key], types=dict(_headers[key]["types"]))
    info = parse_header(path)
    if key is not None:
        _headers[key] = info
    return dict(info, types=dict(info["types"]))


def parse_header(path: Path) -> dict:
    """The header read from the file (memory-mapped), bounds-checked first; see :func:`header`."""
    from gguf import GGUFReader

    try:
        _check_bounds(path)
        reader = GGUFReader(str(path))
    except Exception as exc:  # noqa: BLE001 - gguf raises ValueError, struct.error, … for a damaged file
        raise EngineError(f"{path} is not a readable GGUF file ({type(exc).__name__}: "
                          f"{brief(exc, 120) if str(exc) else 'no detail'}); it is damaged or cut "
                          "short, so download or convert it again.") from None

    def text(key: str) -> str:
        field = reader.fields.get(key)
        return bytes(field.parts[field.data[0]]).decode("utf-8", "replace") if field is not None else ""

    types: dict[str, int] = {}
    for tensor in reader.tensors:
        types[tensor.tensor_type.name] = types.get(tensor.tensor_type.name, 0) + 1
    return {"architecture": text("general.architecture"), "name": text("general.name"), "types": types}


def dequantizable_types() -> set[str]:
    """GGML tensor types gguf-py can de-quantize (what transformers uses when it reads a GGUF file)."""
    import gguf.quants

    traits = getattr(gguf.quants, "_type_traits", {})  # gguf-py's registry of implemented quant types
    return set(FLOAT_TYPES) | {t.name for t in traits}


def check_supported(path: Path) -> dict:
    """The header, or EngineError naming what transformers cannot read (architecture or tensor type)."""
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    info = header(path)
    arch = info["architecture"]
    if arch not in GGUF_SUPPORTED_ARCHITECTURES and _RENAMED_ARCHITECTURES.get(arch) not in \
            GGUF_SUPPORTED_ARCHITECTURES:
        raise EngineError(f"{path.name} holds a {arch or 'unnamed'} model, an architecture transformers cannot read "
                          "from GGUF; give the model's original transformers folder or hub id instead.")
    unknown = sorted(set(info["types"]) - dequantizable_types())
    if unknown:
        raise EngineError(f"{path.name} stores tensors as {', '.join(unknown)}, which gguf-py cannot de-quantize; "
                          "use a GGUF quantized as Q8_0, Q4_K_M or another common type, or the original model.")
    return info


def cached_folder(path: Path) -> Path | None:
    """The unpacked folder of ``path`` if it is already in the cache (no unpacking)."""
    folder = cache_root() / file_sha256(path)[:KEY_LENGTH]
    return folder if (folder / COMPLETE).is_file() else None


def unpacked_folder(path: str | Path) -> Path:
    """The plain transformers folder of a GGUF file, unpacked on first use (see the module docstring)."""
    from engine.core import heartbeat

    path = Path(path).expanduser()
    with _lock:
        found = cached_folder(path)
        if found is not None:
            return found
        info = check_supported(path)
        target = cache_root() / file_sha256(path)[:KEY_LENGTH]
        size_gb = path.stat().st_size / 1e9
        log.info("unpacking %s (%.2f GB) into %s", path.name, size_gb, target)
        with heartbeat.activity(f"unpacking {path.name} ({size_gb:.2f} GB) once into the GGUF cache"):
            _unpack(path, target, info)
        return target


def _storage_dtype(types: dict[str, int]) -> Any:
    """The dtype the cache stores: F32-only files stay float32, F16/BF16-only files keep their type, and
    quantized files become float16 — its rounding (≤ 2⁻¹¹ relative) is far below the quantization step already
    in the weights (Q8_0: ≈ 2⁻⁸ of a block's largest value), and it halves the folder against float32."""
    import torch

    floats = set(types) - {"F32"}
    if not floats:
        return torch.float32
    if floats == {"BF16"}:
        return torch.bfloat16
    return torch.float16


def _unpack(path: Path, target: Path, info: dict) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype = _storage_dtype(info["types"])
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        try:  # de-quantized exactly (float32), then stored as ``dtype`` where every value fits
            model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
            tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
        except (OSError, ValueError, NotImplementedError, KeyError) as exc:
            raise EngineError(f"transformers cannot read {path.name}: {brief(exc, 200)}") from None
        if dtype == torch.float16 and any(p.abs().max() > F16_SAFE_MAX for p in model.parameters()):
            dtype = torch.float32  # a weight beyond float16's range (rare): keep every value exact instead
        model.to(dtype)
        # the weights are plain de-quantized tensors now; only the GGUF loader's marker forbids saving them
        model.hf_quantizer = None
        model.config.__dict__.pop("quantization_config", None)
        with torch.no_grad():
            model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        (staging / COMPLETE).write_text(json.dumps({"file": str(path.resolve()), "bytes": path.stat().st_size,
                                                    "dtype": str(dtype).replace("torch.", ""), **info}, indent=2),
                                        encoding="utf-8")
        staging.chmod(0o755)
        if (target / COMPLETE).is_file():  # another process (the chat service, a parallel run) finished first
            return
        shutil.rmtree(target, ignore_errors=True)  # an unfinished folder left by a crash
        try:
            os.replace(staging, target)
        except OSError:
            if not (target / COMPLETE).is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def source_info(folder: Path) -> dict:
    """What the cache recorded about the GGUF a folder was unpacked from (file, bytes, tensor types), or {}."""
    try:
        info = load_json_file(Path(folder) / COMPLETE)
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}
