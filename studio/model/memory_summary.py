"""The review page's memory line, from the report of ``compression-engine preflight`` (engine/models/memory_plan.py):
Qt-free so it is tested without a display."""
from __future__ import annotations

from html import escape


def _gb(n: float) -> str:
    return f"{n / 1e9:.1f} GB"


def memory_summary(report: dict) -> str:
    """One rich-text line: the peak, the memory available, each stage's estimate, and the refusal if any."""
    stages = report.get("stages", [])
    where = "GPU" if report.get("device") == "cuda" else "memory"
    parts = [f"{escape(s['stage'])} {_gb(s['peak_bytes'])}" if s.get("fits") is not None
             else f"{escape(s['stage'])} (no estimate)" for s in stages]
    peak = report.get("peak_bytes")
    head = (f"<b>Memory</b> (estimated before loading): peak {_gb(peak) if peak is not None else 'unknown'} of "
            f"{_gb(report.get('available_bytes', 0))} {where} available")
    if report.get("fits"):
        return f"{head} — fits. {' · '.join(parts)}"
    if report.get("fits") is None:  # unknown is not "fits": say what could not be estimated
        why = escape(report.get("unknown") or "a stage could not be estimated")
        return f"{head} — <span style='color:#8a6d00'>unknown</span>: {why} {' · '.join(parts)}"
    refusal = escape(report.get("refusal") or "a stage does not fit")
    return f"{head} — <span style='color:#b00020'>does not fit</span>: {refusal}"
