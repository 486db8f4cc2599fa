"""Closing the main window while runs train: never kill a run silently. The user leaves it running (the studio
follows it again at its next start; the engine outlives the app) or cancels it — then the window waits until the
engines have saved their checkpoint and stopped, so the run ends "cancelled", not "interrupted"."""
from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import QTimer
from PySide6.QtGui import QCloseEvent
from PySide6.QtWidgets import QMessageBox

from studio.engine_client import EngineClient
from studio.run_session import RunSession


def close_wording(count: int) -> tuple[str, str, str]:
    """Title, question and cancel button of the close dialog, in the singular for one run (the dialog once said
    "Runs are still going" over "A run is still training")."""
    if count == 1:
        return ("A run is still going", "A run is still training. Leave it running (the studio follows it again "
                "at its next start) or cancel it?", "Cancel the run")
    return (f"{count} runs are still going", f"{count} runs are still training. Leave them running (the studio "
            "follows them again at its next start) or cancel them?", "Cancel the runs")


class ClosesWithRunsGoing:
    """Mixin of the main window (which provides ``live_sessions``, ``statusBar`` and ``_save_settings``)."""

    def _init_closing(self) -> None:
        self.ask: Callable[[str, str], str] = self._ask_on_close  # tests replace the dialog
        self.detached_runs: list[RunSession] = []
        self._cancel_label = "Cancel the runs"  # the dialog's cancel button, worded for the count (close_wording)
        self._close_when_stopped = QTimer(self)  # "Cancel the run(s)" on close: close when the engines are gone
        self._close_when_stopped.setInterval(200)
        self._close_when_stopped.timeout.connect(self._on_close_when_stopped_timeout)

    def closeEvent(self, event: QCloseEvent) -> None:
        live = [s for s in self.live_sessions() if isinstance(s.source, EngineClient)]
        if live and self._close_when_stopped.isActive():
            event.ignore()  # cancelling already: the window closes once the engines are gone
            return
        if live:
            title, what, self._cancel_label = close_wording(len(live))
            choice = self.ask(title, what)
            if choice == "stay":
                event.ignore()
                return
            if choice == "cancel":
                for session in live:
                    session.cancel()
                # quitting now would kill the engines mid-save (the run left "interrupted", not "cancelled"):
                # close once they have saved their checkpoint and stopped (cancel escalates within seconds)
                engines = "the engine has saved its checkpoint" if len(live) == 1 else \
                    "the engines have saved their checkpoints"
                self.statusBar().showMessage(f"Cancelling: the studio closes once {engines} and stopped…",
                                             0)  # until it closes
                self._close_when_stopped.start()
                event.ignore()
                return
            else:
                self.detached_runs = live  # app.main exits without QProcess destructors killing them
        self._save_settings()
        event.accept()

    def _on_close_when_stopped_timeout(self) -> None:
        if not any(isinstance(s.source, EngineClient) for s in self.live_sessions()):
            self._close_when_stopped.stop()
            self.close()

    def _ask_on_close(self, title: str, text: str) -> str:
        box = QMessageBox(QMessageBox.Icon.Question, title, text, parent=self)
        leave = box.addButton("Leave running", QMessageBox.ButtonRole.AcceptRole)
        cancel = box.addButton(self._cancel_label, QMessageBox.ButtonRole.DestructiveRole)
        box.addButton("Don't quit", QMessageBox.ButtonRole.RejectRole)
        box.setDefaultButton(leave)
        box.exec()
        clicked = box.clickedButton()
        return "leave" if clicked is leave else "cancel" if clicked is cancel else "stay"
