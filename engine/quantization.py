"""4-bit post-training quantization (bitsandbytes NF4/FP4) and the report that says whether it was worth it.

Usable outside a run: ``quantize_model(source, out_dir, QuantizeSpec(), "cpu")`` writes a plain transformers
folder (weights, tokenizer, model card) that ``AutoModelForCausalLM.from_pretrained(out_dir)`` reloads without
this project. ``quantization_report`` compares the original and the 4-bit model side by side: size on disk,
resident memory, load time, time to first token, decode speed (each measured in a fresh subprocess so RSS is
honest) and ROUGE-L on held-out records, with the retention after quantization.

CPU pitfall (bitsandbytes 0.50): the first CPU inference repacks the 4-bit weights in place for its AVX-512
kernel; a ``save_pretrained`` after that writes a different checkpoint. We therefore always save *before* any
inference; the tests prove the reloaded folder answers exactly like the model just quantized.

``python -m engine.quantization measure FOLDER`` is the subprocess side of the speed/memory measurement.
"""
from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from engine.context import EngineError
from engine.spec import GenerationSpec, ModelSpec, QuantizeSpec

log = logging.getLogger(__name__)

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt")
MEASURE_PROMPT = "Explain in a few sentences why smaller language models are useful on laptops."
MEASURE_NEW_TOKENS = 32
_PROJECT_ROOT = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------- quantize ----------------------------------------

def _spec_of(source: str | Path | ModelSpec) -> ModelSpec:
    return source if isinstance(source, ModelSpec) else ModelSpec(source=str(source))


def quantize_in_memory(source: str | Path | ModelSpec, q: QuantizeSpec, device: str) -> tuple[Any, Any]:
    """Load ``source`` with its block linear layers quantized to 4 bits; returns (model, tokenizer).

    Do not run the model before saving it (see the module docstring)."""
    from engine.models import load_config, load_tokenizer, resolve_source

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
    if resolved.kind != "gguf":
        return _load_4bit(spec, resolved.from_pretrained_args(), q, device), load_tokenizer(spec)
    # transformers will not quantize while reading a GGUF file: de-quantize it into a plain folder first
    with tempfile.TemporaryDirectory(prefix="gguf-", ignore_cleanup_errors=True) as tmp:
        _gguf_to_folder(spec, Path(tmp), q)
        local = ModelSpec(source=tmp)
        return _load_4bit(spec, (tmp, {}), q, device), load_tokenizer(local)


def _gguf_to_folder(spec: ModelSpec, folder: Path, q: QuantizeSpec) -> None:
    """transformers marks a GGUF-loaded model unserializable; its de-quantized weights go into a plain model."""
    from transformers import AutoModelForCausalLM

    from engine.models import load_model, load_tokenizer

    loaded = load_model(ModelSpec(source=spec.source, dtype=q.compute_dtype), "cpu")
    config = loaded.config
    config.__dict__.pop("quantization_config", None)
    plain = AutoModelForCausalLM.from_config(config, dtype=loaded.dtype)
    plain.load_state_dict(loaded.state_dict())
    plain.save_pretrained(folder)
    load_tokenizer(spec).save_pretrained(folder)
    del loaded, plain
    gc.collect()


