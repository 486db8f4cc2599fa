"""A label that shows its whole text when there is room and elides it in the middle when there is not (the ends
of "demo · student_kd (4-bit)" are what tells panes apart), with the full text in its tooltip. Its minimum width
does not depend on the text, so a long name never forces a wide window. A kept tail (the monitor's "  ·  run id")
stays whole while the text before it is elided."""
from __future__ import annotations

from PySide6.QtCore import QSize, Qt
from PySide6.QtGui import QResizeEvent
from PySide6.QtWidgets import QLabel, QSizePolicy, QWidget


class ElidedLabel(QLabel):
    """A one-line label, elided in the middle to its width; ``full_text()`` is what it was given."""

    def __init__(self, text: str = "", parent: QWidget | None = None, minimum_chars: int = 8) -> None:
        super().__init__(parent)
        self._full = ""
        self._keep_end = ""  # a tail shown whole while there is room for it and a little of the rest
        self._minimum_chars = minimum_chars
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        self.setTextFormat(Qt.TextFormat.PlainText)
        self.set_full_text(text)

    def set_full_text(self, text: str, tooltip: str | None = None, keep_end: str = "") -> None:
        """``keep_end``, a tail of ``text``, is never cut: only the part before it is elided."""
        self._full = text
        self._keep_end = keep_end if keep_end and text.endswith(keep_end) and keep_end != text else ""
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
        text = self._elided(width) if width > 0 else self._full
        if text != self.text():
            super().setText(text)

    def _elided(self, width: int) -> str:
        metrics, middle = self.fontMetrics(), Qt.TextElideMode.ElideMiddle
        if metrics.horizontalAdvance(self._full) <= width:
            return self._full
        if self._keep_end:  # cut "name (followed)  ·  20261207-103717-demo-quick-6d1f" in the name, not the id
            head = self._full[:-len(self._keep_end)]
            room = width - metrics.horizontalAdvance(self._keep_end)
            name = metrics.elidedText(head, middle, room) if room > 0 else ""
            if name and name != "…":  # some of the name is left beside the whole tail
                return name + self._keep_end
        return metrics.elidedText(self._full, middle, width)
