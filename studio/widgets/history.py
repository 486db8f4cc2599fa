"""The run history: every run in the store with status, stage, dates and key scores; the selected runs' curves
(overlaid when several are selected) and evaluation table; reopen, re-run and delete."""
from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path
from collections.abc import Callable

from PySide6.QtCore import Signal
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (QAbstractItemView, QApplication, QHBoxLayout, QHeaderView, QLineEdit, QMessageBox,
                               QPushButton, QSplitter, QTableWidget, QTableWidgetItem, QTabWidget, QVBoxLayout, QWidget)
from PySide6.QtCore import Qt

from engine.contract.runs import RunPaths, RunRecord, RunStore
from studio.engine_client import EngineLauncher
from studio.model.run_state import MetricStore
from studio.model.history_data import (OverlayCurves, compare_reports, display_status, format_time, key_scores,
                                      read_eval, resumable, resume_refusal)
from studio.widgets.export_dialog import ExportDialog, exportable_models
from studio.tensorboard_view import TensorBoardLauncher
from studio.widgets.metric_plots import MetricPlots
from studio.widgets.run_panels import EvalTable

log = logging.getLogger(__name__)
COLUMNS = ("Name", "Status", "Stage", "Started", "Updated", "Key scores", "Run id")
RESUME_TIP = ("Continue the run where it stopped: finished stages are kept and the current one goes on from its "
              "last checkpoint (compression-engine run --resume RUN_ID).")
STATUS_COLORS = {"finished": "#2e7d32", "failed": "#c62828", "interrupted": "#c62828", "cancelled": "#8d6e00",
                 "running": "#1565c0", "cancelling": "#1565c0", "created": "#616161"}


def open_folder(path: Path) -> bool:
    """Open a folder in the desktop's file manager; False when none could be started."""
    opener = {"darwin": "open", "win32": "explorer"}.get(sys.platform, "xdg-open")
    try:
        subprocess.Popen([opener, str(path)], stdout=subprocess.DEVNULL,  # a folder we own
                         stderr=subprocess.DEVNULL)
    except OSError as exc:
        log.warning("cannot open %s: %s", path, exc)
        return False
    return True


def _tell(parent: QWidget, title: str, text: str) -> None:
    box = QMessageBox(QMessageBox.Icon.Information, title, text, QMessageBox.StandardButton.Ok, parent)
    box.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    box.open()


def _ask(parent: QWidget, title: str, text: str) -> bool:
    answer = QMessageBox.question(parent, title, text, QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
                                  QMessageBox.StandardButton.No)
    return answer == QMessageBox.StandardButton.Yes


