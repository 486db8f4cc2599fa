"""Read-only tables as the run panels show them: no editing, no row numbers, columns as wide as their contents,
and as tall as their rows (several tables share one tab, each without a band of empty grid below it)."""
from __future__ import annotations

from PySide6.QtCore import QSize
from PySide6.QtWidgets import QHeaderView, QSizePolicy, QTableWidget


class FittedTable(QTableWidget):
    """A table whose preferred height is its header plus its rows (up to ``most_rows``; more scroll), computed
    when the layout asks, i.e. with the style sheet's fonts and paddings applied."""

    most_rows = 12

    def _needs_scroll_bar(self) -> bool:
        """Whether the columns are wider than the table, so a horizontal scroll bar takes a row's worth of the
        height (asked of the widths, not of the bar's visibility, which follows the layout a moment later: the
        third row of the evaluation was hidden under the bar)."""
        return self.horizontalHeader().length() + 2 * self.frameWidth() > self.width()

    def sizeHint(self) -> QSize:  # Qt's name
        hint = super().sizeHint()
        rows = sum(self.rowHeight(r) for r in range(min(self.rowCount(), self.most_rows)))
        scroll = self.horizontalScrollBar().sizeHint().height() if self._needs_scroll_bar() else 0
        return QSize(hint.width(), self.horizontalHeader().sizeHint().height() + rows + 2 * self.frameWidth()
                     + scroll + 2)

    def minimumSizeHint(self) -> QSize:
        # a few rows are never squeezed (the tab scrolls instead); a long table may shrink to a scrolling 160 px
        height = self.sizeHint().height()
        return QSize(super().minimumSizeHint().width(), height if self.rowCount() <= 4 else min(height, 160))

    def resizeEvent(self, event) -> None:  # Qt's name
        before = self._needs_scroll_bar() if event.oldSize().width() < 0 else \
            self.horizontalHeader().length() + 2 * self.frameWidth() > event.oldSize().width()
        super().resizeEvent(event)
        if self._needs_scroll_bar() != before:
            self.updateGeometry()  # the bar comes or goes: the height it needs changes


def read_only_table(columns: int) -> FittedTable:
    table = FittedTable(0, columns)
    table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
    table.verticalHeader().setVisible(False)
    table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
    table.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Maximum)
    return table


def fit_height(table: QTableWidget, most_rows: int = 12) -> None:
    """Call after filling the table: its preferred height follows its rows."""
    if isinstance(table, FittedTable):
        table.most_rows = most_rows
    table.resizeRowsToContents()
    table.updateGeometry()
