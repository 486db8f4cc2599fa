"""Small presenters of a run: progress with ETA, GRPO sample completions, the evaluation table.

Each one is updated from a :class:`~studio.model.run_state.RunState` (by the monitor's refresh timer) or from a plain
dict (eval.json); none of them computes anything the engine did not report. The log is studio/widgets/log_panel.py.
"""
from __future__ import annotations

import html

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QFont
from PySide6.QtWidgets import (QFrame, QGridLayout, QLabel, QProgressBar, QScrollArea, QTableWidgetItem, QTextBrowser,
                               QVBoxLayout, QWidget)

from studio.model.run_state import RunState, Sample, format_eta
from studio.widgets.quant_report import QuantReportTable
from studio.widgets.tables import fit_height, read_only_table


class ProgressPanel(QWidget):
    """Two rows: the current stage (bar with step/total, elapsed, ETA) and the whole run (stage i of n, share
    done, a rough ETA to the end; see :mod:`studio.model.pipeline_clock`)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.stage_label = QLabel("—")
        self.stage_label.setObjectName("stageLabel")
        self.bar = QProgressBar()
        self.bar.setRange(0, 1000)
        self.bar.setTextVisible(True)
        self.eta_label = QLabel("")
        self.eta_label.setObjectName("etaLabel")
        self.run_label = QLabel("Whole run")
        self.run_label.setObjectName("stageLabel")
        self.run_bar = QProgressBar()
        self.run_bar.setRange(0, 1000)
        self.run_bar.setTextVisible(True)
        self.run_bar.setToolTip("Every stage counts as an equal share of the run. The ETA adds to this stage's "
                                "own the training stages still to come, at their planned steps × the seconds per "
                                "step measured for their model; stages it cannot time yet are named after it.")
        self.run_eta_label = QLabel("")
        self.run_eta_label.setObjectName("etaLabel")
        layout = QGridLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setVerticalSpacing(2)
        for row, widgets in enumerate(((self.stage_label, self.bar, self.eta_label),
                                       (self.run_label, self.run_bar, self.run_eta_label))):
            for col, widget in enumerate(widgets):
                layout.addWidget(widget, row, col)
        layout.setColumnStretch(1, 1)

    def show_state(self, state: RunState) -> None:
        p = state.progress
        clock = state.pipeline
        self.stage_label.setText(state.stage or "—")
        fraction = p.get("fraction") or 0.0
        if state.state == "finished":
            fraction = 1.0
        self.bar.setValue(int(round(1000 * min(max(fraction, 0.0), 1.0))))
        part = ""
        if isinstance(p.get("part"), dict):  # a stage in parts: the bar is the whole stage's share
            index, count = p["part"]["index"] + 1, p["part"]["count"]
            rate = p.get("sweep", {}).get("learning_rate") if isinstance(p.get("sweep"), dict) else None
            part = (f"learning rate {rate:g} ({index}/{count})  ·  " if rate is not None
                    else f"part {index}/{count}  ·  ")
        if p.get("total"):
            self.bar.setFormat(f"{part}{p.get('step', 0)}/{p.get('total')} {p.get('unit', 'step')}s  ·  %p%")
        else:
            self.bar.setFormat(f"{part}%p%")
        if state.done:
            self.eta_label.setText(state.state)
        elif p:
            self.eta_label.setText(f"elapsed {format_eta(p.get('elapsed_s'))}  ·  ETA {format_eta(p.get('eta_s'))}")
        elif state.stage and state.state == "running":
            self.eta_label.setText("starting…")  # a new stage loads its model and data before its first step
        else:
            self.eta_label.setText("waiting for the engine…")
        self._show_run(state, clock)

    def _show_run(self, state: RunState, clock) -> None:
        whole = clock.fraction
        self.run_bar.setValue(int(round(1000 * (whole or 0.0))))
        self.run_bar.setFormat(f"stage {clock.index} of {clock.count}  ·  %p%" if clock.count else "%p%")
        if state.done:
            self.run_eta_label.setText(state.state)
        elif clock.count:
            eta, left_out = clock.eta_s, clock.not_included
            text = "ETA ≈ " + format_eta(eta) if eta is not None else "ETA after the first stage"
            self.run_eta_label.setText(text + (f" + {', '.join(left_out)}" if eta is not None and left_out else ""))
        else:
            self.run_eta_label.setText("")


class SamplesPanel(QTextBrowser):
    """Sample completions, newest first: GRPO's with their rewards, the evaluation's with their references."""

    def __init__(self, parent: QWidget | None = None, keep: int = 50) -> None:
        super().__init__(parent)
        self.keep = keep
        self.seen = -1
        self.setPlaceholderText("Sample completions appear here: GRPO's (every grpo.sample_every steps, with their "
                                "rewards) and the evaluation's answers next to their references.")

    def show_state(self, state: RunState) -> None:
        if len(state.samples) == self.seen:
            return
        self.seen = len(state.samples)
        self.setHtml("<hr>".join(self._card(s) for s in reversed(state.samples[-self.keep:])))

    @staticmethod
    def _card(sample: Sample) -> str:
        # a reward that does not apply to this record (code_tests on a word problem) arrives as None
        rewards = "  ".join(f"<b>{html.escape(k)}</b> {v:.3g}" if isinstance(v, (int, float)) else
                            f"<b>{html.escape(k)}</b> {'n/a' if v is None else html.escape(str(v))}"
                            for k, v in sample.rewards.items())
        head = " · ".join(p for p in (html.escape(sample.stage), html.escape(sample.model),
                                       f"step {sample.step}" if sample.step else "", rewards) if p)
        reference = (f"<div style='color:#2e7d32'>reference: {html.escape(sample.reference[:1000])}</div>"
                     if sample.reference else "")
        # an answer of only spaces or newlines would show as a blank box
        answer = html.escape(sample.completion[:3000]) if sample.completion.strip() else "(empty answer)"
        return (f"<div style='margin-bottom:14px'><div style='color:#666'>{head}</div>"
                f"<div style='color:#333;margin-top:4px'><i>{html.escape(sample.prompt[:600])}</i></div>"
                f"<pre style='background:#f4f6f8;padding:6px;white-space:pre-wrap'>"
                f"{answer}</pre>{reference}</div>")

    def reset(self) -> None:
        self.clear()
        self.seen = -1


def _fmt(value) -> str:
    if isinstance(value, bool) or value is None:
        return "—" if value is None else str(value)
    if isinstance(value, (int, float)):
        return f"{value:.3f}"
    return str(value)


class EvalTable(QScrollArea):
    """eval.json as tables: one row per model (ROUGE-L, exact match, retention, per-category ROUGE-L), GRPO's
    before/after scores, and the 4-bit report of a quantize stage. The tab scrolls when they do not fit: a table
    is never squeezed below its rows."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWidgetResizable(True)
        self.setFrameShape(QFrame.Shape.NoFrame)
        content = QWidget()
        self.setWidget(content)
        self.caption = QLabel("No evaluation yet.")
        self.caption.setObjectName("placeholder")
        self.table = read_only_table(0)
        self.grpo_caption = QLabel("Chain-of-thought GRPO: held-out prompts, greedy, before and after the stage")
        self.grpo_table = read_only_table(len(GRPO_COLUMNS) + 1)
        self.grpo_table.setHorizontalHeaderLabels(["stage"] + [name for name, _ in GRPO_COLUMNS])
        layout = QVBoxLayout(content)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.caption)
        layout.addWidget(self.table)
        layout.addWidget(self.grpo_caption)
        layout.addWidget(self.grpo_table)
        self.quant = QuantReportTable()  # the quantize stage's 4-bit report (size, memory, speed, retention)
        layout.addWidget(self.quant)
        layout.addStretch(1)  # tables as tall as their rows, the space below them
        self._show_grpo({})

    def show_report(self, report: dict | None, caption: str = "", empty: str = "No evaluation yet.") -> None:
        """Show eval.json's report; ``caption`` replaces the one above the models, ``empty`` the text shown
        when there is nothing to show."""
        self._show_grpo((report or {}).get("grpo") or {})
        self.quant.show_section((report or {}).get("quantization") or {})
        models = (report or {}).get("models") or {}
        if not isinstance(models, dict) or not models:
            other = self.grpo_table.rowCount() or self.quant.has_report
            self.caption.setText("No model comparison in this run." if other else empty)
            self.table.setRowCount(0)
            self.table.setColumnCount(0)
            self.table.setVisible(not other)  # no empty grid above GRPO's or the 4-bit table
            return
        self.table.setVisible(True)
        reference = (report or {}).get("reference", "")
        categories = sorted({c for m in models.values() if isinstance(m, dict)
                             for c in (m.get("per_category") or {})})
        # the held-out cross-entropy says more than ROUGE-L about barely trained models (a quick run's 0.000s)
        with_ce = any(isinstance(m, dict) and isinstance(m.get("ce"), (int, float)) for m in models.values())
        # a smaller model as the reference's draft (speculative decoding): acceptance and speed-up beside quality
        with_draft = any(isinstance(m, dict) and isinstance(m.get("draft"), dict) for m in models.values())
        headers = (["model", "ROUGE-L", "exact match", "retention"] + (["CE"] if with_ce else [])
                   + (list(DRAFT_COLUMNS) if with_draft else []) + [f"ROUGE-L · {c}" for c in categories])
        self.table.setColumnCount(len(headers))
        self.table.setHorizontalHeaderLabels(headers)
        if with_ce:
            self.table.horizontalHeaderItem(4).setToolTip("cross-entropy of the reference answers on the held-out "
                                                          "split (lower is better)")
        if with_draft:
            for offset, tip in enumerate(DRAFT_COLUMNS.values()):
                self.table.horizontalHeaderItem(4 + with_ce + offset).setToolTip(
                    tip.format(reference=reference or "the reference"))
        self.table.setRowCount(len(models))
        for row, (name, scores) in enumerate(models.items()):
            scores = scores if isinstance(scores, dict) else {}
            per_cat = scores.get("per_category") or {}
            cells = [name + ("  (reference)" if name == reference else ""), _fmt(scores.get("rougeL")),
                     _fmt(scores.get("exact_match")), _percent(scores.get("retention"))]
            if with_ce:
                cells.append(_fmt(scores.get("ce")))
            if with_draft:
                cells += _draft_cells(scores.get("draft"))
            for c in categories:
                value = per_cat.get(c)
                cells.append(_fmt(value.get("rougeL") if isinstance(value, dict) else value))
            for col, text in enumerate(cells):
                item = QTableWidgetItem(text)
                if col:
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                if name == reference:
                    item.setFont(_bold())
                if col == 3 and isinstance(scores.get("retention"), (int, float)):
                    item.setBackground(_retention_color(scores["retention"]))
                self.table.setItem(row, col, item)
        fit_height(self.table)
        status = [str((report or {}).get("samples_plan") or "")]
        pending = (report or {}).get("models_pending") or []
        if pending:  # measured so far, or cancelled: the rows are the models already measured
            state = (report or {}).get("evaluation_state")
            status.append(f"not measured ({'cancelled' if state == 'cancelled' else 'still running'}): "
                          f"{', '.join(map(str, pending))}")
        self.caption.setText((caption or f"Held-out evaluation; retention = score ÷ {reference or 'reference'}'s "
                              "score.") + "".join(f"\n{line}" for line in status if line))

    def _show_grpo(self, stages: dict) -> None:
        """One row per GRPO stage and moment (before / after): correctness first, the rest after it."""
        rows = [(f"{name} · {when}", report.get(when) or {}) for name, report in stages.items()
                if isinstance(report, dict) for when in ("before", "after")]
        self.grpo_table.setRowCount(len(rows))
        for row, (label, scores) in enumerate(rows):
            cells = [label] + [_percent(scores.get(key)) for _, key in GRPO_COLUMNS]
            for col, text in enumerate(cells):
                item = QTableWidgetItem(text)
                if col:
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                self.grpo_table.setItem(row, col, item)
        fit_height(self.grpo_table)
        self.grpo_caption.setVisible(bool(rows))
        self.grpo_table.setVisible(bool(rows))

    def cell(self, row: int, col: int) -> str:
        item = self.table.item(row, col)
        return item.text() if item else ""


