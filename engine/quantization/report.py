"""The 4-bit report: what quantization bought (size on disk, resident memory, load time, time to first token,
decode speed — each measured in a fresh subprocess so RSS is honest) and what it cost (ROUGE-L on held-out
records, retention after quantization), as a dict and as Markdown.

``python -m engine.quantization.report measure FOLDER`` is the subprocess side of the speed/memory measurement.
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
import time
from pathlib import Path
from typing import Any
from collections.abc import Callable

from engine.core import heartbeat
from engine.core.context import EngineError
from engine.quantization.four_bit import kept_linears
from engine.contract.spec import GenerationSpec

log = logging.getLogger(__name__)

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt")
MEASURE_PROMPT = "Explain in a few sentences why smaller language models are useful on laptops."
MEASURE_NEW_TOKENS = 32
_PROJECT_ROOT = Path(__file__).resolve().parents[2]


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
    cmd = [sys.executable, "-m", "engine.quantization.report", "measure", str(folder), "--device", device,
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
    from engine.evaluation.generation import evaluate_model

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




def _ratio(a: Any, b: Any) -> float | None:
    return round(a / b, 4) if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b else None


PARTS = ("size", "speed and memory", "quality")  # in the order they are measured; report["measured"] lists them


def size_report(original_dir: str | Path, quantized_dir: str | Path, device: str, preset: str) -> dict:
    """The part known at once, from the files alone: sizes on disk, linear-layer and 16/32-bit bytes (what the
    weights occupy once loaded), layer counts, and the GGUF file a source was unpacked from."""
    sides: dict[str, dict] = {}
    modules = quantized_modules(quantized_dir)
    for name, folder in (("original", original_dir), ("quantized", quantized_dir)):
        sides[name] = {"path": str(folder), "disk_bytes": weight_file_bytes(folder),
                       "full_precision_bytes": full_precision_bytes(folder, modules)}
    sides["original"]["linear_bytes"], sides["quantized"]["linear_bytes"] = \
        linear_weight_bytes(original_dir, quantized_dir)
    sides["quantized"].update(layer_counts(quantized_dir))
    report = {"device": device, "samples": 0, "preset": preset, "original": sides["original"],
              "quantized": sides["quantized"], "ratios": {}, "retention": {}, "measured": ["size"],
              "state": "measuring"}
    from engine.models.gguf_source import source_info

    gguf = source_info(original_dir)  # the original was unpacked from a GGUF file: compare with the file too
    if gguf:
        report["gguf"] = {"file": gguf.get("file"), "bytes": gguf.get("bytes"), "types": gguf.get("types", {})}
    _update_ratios(report)
    return report


def _update_ratios(report: dict) -> None:
    o, q = report["original"], report["quantized"]
    report["ratios"] = {key: _ratio(q.get(key), o.get(key)) for key in (
        "disk_bytes", "linear_bytes", "rss_bytes", "load_s", "ttft_s", "tokens_per_s", "cpu_s_per_token")}
    report["retention"] = {k: _ratio(v, o.get("scores", {}).get(k)) for k, v in q.get("scores", {}).items()}
    if report.get("gguf"):
        report["ratios"]["gguf_bytes"] = _ratio(q.get("disk_bytes"), report["gguf"].get("bytes"))


def quantization_report(original_dir: str | Path, quantized_dir: str | Path, records: list[dict], preset: str,
                        gen: GenerationSpec, device: str, *, measure: bool = True,
                        on_progress: Callable[[str, int, int], None] | None = None,
                        publish: Callable[[dict], None] | None = None, budget: float | None = None,
                        announce: Callable[[Any], None] | None = None,
                        on_answer: Callable[[int, int], None] | None = None) -> dict:
    """Original vs 4-bit side by side, in the order things become known, each part ``publish``ed (the report
    so far) as soon as it is measured: sizes (at once, from the files), memory and speed (one fresh subprocess
    per model), quality (ROUGE-L and retention on the same held-out records; their number sized to ``budget``
    seconds after timing the first answers, the plan ``announce``d before the long part). A cancel raised from
    a callback leaves the last published report complete for what it lists in ``measured``.
    ``on_progress(phase, done, total)`` is called between the steps, ``on_answer(done, total)`` per batch."""
    report = size_report(original_dir, quantized_dir, device, preset)
    publish = publish or (lambda r: None)
    publish(report)
    steps = (2 if measure else 0) + (1 if records else 0)
    done = 0
    for name in ("original", "quantized") if measure else ():
        if on_progress:
            on_progress(f"measure {name}", done, steps)
        prompt = MEASURE_PROMPT if not records else records[0].get("instruction") or MEASURE_PROMPT
        with heartbeat.activity(f"measuring memory and speed of the {name} model in a fresh process"):
            report[name].update(measure_in_subprocess(report[name]["path"], device, prompt))
        done += 1
    if measure:
        report["measured"].append("speed and memory")
        _update_ratios(report)
        publish(report)
    if records:
        if on_progress:
            on_progress("evaluate both models", done, steps)
        _quality(report, records, preset, gen, device, budget, announce or (lambda plan: None), on_answer,
                 publish)
        done += 1
    if on_progress:
        on_progress("done", done, steps)
    report["state"] = "complete"
    return report


def _quality(report: dict, records: list[dict], preset: str, gen: GenerationSpec, device: str,
             budget: float | None, announce: Callable[[Any], None],
             on_answer: Callable[[int, int], None] | None, publish: Callable[[dict], None]) -> None:
    """Both models answer the same held-out records: the original first (its first answers timed to size the
    sample count), then the 4-bit model; scores, retention and examples go into ``report``."""
    from engine.evaluation.budget import answer_in_two_parts
    from engine.evaluation.generation import answerer, score_answers

    planned = [len(records) * 2]

    def on_plan(plan: Any) -> None:
        planned[0] = plan.chosen * 2
        report.update(samples=plan.chosen, samples_asked=plan.asked, quality_plan=plan.sentence(2, device),
                      quality_eta_s=round(plan.eta_s, 1))
        publish(report)
        announce(plan)

    chosen: list[dict] = records
    for offset, name in enumerate(("original", "quantized")):
        model, tokenizer = _load_folder(report[name]["path"], device)
        first = offset * len(chosen)

        def step(n: int, _total: Any, _first: int = first) -> None:
            if on_answer:
                on_answer(_first + n, planned[0])

        answer = answerer(model, tokenizer, preset, gen, device, on_progress=step)
        try:
            if name == "original":
                chosen, preds = answer_in_two_parts(answer, records, 2, budget, on_plan, gen.batch_size)
            else:
                preds = answer(chosen)
        finally:
            del model, answer
            gc.collect()
        scores = score_answers(chosen, preds, preset)
        report[name]["scores"], report[name]["scores_detail"] = headline_scores(scores), scores
        report[name]["examples"] = [{"prompt": r.get("instruction", ""), "reference": r.get("response", ""),
                                     "prediction": p} for r, p in list(zip(chosen, preds))[:3]]
    report["measured"].append("quality")
    _update_ratios(report)
    publish(report)


def quantized_modules(quantized_dir: str | Path) -> set[str]:
    """The linear layers a 4-bit folder stores in 4 bits (those with an ``absmax`` constant)."""
    return {k[: -len(".weight.absmax")] for k in safetensors_entries(quantized_dir) if k.endswith(".weight.absmax")}


def full_precision_bytes(folder: str | Path, modules: set[str] | None = None) -> int:
    """Bytes of the tensors a folder keeps in 16/32 bits: everything but the weights of the linear layers the
    4-bit model quantizes (``modules``; default: this folder's own 4-bit layers) — embeddings, output layer,
    norms, biases, and linear layers bitsandbytes skipped. Given the 4-bit folder's modules, the original's
    number counts the same tensors (like with like)."""
    entries = safetensors_entries(folder)
    modules = quantized_modules(folder) if modules is None else modules
    return sum(b for k, b in entries.items() if not any(k.startswith(f"{m}.weight") for m in modules))


def fmt_mb(n: Any) -> str:
    return f"{n / 1e6:.2f} MB" if isinstance(n, (int, float)) else "—"


def _fmt(n: Any, digits: int = 3) -> str:
    return f"{n:.{digits}f}" if isinstance(n, (int, float)) else "—"


def report_markdown(report: dict, title: str = "4-bit quantization") -> str:
    """The report as a markdown table (appended to the run's eval.md and quoted in the model card)."""
    o, q, r = report["original"], report["quantized"], report.get("ratios") or {}
    rows = [("size on disk", fmt_mb(o.get("disk_bytes")), fmt_mb(q.get("disk_bytes")), r.get("disk_bytes")),
            ("linear-layer weights", fmt_mb(o.get("linear_bytes")), fmt_mb(q.get("linear_bytes")),
             r.get("linear_bytes")),
            ("resident memory (after load + first token)", fmt_mb(o.get("rss_bytes")), fmt_mb(q.get("rss_bytes")),
             r.get("rss_bytes")),
            ("load time (s)", _fmt(o.get("load_s")), _fmt(q.get("load_s")), r.get("load_s")),
            ("time to first token (s)", _fmt(o.get("ttft_s")), _fmt(q.get("ttft_s")), r.get("ttft_s")),
            ("decode tokens/s", _fmt(o.get("tokens_per_s"), 1), _fmt(q.get("tokens_per_s"), 1),
             r.get("tokens_per_s")),
            ("decode CPU seconds per token", _fmt(o.get("cpu_s_per_token"), 4), _fmt(q.get("cpu_s_per_token"), 4),
             r.get("cpu_s_per_token"))]
    rows.insert(2, ("kept in 16/32 bits (embeddings, output layer, norms)", fmt_mb(o.get("full_precision_bytes")),
                    fmt_mb(q.get("full_precision_bytes")), _ratio(q.get("full_precision_bytes"),
                                                                   o.get("full_precision_bytes"))))
    gguf = report.get("gguf")
    if gguf:  # the honest comparison for a GGUF source: its own file, not the unpacked copy
        rows.insert(0, (f"size on disk vs the GGUF file ({', '.join(sorted(gguf.get('types', {})))})",
                        fmt_mb(gguf.get("bytes")), fmt_mb(q.get("disk_bytes")), r.get("gguf_bytes")))
    for key, ret in report.get("retention", {}).items():
        rows.append((key, _fmt(o.get("scores", {}).get(key), 4), _fmt(q.get("scores", {}).get(key), 4), ret))
    kept = q.get("layers_full_precision", 0)
    layers = f"{q.get('layers_4bit', '?')} linear layers in 4 bits" + (
        f", {kept} kept in full precision (widths bitsandbytes' CPU kernel cannot run)" if kept else "")
    lines = [f"## {title}", "", f"Device: {report['device']}; held-out samples: {report.get('samples', 0)}; "
             f"{layers}.", ""]
    if report.get("quality_plan"):
        lines += [report["quality_plan"] + ".", ""]
    missing = [part for part in PARTS if part not in report.get("measured", PARTS)]
    if missing:  # a cancelled (or still running) report says which of its parts are measured
        lines += [f"Measured: {', '.join(report.get('measured', []))}; not measured: {', '.join(missing)}"
                  f"{' (cancelled)' if report.get('state') == 'cancelled' else ''}.", ""]
    lines += ["| | original | 4-bit | 4-bit ÷ original |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {_fmt(d)} |" for a, b, c, d in rows]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- subprocess entry --------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine.quantization.report")
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
