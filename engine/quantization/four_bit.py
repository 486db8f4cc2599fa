"""4-bit post-training quantization (bitsandbytes NF4/FP4): quantize a model and save it as a plain folder.

Usable outside a run: ``quantize_model(source, out_dir, QuantizeSpec(), "cpu")`` writes a plain transformers
folder (weights, tokenizer, model card) that ``AutoModelForCausalLM.from_pretrained(out_dir)`` reloads without
this project. What it was worth (size, memory, speed, ROUGE-L) is :mod:`engine.quantization.report`'s job.

CPU pitfall (bitsandbytes 0.50): the first CPU inference repacks the 4-bit weights in place for its AVX-512
kernel; a ``save_pretrained`` after that writes a different checkpoint. We therefore always save *before* any
inference; the tests prove the reloaded folder answers exactly like the model just quantized.
"""

from __future__ import annotations

import gc
import json
import logging
import struct
from pathlib import Path
from typing import Any

from engine.core.context import EngineError
from engine.models.loading import kernel_incompatible_linears
from engine.contract.spec import ModelSpec, QuantizeSpec

log = logging.getLogger(__name__)



# ---------------------------------------------------------------- quantize ----------------------------------------

def _spec_of(source: str | Path | ModelSpec) -> ModelSpec:
    return source if isinstance(source, ModelSpec) else ModelSpec(source=str(source))


def quantize_in_memory(source: str | Path | ModelSpec, q: QuantizeSpec, device: str, *,
                       for_saving: bool = False) -> tuple[Any, Any]:
    """Load ``source`` with its block linear layers quantized to 4 bits; returns (model, tokenizer).

    The tensors left unquantized (embeddings, output layer, norms) are held in ``q.compute_dtype`` for use in
    memory, or, ``for_saving``, in the source's own storage dtype: a 4-bit folder is never larger than its
    source because float32 copies of a 16-bit embedding were written into it. Do not run the model before
    saving it (see the module docstring)."""
    from engine.models.loading import load_config, load_tokenizer, resolve_source

    spec = _spec_of(source)
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise EngineError(f"bitsandbytes quantizes on CUDA or the CPU, not on {device}; use device cpu or cuda.")
    resolved = resolve_source(spec.source)  # EngineError for a folder that is not a model
    if getattr(load_config(spec.source), "quantization_config", None):
        raise EngineError(f"{spec.source} is already quantized; quantize its original full-precision model.")
    try:
        import bitsandbytes  # noqa: F401  (a clear sentence instead of transformers' long ImportError)
    except ImportError as exc:
        raise EngineError(f"bitsandbytes is not usable here ({exc}); install bitsandbytes==0.50.2.") from None
    # a GGUF file is unpacked once into a plain folder (engine.models.gguf_source): bitsandbytes quantizes from that
    location, extra = resolved.weights_args()
    local = spec if resolved.kind != "gguf" else ModelSpec(source=location)
    import torch

    compute = getattr(torch, q.compute_dtype)
    dtype = storage_dtype(location, extra, compute) if for_saving else compute
    return _load_4bit(spec, (location, extra), q, device, dtype), load_tokenizer(local)


_SAFETENSORS_DTYPES = {"F16": "float16", "BF16": "bfloat16", "F32": "float32", "F64": "float64"}


def storage_dtype(location: str, extra: dict, fallback: Any) -> Any:
    """The floating-point dtype a model's weights are stored in: the dtype holding most bytes in a local
    folder's safetensors headers, else its config's ``dtype``/``torch_dtype``, else ``fallback``."""
    import torch

    totals: dict[str, int] = {}
    for file in sorted(Path(location).glob("*.safetensors")) if Path(location).is_dir() else []:
        for dtype, size in _header_dtypes(file).items():
            totals[dtype] = totals.get(dtype, 0) + size
    if totals:
        return getattr(torch, _SAFETENSORS_DTYPES[max(totals, key=totals.get)])
    try:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(location, **extra)
    except Exception:  # noqa: BLE001 - no readable config: the caller's dtype
        return fallback
    named = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    named = str(named).replace("torch.", "") if named else ""
    return getattr(torch, named) if named in _SAFETENSORS_DTYPES.values() else fallback


def _header_dtypes(file: Path) -> dict[str, int]:
    """Bytes per float dtype from one safetensors header; {} for a damaged file (the load says what is wrong)."""
    totals: dict[str, int] = {}
    try:
        with open(file, "rb") as f:  # the header only: 8 bytes of length, then JSON
            (length,) = struct.unpack("<Q", f.read(8))
            if length > min(file.stat().st_size - 8, 100 << 20):  # a length no header has: not safetensors
                return {}
            header = json.loads(f.read(length))
        for name, info in header.items():
            if name != "__metadata__" and info.get("dtype") in _SAFETENSORS_DTYPES:
                start, end = info["data_offsets"]
                totals[info["dtype"]] = totals.get(info["dtype"], 0) + int(end) - int(start)
    except (OSError, ValueError, TypeError, KeyError, AttributeError, struct.error):
        return {}
    return totals


