"""A label that shows its whole text when there is room and elides it in the middle when there is not (the ends
of "demo · student_kd (4-bit)" are what tells panes apart), with the full text in its tooltip. Its minimum width
does not depend on the text, so a long name never forces a wide window."""
from __future__ import annotations

from PySide6.QtCore import QSize, Qt
from PySide6.QtGui import QResizeEvent
from PySide6.QtWidgets import QLabel, QSizePolicy, QWidget


class ElidedLabel(QLabel):
    """A one-line label, elided in the middle to its width; ``full_text()`` is what it was given."""

    def __init__(self, text: str = "", parent: QWidget | None = None, minimum_chars: int = 8) -> None:
        super().__init__(parent)
        self._full = ""
        self._minimum_chars = minimum_chars
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        self.setTextFormat(Qt.TextFormat.PlainText)
        self.set_full_text(text)

    def set_full_text(self, text: str, tooltip: str | None = None) -> None:
        self._full = text
        self.setToolTip(text if tooltip is None else tooltip)
        self._elide()
        self.updateGeometry()

    def full_text(self) -> str:
        return self._full

    def is_elided(self) -> bool:
        return self.text() != self._full

    def sizeHint(self) -> QSize:  # (Qt's name): room for the whole text when the layout has it
        metrics = self.fontMetrics()
        margins = self.contentsMargins()
        return QSize(metrics.horizontalAdvance(self._full) + margins.left() + margins.right() + 4,
                     super().sizeHint().height())

    def minimumSizeHint(self) -> QSize:
        return QSize(self.fontMetrics().averageCharWidth() * self._minimum_chars, super().minimumSizeHint().height())

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        self._elide()

    def _elide(self) -> None:
        width = self.contentsRect().width()
        text = self.fontMetrics().elidedText(self._full, Qt.TextElideMode.ElideMiddle, max(width, 1)) \
            if width > 0 else self._full
        if text != self.text():
            super().setText(text)
