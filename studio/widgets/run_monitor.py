"""The run monitor: one run's status, progress, curves, log, GRPO samples and evaluation, refreshed on a timer.

It presents a :class:`~studio.run_session.RunSession`; several sessions (runs launched here, runs followed after a
restart, finished runs reopened from the history) can be switched with the selector at the top.
"""
from __future__ import annotations

import html
import logging

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (QComboBox, QHBoxLayout, QLabel, QPushButton, QSizePolicy, QTabWidget, QVBoxLayout,
                               QWidget)

from engine.contract.errors import StoreError
from engine.contract.run_status import ENDED_STATES
from engine.contract.runs import RunStore
from engine.contract.safe_json import load_json_file
from studio.model.history_data import resume_point
from studio.run_session import RunSession
from studio.widgets.metric_plots import MetricPlots
from studio.widgets.history import RESUME_TIP
from studio.widgets.elided_label import ElidedLabel
from studio.model.log_fold import read_tail
from studio.widgets.log_panel import LogPanel
from studio.widgets.run_panels import EvalTable, ProgressPanel, SamplesPanel

log = logging.getLogger(__name__)
STATE_LABELS = {"starting": "starting", "running": "running", "cancelling": "cancelling…",
                "finished": "finished", "cancelled": "cancelled", "failed": "failed", "interrupted": "interrupted"}