#: GRPO's held-out scores (engine/recipes/grpo.py ``score_completions``), as shown in the evaluation tab.
GRPO_COLUMNS = (("correctness", "correct"), ("answers correct", "answers_correct"),
                ("tests passed", "tests_passed"), ("strict format", "format"), ("ROUGE-L", "rougeL"))


#: the draft columns (engine/evaluation/drafting.py: eval.json's ``draft`` entry) and their tooltips
DRAFT_COLUMNS = {
    "draft acceptance": "share of this model's draft tokens {reference} keeps when the model drafts for it "
                        "(speculative decoding, greedy; higher is better)",
    "draft speed-up": "{reference}'s greedy tokens/s with this model as its draft ÷ without (above 1× is faster)",
}


def _draft_cells(draft) -> list[str]:
    if not isinstance(draft, dict):
        return ["—", "—"]
    speedup = draft.get("speedup")
    number = isinstance(speedup, (int, float)) and not isinstance(speedup, bool)
    return [_percent(draft.get("acceptance")), f"{speedup:.2f}×" if number else "—"]


def _percent(value) -> str:
    return f"{100 * value:.1f} %" if isinstance(value, (int, float)) and not isinstance(value, bool) else "—"


def _retention_color(value: float) -> QColor:
    # green at ≥ 90 %, amber around 70 %, red below: the paper's 70–91 % band reads at a glance
    if value >= 0.9:
        return QColor("#d8f0d8")
    if value >= 0.7:
        return QColor("#fbefd0")
    return QColor("#f8d7d7")


def _bold() -> QFont:
    font = QFont()
    font.setBold(True)
    return font
