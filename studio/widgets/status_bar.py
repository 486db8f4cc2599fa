"""The main window's status bar: notes that last a sensible while and survive menus.

QStatusBar's plain ``showMessage(text)`` stays until something replaces it — ten minutes later it still said
"Started: demo" — and a menu's status tips replace it at once and leave the bar empty when the menu closes. Here a
note lasts ``NOTE_MS`` unless its caller asks otherwise (0: until replaced), comes back when a status tip ends,
and the data folder is a permanent label on the right instead of a message.
"""
from __future__ import annotations

import time

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QLabel, QStatusBar, QWidget

NOTE_MS = 15_000


class StudioStatusBar(QStatusBar):
    """Notes with a timeout that a menu's status tip interrupts but does not erase."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.place = QLabel("")  # where the runs are: always there, not a message
        self.place.setObjectName("hint")
        self.addPermanentWidget(self.place)
        self._note = ""
        self._until = 0.0  # monotonic time the note ends (0: never)
        self.messageChanged.connect(self._on_message_changed)

    def showMessage(self, text: str, timeout: int = NOTE_MS) -> None:  # noqa: N802 - Qt's name
        """A note for ``timeout`` ms (0: until the next one)."""
        self._note = text
        self._until = time.monotonic() + timeout / 1000 if timeout else 0.0
        super().showMessage(text, timeout)

    def _on_message_changed(self, message: str) -> None:
        # Qt cleared the bar: a status tip ended (its hover left a menu) or the note's time is up
        if message or not self._note:
            return
        left = self._until - time.monotonic() if self._until else None
        if left is not None and left <= 0.05:
            self._note = ""
            return
        note, ms = self._note, 0 if left is None else int(left * 1000)
        QTimer.singleShot(0, self, lambda: self.currentMessage() or super(StudioStatusBar, self).showMessage(note, ms))