class RunMonitor(QWidget):
    """Presents the selected RunSession."""

    cancel_requested = Signal(object)  # RunSession
    resume_requested = Signal(str)  # run id

    def __init__(self, parent: QWidget | None = None, refresh_ms: int = 200, store: RunStore | None = None) -> None:
        super().__init__(parent)
        self.store = store
        self.sessions: list[RunSession] = []
        self.session: RunSession | None = None
        self._eval_loaded_for: tuple = ()
        self._resume_checked_for: tuple = ()
        self._stored_status = ""  # the contract's status of the run on disk (engine/contract/run_status.py)
        self._last_words_for: tuple = ()
        self._full_title = ""
        self._build()
        self._timer = QTimer(self)
        self._timer.setInterval(refresh_ms)
        self._timer.timeout.connect(self.refresh)
        self._timer.start()

    def _build(self) -> None:
        self.selector = QComboBox()
        self.selector.setMinimumWidth(240)
        # as wide as 24 characters whatever the runs are called: a long name ("demo-quick (resumed)") grew it and,
        # with the title, pushed the window wider than the screen
        self.selector.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.selector.setMinimumContentsLength(24)
        self.selector.currentIndexChanged.connect(self._on_selector_changed)
        # the run's name and id, elided in the middle to the room the header has (its minimum width does not
        # depend on the text); the whole text in the tooltip
        self.title = ElidedLabel("No run yet", minimum_chars=12)
        self.title.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Preferred)
        self.title.setObjectName("monitorTitle")
        self.badge = QLabel("")
        self.badge.setObjectName("badge")
        self.cancel_button = QPushButton("Cancel run")
        self.cancel_button.setToolTip("Ask the engine to stop (it saves a checkpoint, and Resume, here or in the "
                                      "history, continues from it); if it does not stop, it is terminated, then "
                                      "killed.")
        self.cancel_button.clicked.connect(self._on_cancel_clicked)
        self.resume_button = QPushButton("Resume")
        self.resume_button.setToolTip(RESUME_TIP)
        self.resume_button.clicked.connect(self._on_resume_clicked)
        self.resume_button.hide()
        header = QHBoxLayout()
        header.addWidget(self.title)
        header.addWidget(self.badge)
        header.addStretch(1)
        self.run_label = QLabel("Run:")
        header.addWidget(self.run_label)
        header.addWidget(self.selector)
        header.addWidget(self.resume_button)
        header.addWidget(self.cancel_button)
        self.error_banner = QLabel("")
        self.error_banner.setObjectName("errorBanner")
        self.error_banner.setWordWrap(True)
        self.error_banner.setTextFormat(Qt.TextFormat.RichText)  # a link to the Log tab
        self.error_banner.linkActivated.connect(lambda _link: self.tabs.setCurrentWidget(self.log_view))
        self.error_banner.hide()
        self.warning_banner = QLabel("")  # the engine's warnings in full (a Log line is cut at the tab's width)
        self.warning_banner.setObjectName("warningBanner")
        self.warning_banner.setWordWrap(True)
        self.warning_banner.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.warning_banner.hide()
        self.progress = ProgressPanel()
        self.plots = MetricPlots()
        self.log_view = LogPanel()
        self.samples = SamplesPanel()
        self.eval_table = EvalTable()
        self.tabs = QTabWidget()
        self.tabs.addTab(self.plots, "Curves")
        self.tabs.addTab(self.log_view, "Log")
        self.tabs.addTab(self.samples, "Samples")
        self.tabs.addTab(self.eval_table, "Evaluation")
        layout = QVBoxLayout(self)
        layout.addLayout(header)
        layout.addWidget(self.error_banner)
        layout.addWidget(self.warning_banner)
        layout.addWidget(self.progress)
        layout.addWidget(self.tabs, 1)
        self.refresh()

    def add_session(self, session: RunSession, show: bool = True) -> None:
        self.sessions.append(session)
        self.selector.addItem(session.title)
        session.run_ended.connect(lambda _state: self.refresh())
        if show:
            self.selector.setCurrentIndex(len(self.sessions) - 1)

    def show_session(self, session: RunSession) -> None:
        if session not in self.sessions:
            self.add_session(session)
            return
        index = self.sessions.index(session)
        self.selector.setItemText(index, session.title)  # a resumed run is no longer "(followed)"
        self.selector.setCurrentIndex(index)

    def _on_selector_changed(self, index: int) -> None:
        if not 0 <= index < len(self.sessions):
            return
        self.session = self.sessions[index]
        self.plots.set_store(self.session.state.metrics)
        self.log_view.reset()
        self.samples.reset()
        self._eval_loaded_for = self._resume_checked_for = self._last_words_for = ()
        self._stored_status = ""
        self.eval_table.show_report(None)
        self.refresh()

    def _on_cancel_clicked(self) -> None:
        if self.session is not None and self.session.live:
            self.session.cancel()
            self.cancel_requested.emit(self.session)
            self.refresh()

    def _set_title(self, text: str, keep_end: str = "") -> None:
        self._full_title = text
        if text != self.title.full_text():
            self.title.set_full_text(text, keep_end=keep_end)  # the separator and the run id stay readable

    def _on_resume_clicked(self) -> None:
        if self.session is not None and not self.session.live and self.session.run_id:
            self.resume_requested.emit(self.session.run_id)

    def refresh(self) -> None:
        """Sync the labels and panels with the session's state (the plots keep their own timer)."""
        session = self.session
        if session is None:
            self._set_title("No run yet")
            self.badge.setText("")
            self.cancel_button.setEnabled(False)
            self.resume_button.hide()
            return
        state = session.state
        run_id = f"  ·  {state.run_id}" if state.run_id else ""
        self._set_title(session.title + run_id, keep_end=run_id)
        self._show_resume(session)
        status = self._status(session)
        self.badge.setText(STATE_LABELS.get(status, status))
        self.badge.setProperty("state", status)
        self.badge.style().unpolish(self.badge)
        self.badge.style().polish(self.badge)
        self.cancel_button.setEnabled(session.live and state.state != "cancelling")
        self.cancel_button.setVisible(session.live)  # its place goes to Resume once the run is over
        if session.live:
            self.log_view.last_words_from = None  # a resumed engine may die again with new last words
        if status in ("failed", "interrupted"):
            self._show_last_words(session)
            self._show_failure(status, state.last_error)
        else:
            self.error_banner.hide()
        warnings = "\n".join(f"⚠ {text}" for text in state.warnings[-3:])
        if warnings != self.warning_banner.text():
            self.warning_banner.setText(warnings)
            self.warning_banner.setVisible(bool(warnings))
        self.progress.show_state(state)
        self.log_view.show_state(state)
        self.samples.show_state(state)
        # the report as far as it is measured: each 'eval' artifact (sizes, memory, quality, one model) says
        # eval.json changed while the run goes on; once it is over, a resumed run's report is new
        evals = sum(1 for a in state.artifacts if a.get("kind") == "eval")
        key = (state.run_id, state.events_seen if state.done else evals)
        if state.run_id and (state.done or evals) and self._eval_loaded_for != key:
            self._eval_loaded_for = key
            self.eval_table.show_report(load_eval_report(state.run_id, self.store))

    def _status(self, session: RunSession) -> str:
        """The run's status as the history shows it: once its engine is gone, the contract's verdict on the run
        folder (a killed engine's run is "interrupted" in both places), else what the events said."""
        if not session.live and self._stored_status in ENDED_STATES:
            return self._stored_status
        return session.state.state

    def _show_failure(self, status: str, last_error: str) -> None:
        hint = "  Resume continues it from its last checkpoint." if self.resume_button.isVisibleTo(self) else ""
        reason = html.escape((last_error or "the engine stopped").rstrip().rstrip("."))  # the engine's own stop
        where = (f" (the end of {html.escape(str(self.log_view.last_words_from))})"
                 if self.log_view.last_words_from else "")
        verb = "was interrupted" if status == "interrupted" else "failed"
        self.error_banner.setText(f"The run {verb}: {reason}.  The <a href='log'>Log tab</a> has the engine's "
                                  f"last words{where}.{hint}")
        self.error_banner.show()

    def _show_last_words(self, session: RunSession) -> None:
        """Once per run and event count: the tail of runs/<id>/engine.log, the stderr the engine wrote while no
        studio read it (a followed run, a studio restart), which the events do not carry."""
        state = session.state
        key = (state.run_id, state.events_seen)
        if not state.run_id or session.live or key == self._last_words_for:
            return
        self._last_words_for = key
        try:
            path = (self.store or RunStore()).paths(state.run_id).root / "engine.log"
        except (KeyError, OSError, ValueError, StoreError):
            return
        lines = read_tail(path) if path != self.log_view.last_words_from else []
        if lines:  # none: the studio read the engine's stderr itself and the log already ends with it
            self.log_view.show_last_words(path, lines)

    def _show_resume(self, session: RunSession) -> None:
        """Resume for a failed or cancelled run (an interrupted one is failed here) with a resume point; the
        folder is looked at once per state, not on every refresh."""
        state = session.state
        key = (state.run_id, state.state, state.events_seen, session.live)
        if key == self._resume_checked_for:
            return
        self._resume_checked_for = key
        self._stored_status = ""
        can = False
        if state.run_id and not session.live and state.state in ("failed", "cancelled"):
            try:
                record = (self.store or RunStore()).get(state.run_id)
                self._stored_status = record.current_status()
                can = resume_point(record)
            except (KeyError, OSError, ValueError, StoreError):  # a damaged run.json: no Resume
                can = False
        self.resume_button.setVisible(can)


def load_eval_report(run_id: str, store: RunStore | None = None) -> dict | None:
    """A run's eval.json, or None when it has none (or it cannot be read)."""
    try:
        path = (store or RunStore()).paths(run_id).eval_json
        report = load_json_file(path, follow_links=False) if path.exists() else None
    except (KeyError, OSError, ValueError, StoreError) as exc:
        log.info("no evaluation for %s: %s", run_id, exc)
        return None
    return report if isinstance(report, dict) else None
