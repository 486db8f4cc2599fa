"""The 4-bit report of a run's quantize stage(s) — size, memory, speed, ROUGE-L and retention — as a table.

It presents the ``quantization`` section of the run's eval.json exactly as the engine wrote it
(engine/quantization/report.py, ``quantization_report``: original vs 4-bit side by side, their ratios and the score
retention); the same numbers as the table in eval.md and the model card.
"""
from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLabel, QTableWidgetItem, QVBoxLayout, QWidget

from studio.widgets.tables import fit_height, read_only_table

#: (label, key in each side's dict, how to show it): the measured rows of the report, in the engine's order.
MEASURED_ROWS = (("size on disk", "disk_bytes", "mb"), ("linear-layer weights", "linear_bytes", "mb"),
                 ("resident memory (after load + first token)", "rss_bytes", "mb"),
                 ("load time (s)", "load_s", "3"), ("time to first token (s)", "ttft_s", "3"),
                 ("decode tokens/s", "tokens_per_s", "1"), ("decode CPU seconds per token", "cpu_s_per_token", "4"))
SCORE_NAMES = {"rougeL": "ROUGE-L", "exact_match": "exact match", "answer_accuracy": "answer accuracy"}
HEADERS = ("", "original", "4-bit", "4-bit ÷ original")
REPORT_PARTS = ("size", "speed and memory", "quality")  # engine/quantization/report.py PARTS, in its order


def _number(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _show(value, how: str) -> str:
    number = _number(value)
    if number is None:
        return "—"
    return f"{number / 1e6:.2f} MB" if how == "mb" else f"{number:.{int(how)}f}"


def report_rows(report: dict) -> list[tuple[str, str, str, str]]:
    """(label, original, 4-bit, ratio) rows of one stage's report; scores' ratios are their retention."""
    original, quantized = report.get("original") or {}, report.get("quantized") or {}
    ratios = report.get("ratios") or {}
    rows = []
    for label, key, how in MEASURED_ROWS:
        if key in original or key in quantized:
            ratio = _number(ratios.get(key))
            rows.append((label, _show(original.get(key), how), _show(quantized.get(key), how),
                         "—" if ratio is None else f"{ratio:.3f}"))
    for key, retention in (report.get("retention") or {}).items():
        kept = _number(retention)
        rows.append((SCORE_NAMES.get(key, key), _show((original.get("scores") or {}).get(key), "4"),
                     _show((quantized.get("scores") or {}).get(key), "4"),
                     "—" if kept is None else f"{100 * kept:.1f} % retained"))
    return rows


def report_caption(stage: str, report: dict) -> str:
    quantized = report.get("quantized") or {}
    kept = quantized.get("layers_full_precision") or 0
    layers = f"{quantized.get('layers_4bit', '?')} linear layers in 4 bits" + (
        f", {kept} kept in full precision" if kept else "")
    settings = report.get("settings") or {}
    kind = settings.get("quant_type", "")
    caption = (f"4-bit quantization{f' ({kind})' if kind else ''} · {stage}: {report.get('source', '')} · device "
               f"{report.get('device', '?')} · {report.get('samples', 0)} held-out samples · {layers}")
    return caption + "".join(f"\n{line}" for line in report_status(report))


def report_status(report: dict) -> list[str]:
    """What the engine's report says of itself: the quality part's plan (sample count sized to the device, its
    ETA) and, while it is measured or after a cancel, which parts are known and which are not."""
    lines = [str(report["quality_plan"])] if report.get("quality_plan") else []
    measured = report.get("measured")
    if isinstance(measured, list):  # reports written before parts were published have no such list
        missing = [part for part in REPORT_PARTS if part not in measured]
        if missing:
            state = report.get("state", "measuring")
            how = "not measured (cancelled)" if state == "cancelled" else "still being measured"
            lines.append(f"measured: {', '.join(map(str, measured)) or 'nothing yet'}; {how}: {', '.join(missing)}")
    return lines


class QuantReportTable(QWidget):
    """One table per quantize stage found in eval.json's ``quantization`` section; hidden when there is none."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.caption = QLabel("")
        self.caption.setWordWrap(True)
        self.table = read_only_table(len(HEADERS))
        self.table.setHorizontalHeaderLabels(HEADERS)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.caption)
        layout.addWidget(self.table)
        self.show_section({})

    def show_section(self, section: dict) -> None:
        stages = [(name, r) for name, r in (section or {}).items() if isinstance(r, dict)]
        rows = [(f"{name} · {label}" if len(stages) > 1 else label, *cells)
                for name, report in stages for label, *cells in report_rows(report)]
        self.caption.setText("\n".join(report_caption(name, report) for name, report in stages))
        self.table.setRowCount(len(rows))
        for row, cells in enumerate(rows):
            for col, text in enumerate(cells):
                item = QTableWidgetItem(text)
                if col:
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                self.table.setItem(row, col, item)
        fit_height(self.table, most_rows=20)
        self.setVisible(bool(rows))

    @property
    def has_report(self) -> bool:
        return self.table.rowCount() > 0

    def cell(self, row: int, col: int) -> str:
        item = self.table.item(row, col)
        return item.text() if item else ""