def kernel_incompatible_linears(config: Any) -> list[str]:
    """Linear layers bitsandbytes' CPU kernel cannot run in 4 bits: its AVX-512 repacking needs
    in_features % 64 == 0 and out_features % 32 == 0 (Qwen's real sizes pass; toy widths such as 96 do not).
    They stay in full precision so the saved model runs on every device. Found on the meta device: no weights."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return [name for name, m in model.named_modules() if isinstance(m, torch.nn.Linear) and name != "lm_head"
            and (m.in_features % 64 or m.out_features % 32)]


def _load_4bit(spec: ModelSpec, where: tuple[str, dict], q: QuantizeSpec, device: str) -> Any:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from engine.models import quantization_config

    compute = getattr(torch, q.compute_dtype)
    location, extra = where
    skip = kernel_incompatible_linears(AutoConfig.from_pretrained(location, **extra))
    if skip:
        log.warning("%d linear layers of %s keep full precision (bitsandbytes' CPU kernel needs in_features %% 64 "
                    "== 0 and out_features %% 32 == 0), e.g. %s", len(skip), spec.source, skip[0])
    qconfig = quantization_config(True, q.quant_type, q.double_quant, compute, skip_modules=skip)
    try:
        model = AutoModelForCausalLM.from_pretrained(location, quantization_config=qconfig, dtype=compute,
                                                     device_map={"": device}, revision=spec.revision or None,
                                                     **extra)
    except Exception as exc:  # safetensors, bitsandbytes and config errors have no common base class
        first = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise EngineError(f"bitsandbytes cannot quantize {spec.source}: {first}") from None
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
    from engine.models import save_model

    spec = _spec_of(source)
    model, tokenizer = quantize_in_memory(spec, q, device)
    kept = len(kept_linears(model.config.quantization_config))
    out = save_model(model, tokenizer, Path(out_dir), model_card_text(spec.source, q, kept=kept))
    log.info("saved the 4-bit model to %s (%s)", out, _fmt_mb(weight_file_bytes(out)))
    return out, model, tokenizer


def quantize_model(source_dir_or_spec: str | Path | ModelSpec, out_dir: str | Path, q: QuantizeSpec,
                   device: str) -> Path:
    """Quantize a model (run folder, hub id, folder, GGUF file, demo:*) to 4 bits and save it to ``out_dir``."""
    out, model, _ = quantize_and_save(source_dir_or_spec, out_dir, q, device)
    del model
    gc.collect()
    return out


def model_card_text(base: str, q: QuantizeSpec, scores: dict | None = None, kept: int = 0) -> str:
    from engine.models import model_card

    how = (f"Post-training quantization with bitsandbytes: the linear layers of every transformer block are "
           f"stored as 4-bit {q.quant_type.upper()} with one scale per 64 weights"
           f"{' (scales quantized again: double quantization)' if q.double_quant else ''}, and de-quantized to "
           f"{q.compute_dtype} for each matmul. Embeddings, output layer and norms keep full precision"
           + (f", and so do {kept} linear layers whose widths bitsandbytes' CPU kernel cannot run (in_features "
              "not a multiple of 64 or out_features not a multiple of 32)." if kept else "."))
    settings = {"quant_type": q.quant_type, "double_quant": q.double_quant, "compute_dtype": q.compute_dtype}
    return model_card(f"4-bit {Path(str(base)).name or base}", str(base), how, settings, scores)


# ---------------------------------------------------------------- sizes on disk -----------------------------------

def weight_file_bytes(folder: str | Path) -> int:
    """Bytes of the weight files in a model folder (or of one weight file)."""
    path = Path(folder)
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.iterdir() if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES))


def safetensors_entries(folder: str | Path) -> dict[str, int]:
    """Tensor name → bytes, read from the safetensors headers only (no weights loaded)."""
    entries: dict[str, int] = {}
    for file in sorted(Path(folder).glob("*.safetensors")):
        with open(file, "rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(length))
        for name, info in header.items():
            if name != "__metadata__":
                start, end = info["data_offsets"]
                entries[name] = end - start
    return entries


def linear_weight_bytes(original_dir: str | Path, quantized_dir: str | Path) -> tuple[int, int]:
    """Bytes of the quantized linear layers' weights in both folders: the original ``<m>.weight`` against every
    ``<m>.weight*`` tensor (packed data, absmax, quant map, nested constants) of the 4-bit folder."""
    orig, quant = safetensors_entries(original_dir), safetensors_entries(quantized_dir)
    modules = {k[: -len(".weight.absmax")] for k in quant if k.endswith(".weight.absmax")}
    before = sum(orig.get(f"{m}.weight", 0) for m in modules)
    after = sum(b for k, b in quant.items() if any(k.startswith(f"{m}.weight") for m in modules))
    return before, after


# ---------------------------------------------------------------- speed and memory (subprocess) -------------------

def _measure(folder: str, device: str, prompt: str, new_tokens: int) -> dict:
    """Load one model and time it; runs in a fresh process so the RSS delta is this model's alone."""
    import psutil
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, StoppingCriteria, StoppingCriteriaList

    try:
        import bitsandbytes  # noqa: F401  (imported before the baseline so both models pay it equally)
    except ImportError:
        pass
    proc = psutil.Process()
    gc.collect()
    rss0 = proc.memory_info().rss
    cuda0 = torch.cuda.memory_allocated() if device.startswith("cuda") else 0
    t0 = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(folder, dtype="auto", device_map={"": device}).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    load_s = time.perf_counter() - t0
    rss_load = proc.memory_info().rss - rss0
    gpu_load = (torch.cuda.memory_allocated() - cuda0) if device.startswith("cuda") else None

    class Stamps(StoppingCriteria):  # called once per generated token: its clock gives TTFT and decode speed
        def __init__(self) -> None:
            self.times: list[float] = []
            self.cpu: list[float] = []  # process CPU time: comparable even on a machine busy with other work

        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            self.times.append(time.perf_counter())
            self.cpu.append(time.process_time())
            return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)

    ids = tokenizer(prompt, return_tensors="pt").to(device)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    def timed(n: int) -> tuple[float, Stamps]:
        stamps = Stamps()
        start = time.perf_counter()
        with torch.no_grad():
            model.generate(**ids, max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=pad,
                           stopping_criteria=StoppingCriteriaList([stamps]))
        return start, stamps

    start, stamps = timed(2)  # cold: includes one-off work such as bitsandbytes' CPU weight repacking
    first_call_s = stamps.times[0] - start
    # safetensors are memory-mapped: weights become resident only once touched, so the honest footprint is
    # read after this first generation (the RSS right after from_pretrained is reported too)
    rss_used = proc.memory_info().rss - rss0
    start, stamps = timed(new_tokens)
    times = stamps.times
    decode = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else None
    cpu_per_token = (stamps.cpu[-1] - stamps.cpu[0]) / (len(times) - 1) if len(times) > 1 else None
    return {"load_s": load_s, "cpu_s_per_token": cpu_per_token, "threads": torch.get_num_threads(),
            "rss_bytes": rss_used, "rss_after_load_bytes": rss_load, "gpu_bytes": gpu_load,
            "rss_after_generate_bytes": proc.memory_info().rss - rss0, "first_call_s": first_call_s,
            "ttft_s": times[0] - start, "tokens_per_s": decode, "prompt_tokens": int(ids["input_ids"].shape[1]),
            "new_tokens": len(times)}