class HistoryView(QWidget):
    open_requested = Signal(object)  # RunRecord: show it in the monitor
    rerun_requested = Signal(object)  # RunRecord: start a new run with its spec
    resume_requested = Signal(object)  # RunRecord: continue it from its last checkpoint
    run_deleted = Signal(str)

    def __init__(self, store: RunStore | None = None, parent: QWidget | None = None,
                 tensorboard: TensorBoardLauncher | None = None) -> None:
        super().__init__(parent)
        self.store = store or RunStore()
        self.tensorboard = tensorboard
        self.records: list[RunRecord] = []
        self.confirm: Callable[[QWidget, str, str], bool] = _ask  # tests replace the dialog
        self.notify: Callable[[QWidget, str, str], None] = _tell
        self.open_folder: Callable[[Path], bool] = open_folder
        self.curves: OverlayCurves | None = None
        self._shown: list[tuple] = []
        self.launcher: EngineLauncher | None = None  # the main window's (the engine Python is a setting)
        self._build()
        self.refresh()

    def _build(self) -> None:
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.itemSelectionChanged.connect(self._on_table_selection_changed)
        self.table.doubleClicked.connect(lambda _index: self._on_open_clicked())
        buttons = QHBoxLayout()
        self.open_button = self._button("Open in monitor", self._on_open_clicked, buttons,
                                        "Show the run's curves, log and evaluation in the monitor.")
        self.resume_button = self._button("Resume", self._on_resume_clicked, buttons, RESUME_TIP)
        self.rerun_button = self._button("Re-run", self._on_rerun_clicked, buttons,
                                         "Start a new run with this run's spec, from scratch.")
        self.delete_button = self._button("Delete…", self._on_delete_clicked, buttons,
                                          "Delete the run folder (models, checkpoints, events) after confirmation.")
        self.folder_button = self._button("Open folder", self._on_folder_clicked, buttons,
                                          "Open the run's folder in the file manager.")
        self.export_button = self._button("Export GGUF…", self._on_export_clicked, buttons,
                                          "Write a model of the run as GGUF files (f16, q8_0, q4_k_m) with an "
                                          "Ollama Modelfile, for llama.cpp, Ollama and LM Studio.")
        self.tensorboard_button = self._button("TensorBoard", self._on_tensorboard_clicked, buttons,
                                               "Open in TensorBoard: start it on the selected runs' event files "
                                               "(several runs side by side) and open it in the browser.")
        # shown only where the engine's environment has the tensorboard command
        self.tensorboard_button.setVisible(self.tensorboard is not None and self.tensorboard.available)
        self.tensorboard_url = QLineEdit()  # the address, to copy where no browser opened it
        self.tensorboard_url.setReadOnly(True)
        self.tensorboard_url.setMinimumWidth(190)
        self.tensorboard_url.hide()
        buttons.addWidget(self.tensorboard_url)
        if self.tensorboard is not None:
            self.tensorboard.failed.connect(lambda message: QMessageBox.warning(self, "TensorBoard", message))
            self.tensorboard.opened.connect(self._on_tensorboard_opened)
        buttons.addStretch(1)
        self._button("Refresh", self.refresh, buttons, "Read the run store again.")
        self.plots = MetricPlots()
        self.eval_table = EvalTable()
        self.details = QTabWidget()
        self.details.addTab(self.plots, "Curves (select several runs to overlay them)")
        self.details.addTab(self.eval_table, "Evaluation")
        top = QWidget()
        top_layout = QVBoxLayout(top)
        top_layout.setContentsMargins(0, 0, 0, 0)
        top_layout.addWidget(self.table)
        top_layout.addLayout(buttons)
        splitter = QSplitter(Qt.Orientation.Vertical)
        splitter.addWidget(top)
        splitter.addWidget(self.details)
        # the list keeps room for five runs at 1024×700 (at 190 px it showed two), the plots take the rest
        rows = self.table.verticalHeader().defaultSectionSize()
        self.table.setMinimumHeight(self.table.horizontalHeader().sizeHint().height() + 5 * rows + 4)
        splitter.setChildrenCollapsible(False)
        splitter.setSizes([320, 430])
        layout = QVBoxLayout(self)
        layout.addWidget(splitter)
        self._update_buttons()

    @staticmethod
    def _button(text: str, slot, layout: QHBoxLayout, tooltip: str) -> QPushButton:
        button = QPushButton(text)
        button.setToolTip(tooltip)
        button.clicked.connect(slot)
        layout.addWidget(button)
        return button

    def refresh(self) -> None:
        """Reload the list, keeping the selection."""
        selected = {r.id for r in self.selected_records()}
        try:
            records = self.store.list()
        except Exception as exc:  # noqa: BLE001 - a locked or broken index must not take the window down
            log.warning("cannot list runs: %s", exc)
            return
        shown = [(r.id, display_status(r), r.stage, r.updated) for r in records]  # a dead engine changes no file
        if shown == self._shown and self.records:
            return
        self.records, self._shown = records, shown
        self.table.blockSignals(True)
        self.table.setRowCount(len(records))
        for row, r in enumerate(records):
            status = display_status(r)
            cells = (r.name, status, r.stage, format_time(r.created), format_time(r.updated),
                     key_scores(r.scores), r.id)
            for col, text in enumerate(cells):
                item = QTableWidgetItem(text)
                if col == 1:
                    item.setForeground(QColor(STATUS_COLORS.get(status, "#333333")))
                self.table.setItem(row, col, item)
            if r.id in selected:
                self.table.selectRow(row)
        self.table.blockSignals(False)
        self._update_buttons()

    def selected_records(self) -> list[RunRecord]:
        rows = sorted({i.row() for i in self.table.selectedIndexes()})
        return [self.records[r] for r in rows if r < len(self.records)]

    def select_run(self, run_id: str, add: bool = False) -> None:
        for row, r in enumerate(self.records):
            if r.id == run_id:
                if not add:
                    self.table.clearSelection()
                self.table.selectionModel().select(
                    self.table.model().index(row, 0),
                    self.table.selectionModel().SelectionFlag.Select | self.table.selectionModel().SelectionFlag.Rows)
                return
        raise KeyError(run_id)

    def _update_buttons(self) -> None:
        records = self.selected_records()
        one = len(records) == 1
        self.open_button.setEnabled(one)
        self.rerun_button.setEnabled(one and display_status(records[0]) != "running")
        can_resume = one and resumable(records[0])
        self.resume_button.setEnabled(can_resume)
        self.resume_button.setToolTip(RESUME_TIP if can_resume or not one else resume_refusal(records[0]))
        self.folder_button.setEnabled(one)
        self.export_button.setEnabled(one and bool(exportable_models(records[0])))
        self.tensorboard_button.setEnabled(any(RunPaths(r.path).tensorboard.is_dir() for r in records))
        self.delete_button.setEnabled(bool(records) and not any(r.is_alive() for r in records))

    def _on_table_selection_changed(self) -> None:
        self._update_buttons()
        records = self.selected_records()
        if not records:  # nothing selected (or the selection deleted): no curves of a run no longer chosen
            self.curves = None
            self.plots.set_store(MetricStore())
            self.eval_table.show_report(None, empty="Select a run to see its evaluation.")
            return
        self.curves = OverlayCurves(records)
        self.plots.set_store(self.curves.store)
        self._show_evaluation(records)

    def _show_evaluation(self, records: list[RunRecord]) -> None:
        """One run's evaluation, or the selected runs' side by side (a row per run · model)."""
        if len(records) == 1:
            self.eval_table.show_report(read_eval(records[0]))
            return
        self.eval_table.show_report(
            compare_reports([(r.name, read_eval(r)) for r in records]),
            caption=f"Held-out evaluation of {len(records)} runs; each retention is against its own run's reference.",
            empty="None of the selected runs has an evaluation yet.")

    def follow_changes(self, run_ids: set[str]) -> None:
        """Runs changed on disk (the run watcher): statuses, and the curves and evaluation of the selection."""
        self.refresh()
        if self.curves is not None and self.curves.ids & set(run_ids):
            self.curves.update()
            records = self.selected_records()
            if {r.id for r in records} & set(run_ids):
                self._show_evaluation(records)

    def _on_open_clicked(self) -> None:
        records = self.selected_records()
        if len(records) == 1:
            self.open_requested.emit(records[0])

    def _on_resume_clicked(self) -> None:
        records = self.selected_records()
        if len(records) == 1 and resumable(records[0]):
            self.resume_requested.emit(records[0])

    def _on_rerun_clicked(self) -> None:
        records = self.selected_records()
        if len(records) == 1:
            self.rerun_requested.emit(records[0])

    def _on_folder_clicked(self) -> None:
        records = self.selected_records()
        if len(records) == 1 and not self.open_folder(Path(records[0].path)):
            # no file manager here (a server, a bare X session): a click that does nothing reads as a bug, so
            # give the path, ready to paste
            QApplication.clipboard().setText(str(records[0].path))
            self.notify(self, "Open folder", f"No file manager could be started here. The run's folder is\n\n"
                        f"{records[0].path}\n\n(copied to the clipboard).")

    def _on_export_clicked(self) -> None:
        records = self.selected_records()
        if len(records) == 1:
            ExportDialog(records[0], self.launcher, self).open()

    def _on_tensorboard_clicked(self) -> None:
        folders = {f"{r.name}-{r.id}": RunPaths(r.path).tensorboard for r in self.selected_records()}
        folders = {name: folder for name, folder in folders.items() if folder.is_dir()}
        if folders and self.tensorboard is not None:
            self.tensorboard.open(folders)

    def _on_tensorboard_opened(self, url: str) -> None:
        self.tensorboard_url.setText(url)
        self.tensorboard_url.setToolTip("TensorBoard's address: " + (
            "opened in your browser." if self.tensorboard.browser_opened else
            "no browser opened it on this machine; copy it (selected: Ctrl+C) into a browser that reaches it."))
        self.tensorboard_url.show()
        self.tensorboard_url.selectAll()

    def _on_delete_clicked(self) -> None:
        records = self.selected_records()
        if not records:
            return
        names = ", ".join(r.name for r in records)
        count, own = ("this run", "its") if len(records) == 1 else (f"these {len(records)} runs", "their")
        if not self.confirm(self, "Delete runs", f"Delete {count} ({names}) with {own} models, checkpoints and "
                            "curves? This cannot be undone."):
            return
        for r in records:
            try:
                self.store.delete(r.id)
                self.run_deleted.emit(r.id)
            except (RuntimeError, OSError, KeyError) as exc:
                QMessageBox.warning(self, "Delete runs", str(exc))
        self.records, self._shown = [], []
        self.refresh()
        self._on_table_selection_changed()  # the deleted runs' curves go with them