def _load_4bit(spec: ModelSpec, where: tuple[str, dict], q: QuantizeSpec, device: str, dtype: Any) -> Any:
    """``dtype``: the unquantized tensors' dtype; the 4-bit matmuls compute in ``q.compute_dtype``."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from engine.models.loading import quantization_config

    compute = getattr(torch, q.compute_dtype)
    location, extra = where
    skip = kernel_incompatible_linears(AutoConfig.from_pretrained(location, **extra))
    if skip:
        log.warning("%d linear layers of %s keep full precision (bitsandbytes' CPU kernel needs in_features %% 64 "
                    "== 0 and out_features %% 32 == 0), e.g. %s", len(skip), spec.source, skip[0])
    qconfig = quantization_config(True, q.quant_type, q.double_quant, compute, skip_modules=skip)
    try:
        model = AutoModelForCausalLM.from_pretrained(location, quantization_config=qconfig, dtype=dtype,
                                                     device_map={"": device}, revision=spec.revision or None,
                                                     **extra)
    except Exception as exc:  # noqa: BLE001 - safetensors, bitsandbytes and config errors have no common base class
        from engine.models.source_checks import brief

        raise EngineError(f"bitsandbytes cannot quantize {spec.source}: {brief(exc, 200)}") from None
    if count_4bit_layers(model) == 0:
        raise EngineError(f"bitsandbytes found no linear layers it can quantize in {spec.source}; 4-bit "
                          "quantization needs torch.nn.Linear layers with in_features a multiple of 64.")
    model.eval()
    model.requires_grad_(False)
    return model


def count_4bit_layers(model: Any) -> int:
    from bitsandbytes.nn import Linear4bit

    return sum(isinstance(m, Linear4bit) for m in model.modules())


def quantize_and_save(source: str | Path | ModelSpec, out_dir: str | Path, q: QuantizeSpec,
                      device: str) -> tuple[Path, Any, Any]:
    """Quantize, then save (before any inference) with tokenizer and model card; returns (folder, model,
    tokenizer) — the in-memory model may be used once the folder is written."""
    from engine.models.loading import save_model

    from engine.core import heartbeat

    spec = _spec_of(source)
    with heartbeat.activity(f"quantizing {spec.source} to 4-bit {q.quant_type}"):
        model, tokenizer = quantize_in_memory(spec, q, device, for_saving=True)
    kept = len(kept_linears(model.config.quantization_config))
    out = save_model(model, tokenizer, Path(out_dir), model_card_text(spec.source, q, kept=kept))
    log.info("saved the 4-bit model to %s", out)
    return out, model, tokenizer


def quantize_model(source_dir_or_spec: str | Path | ModelSpec, out_dir: str | Path, q: QuantizeSpec,
                   device: str) -> Path:
    """Quantize a model (run folder, hub id, folder, GGUF file, demo:*) to 4 bits and save it to ``out_dir``."""
    out, model, _ = quantize_and_save(source_dir_or_spec, out_dir, q, device)
    del model
    gc.collect()
    return out


def model_card_text(base: str, q: QuantizeSpec, scores: dict | None = None, kept: int = 0,
                    datasets: list[str] | None = None) -> str:
    from engine.models.cards import model_card

    how = (f"Post-training quantization with bitsandbytes: the linear layers of every transformer block are "
           f"stored as 4-bit {q.quant_type.upper()} with one scale per 64 weights"
           f"{' (scales quantized again: double quantization)' if q.double_quant else ''}, and de-quantized to "
           f"{q.compute_dtype} for each matmul. Embeddings, output layer and norms keep the source's own precision"
           + (f", and so do {kept} linear layers whose widths bitsandbytes' CPU kernel cannot run (in_features "
              "not a multiple of 64 or out_features not a multiple of 32)." if kept else "."))
    settings = {"quant_type": q.quant_type, "double_quant": q.double_quant, "compute_dtype": q.compute_dtype}
    return model_card(f"4-bit {Path(str(base)).name or base}", str(base), how, settings, scores,
                      tags=["4-bit", "bitsandbytes", q.quant_type, "quantized"], datasets=datasets,
                      relation="quantized")


# ---------------------------------------------------------------- sizes on disk -----------------------------------


def kept_linears(quantization_config: Any) -> list[str]:
    """Linear layers a 4-bit config (a BitsAndBytesConfig or its config.json dict) leaves in full precision,
    besides the output layer, which always stays."""
    skip = (quantization_config.get("llm_int8_skip_modules") if isinstance(quantization_config, dict)
            else getattr(quantization_config, "llm_int8_skip_modules", None)) or []
    return [m for m in skip if m != "lm_head"]