def measure_in_subprocess(folder: str | Path, device: str, prompt: str = MEASURE_PROMPT,
                          new_tokens: int = MEASURE_NEW_TOKENS, timeout_s: float = 900) -> dict:
    """``_measure`` in a fresh Python process; EngineError with its last stderr line if it fails."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(_PROJECT_ROOT), os.environ.get("PYTHONPATH", "")]))
    cmd = [sys.executable, "-m", "engine.quantization", "measure", str(folder), "--device", device,
           "--prompt", prompt, "--new-tokens", str(new_tokens)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout_s, cwd=_PROJECT_ROOT)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1][:200]
        raise EngineError(f"measuring {folder} failed: {tail}")
    return json.loads(lines[-1])


# ---------------------------------------------------------------- quality -----------------------------------------

def _load_folder(folder: str | Path, device: str) -> tuple[Any, Any]:
    """A saved model folder (4-bit or not) exactly as plain transformers loads it."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype="auto", device_map={"": device}).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def headline_scores(scores: dict) -> dict[str, float]:
    """The overall numbers of a score_predictions result (per-category breakdowns left out)."""
    overall = scores.get("overall", scores) if isinstance(scores, dict) else {}
    return {k: float(v) for k, v in overall.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "n"}


def evaluate_folder(folder: str | Path, records: list[dict], preset: str, gen: GenerationSpec, device: str,
                    on_progress: Callable | None = None) -> tuple[dict, list[str]]:
    """ROUGE-L (and exact match / answer accuracy where the data has them) of one saved model; (scores, preds)."""
    from engine.evaluation import evaluate_model

    model, tokenizer = _load_folder(folder, device)
    try:
        return evaluate_model(model, tokenizer, records, preset, gen, device, on_progress=on_progress)
    finally:
        del model
        gc.collect()


# ---------------------------------------------------------------- the report --------------------------------------

def layer_counts(quantized_dir: str | Path) -> dict[str, int]:
    """How many linear layers are 4-bit, and how many stayed full precision (kernel-incompatible widths)."""
    config = json.loads((Path(quantized_dir) / "config.json").read_text(encoding="utf-8"))
    kept = kept_linears(config.get("quantization_config", {}))
    absmax = [k for k in safetensors_entries(quantized_dir) if k.endswith(".weight.absmax")]
    return {"layers_4bit": len(absmax), "layers_full_precision": len(kept)}


def kept_linears(quantization_config: Any) -> list[str]:
    """Linear layers a 4-bit config (a BitsAndBytesConfig or its config.json dict) leaves in full precision,
    besides the output layer, which always stays."""
    skip = (quantization_config.get("llm_int8_skip_modules") if isinstance(quantization_config, dict)
            else getattr(quantization_config, "llm_int8_skip_modules", None)) or []
    return [m for m in skip if m != "lm_head"]


def _ratio(a: Any, b: Any) -> float | None:
    return round(a / b, 4) if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b else None


