"""The plots' colours and their legend: one colour per run and stage, the same in every plot, and one line style
per metric; the legend is a list beside the plots (never over the data), complete however many runs are
overlaid, each entry drawn in its own colour and style. Ticking an entry off hides its curves."""
from __future__ import annotations

from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QColor, QIcon, QPainter, QPen, QPixmap
from PySide6.QtWidgets import QListWidget, QListWidgetItem, QWidget

# Tableau 10, then its light variants: ten clearly different hues first, twenty in all
PALETTE = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
           "#9c755f", "#bab0ac", "#a0cbe8", "#ffbe7d", "#ff9d9a", "#8cd17d", "#b6992d", "#f1ce63", "#d4a6c8",
           "#fabfd2", "#d37295", "#79706e")
STYLES = (Qt.PenStyle.SolidLine, Qt.PenStyle.DashLine, Qt.PenStyle.DotLine, Qt.PenStyle.DashDotLine,
          Qt.PenStyle.DashDotDotLine)
NOISY_GROUPS = ("loss", "reward", "kl", "length")  # per-step values that scatter: smoothing helps reading them


def split_label(label: str) -> tuple[str, str]:
    """'run · stage · metric' → ('run · stage', 'metric'): what picks the colour, what picks the line style."""
    key, _, metric = label.rpartition(" · ")
    return key, metric


def is_smoothed(label: str, group: str) -> bool:
    """Smooth noisy training series only: never a schedule (the learning rate), never an evaluation point."""
    return group in NOISY_GROUPS and not split_label(label)[1].startswith("eval/")


class CurveStyles:
    """Colours by run · stage and styles by metric, handed out in order of first appearance and then fixed."""

    def __init__(self) -> None:
        self.colors: dict[str, str] = {}
        self.styles: dict[str, Qt.PenStyle] = {}
        self._styles_in_group: dict[str, int] = {}

    def color(self, key: str) -> str:
        if key not in self.colors:
            self.colors[key] = PALETTE[len(self.colors) % len(PALETTE)]
        return self.colors[key]

    def style(self, metric: str, group: str) -> Qt.PenStyle:
        """The first metric of each plot is solid; others in that plot dashed, dotted… (one style a metric)."""
        if metric not in self.styles:
            index = self._styles_in_group.get(group, 0)
            self._styles_in_group[group] = index + 1
            self.styles[metric] = STYLES[index % len(STYLES)]
        return self.styles[metric]


def _swatch(color: str, style: Qt.PenStyle, width: int = 28, height: int = 12) -> QIcon:
    pixmap = QPixmap(width, height)
    pixmap.fill(Qt.GlobalColor.transparent)
    painter = QPainter(pixmap)
    pen = QPen(QColor(color), 2.5)
    pen.setStyle(style)
    painter.setPen(pen)
    painter.drawLine(1, height // 2, width - 1, height // 2)
    painter.end()
    return QIcon(pixmap)


class PlotLegend(QListWidget):
    """Runs and stages (their colours), then metrics (their line styles); checkable entries."""

    visibility_changed = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("plotLegend")
        self.setIconSize(QSize(28, 12))
        self.setMaximumWidth(240)
        self.setMinimumWidth(150)
        self.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self._items: dict[tuple[str, str], QListWidgetItem] = {}  # ("key" | "metric", name) → item
        self.itemChanged.connect(self._on_item_changed)

    def clear_entries(self) -> None:
        self.clear()
        self._items.clear()

    def add_key(self, key: str, color: str) -> None:
        self._add(("key", key), key or "(run)", _swatch(color, Qt.PenStyle.SolidLine), "Runs and stages")

    def add_metric(self, metric: str, style: Qt.PenStyle) -> None:
        self._add(("metric", metric), metric, _swatch("#57606a", style), "Metrics")

    def _add(self, ident: tuple[str, str], text: str, icon: QIcon, section: str) -> None:
        if ident in self._items:
            return
        self._ensure_header(section)
        item = QListWidgetItem(icon, text)
        item.setToolTip(text)
        item.setFlags(Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsUserCheckable)
        item.setCheckState(Qt.CheckState.Checked)
        item.setData(Qt.ItemDataRole.UserRole, ident)
        row = self._last_row_of(section) + 1
        self.blockSignals(True)
        self.insertItem(row, item)
        self.blockSignals(False)
        self._items[ident] = item

    def _ensure_header(self, section: str) -> None:
        if ("header", section) in self._items:
            return
        header = QListWidgetItem(section)
        header.setFlags(Qt.ItemFlag.ItemIsEnabled)
        font = header.font()
        font.setBold(True)
        header.setFont(font)
        header.setData(Qt.ItemDataRole.UserRole, ("header", section))
        self.blockSignals(True)
        if section == "Runs and stages":
            self.insertItem(0, header)
        else:
            self.addItem(header)
        self.blockSignals(False)
        self._items[("header", section)] = header

    def _last_row_of(self, section: str) -> int:
        row = self.row(self._items[("header", section)])
        while row + 1 < self.count() and self.item(row + 1).data(Qt.ItemDataRole.UserRole)[0] != "header":
            row += 1
        return row

    def entries(self) -> list[str]:
        """The legend's texts, headers included, top to bottom (tests read it)."""
        return [self.item(i).text() for i in range(self.count())]

    def shown(self, key: str, metric: str) -> bool:
        """Whether a curve's run · stage and metric are both ticked."""
        for ident in (("key", key), ("metric", metric)):
            item = self._items.get(ident)
            if item is not None and item.checkState() != Qt.CheckState.Checked:
                return False
        return True

    def _on_item_changed(self, _item: QListWidgetItem) -> None:
        self.visibility_changed.emit()