def quantization_report(original_dir: str | Path, quantized_dir: str | Path, records: list[dict], preset: str,
                        gen: GenerationSpec, device: str, *, measure: bool = True,
                        on_progress: Callable[[str, int, int], None] | None = None) -> dict:
    """Original vs 4-bit side by side: disk, linear-layer bytes, RSS, load time, TTFT, tokens/s, scores and
    retention (4-bit ÷ original). ``on_progress(phase, done, total)`` is called between the steps."""
    sides: dict[str, dict] = {}
    for name, folder in (("original", original_dir), ("quantized", quantized_dir)):
        sides[name] = {"path": str(folder), "disk_bytes": weight_file_bytes(folder)}
    sides["original"]["linear_bytes"], sides["quantized"]["linear_bytes"] = \
        linear_weight_bytes(original_dir, quantized_dir)
    sides["quantized"].update(layer_counts(quantized_dir))
    steps = [(n, "measure") for n in sides if measure] + [(n, "evaluate") for n in sides if records]
    for i, (name, what) in enumerate(steps):
        if on_progress:
            on_progress(f"{what} {name}", i, len(steps))
        if what == "measure":
            prompt = MEASURE_PROMPT if not records else records[0].get("instruction") or MEASURE_PROMPT
            sides[name].update(measure_in_subprocess(sides[name]["path"], device, prompt))
        else:
            scores, preds = evaluate_folder(sides[name]["path"], records, preset, gen, device)
            sides[name]["scores"] = headline_scores(scores)
            sides[name]["scores_detail"] = scores
            sides[name]["examples"] = [{"prompt": r.get("instruction", ""), "reference": r.get("response", ""),
                                        "prediction": p} for r, p in list(zip(records, preds))[:3]]
    if on_progress:
        on_progress("done", len(steps), len(steps))
    o, q = sides["original"], sides["quantized"]
    ratios = {key: _ratio(q.get(key), o.get(key)) for key in ("disk_bytes", "linear_bytes", "rss_bytes", "load_s",
                                                                 "ttft_s", "tokens_per_s", "cpu_s_per_token")}
    retention = {k: _ratio(v, o.get("scores", {}).get(k)) for k, v in q.get("scores", {}).items()}
    return {"device": device, "samples": len(records), "preset": preset, "original": o, "quantized": q,
            "ratios": ratios, "retention": retention}


def _fmt_mb(n: Any) -> str:
    return f"{n / 1e6:.2f} MB" if isinstance(n, (int, float)) else "—"


def _fmt(n: Any, digits: int = 3) -> str:
    return f"{n:.{digits}f}" if isinstance(n, (int, float)) else "—"


def report_markdown(report: dict, title: str = "4-bit quantization") -> str:
    """The report as a markdown table (appended to the run's eval.md and quoted in the model card)."""
    o, q, r = report["original"], report["quantized"], report["ratios"]
    rows = [("size on disk", _fmt_mb(o.get("disk_bytes")), _fmt_mb(q.get("disk_bytes")), r.get("disk_bytes")),
            ("linear-layer weights", _fmt_mb(o.get("linear_bytes")), _fmt_mb(q.get("linear_bytes")),
             r.get("linear_bytes")),
            ("resident memory (after load + first token)", _fmt_mb(o.get("rss_bytes")), _fmt_mb(q.get("rss_bytes")),
             r.get("rss_bytes")),
            ("load time (s)", _fmt(o.get("load_s")), _fmt(q.get("load_s")), r.get("load_s")),
            ("time to first token (s)", _fmt(o.get("ttft_s")), _fmt(q.get("ttft_s")), r.get("ttft_s")),
            ("decode tokens/s", _fmt(o.get("tokens_per_s"), 1), _fmt(q.get("tokens_per_s"), 1),
             r.get("tokens_per_s")),
            ("decode CPU seconds per token", _fmt(o.get("cpu_s_per_token"), 4), _fmt(q.get("cpu_s_per_token"), 4),
             r.get("cpu_s_per_token"))]
    for key, ret in report.get("retention", {}).items():
        rows.append((key, _fmt(o.get("scores", {}).get(key), 4), _fmt(q.get("scores", {}).get(key), 4), ret))
    kept = q.get("layers_full_precision", 0)
    layers = f"{q.get('layers_4bit', '?')} linear layers in 4 bits" + (
        f", {kept} kept in full precision (widths bitsandbytes' CPU kernel cannot run)" if kept else "")
    lines = [f"## {title}", "", f"Device: {report['device']}; held-out samples: {report['samples']}; {layers}.", "",
             "| | original | 4-bit | 4-bit ÷ original |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {_fmt(d)} |" for a, b, c, d in rows]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- subprocess entry --------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine.quantization")
    sub = parser.add_subparsers(dest="command", required=True)
    m = sub.add_parser("measure", help="load a model folder and time it; prints one JSON line")
    m.add_argument("folder")
    m.add_argument("--device", default="cpu")
    m.add_argument("--prompt", default=MEASURE_PROMPT)
    m.add_argument("--new-tokens", type=int, default=MEASURE_NEW_TOKENS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    result = _measure(args.folder, args.device, args.prompt, args.new_tokens)
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
