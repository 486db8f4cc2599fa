"""The plots' colours and their legend: one colour per run and stage, the same in every plot, and one line style
per metric; the legend is a list beside the plots (never over the data), complete however many runs are
overlaid, each entry drawn in its own colour and style. Ticking an entry off hides its curves."""
from __future__ import annotations

from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QColor, QIcon, QPainter, QPen, QPixmap
from PySide6.QtWidgets import QListWidget, QListWidgetItem, QWidget

from engine.contract.metric_names import NOISY_GROUPS

# Tableau 10, then its light variants: ten clearly different hues first, twenty in all
PALETTE = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
           "#9c755f", "#bab0ac", "#a0cbe8", "#ffbe7d", "#ff9d9a", "#8cd17d", "#b6992d", "#f1ce63", "#d4a6c8",
           "#fabfd2", "#d37295", "#79706e")
STYLES = (Qt.PenStyle.SolidLine, Qt.PenStyle.DashLine, Qt.PenStyle.DotLine, Qt.PenStyle.DashDotLine,
          Qt.PenStyle.DashDotDotLine)


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
    """Runs and stages (their colours; in an overlay grouped under each run's name), then metrics (their line
    styles). Entries are checkable; the list is rebuilt when an entry arrives (a few dozen at most)."""

    visibility_changed = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("plotLegend")
        self.setIconSize(QSize(28, 12))
        self.setMaximumWidth(240)
        self.setMinimumWidth(150)
        self.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self._keys: dict[str, str] = {}  # run · stage → colour
        self._metrics: dict[str, Qt.PenStyle] = {}
        self._hidden: set[tuple[str, str]] = set()
        self.itemChanged.connect(self._on_item_changed)

    def clear_entries(self) -> None:
        self._keys.clear()
        self._metrics.clear()
        self._hidden.clear()
        self.clear()

    def add_key(self, key: str, color: str) -> None:
        if key not in self._keys:
            self._keys[key] = color
            self._rebuild()

    def add_metric(self, metric: str, style: Qt.PenStyle) -> None:
        if metric not in self._metrics:
            self._metrics[metric] = style
            self._rebuild()

    def _rebuild(self) -> None:
        self.blockSignals(True)
        self.clear()
        self._header("Runs and stages")
        runs: dict[str, list[str]] = {}
        for key in self._keys:
            runs.setdefault(key.rpartition(" · ")[0], []).append(key)
        for run, keys in runs.items():
            if run:
                self._header(run, bold=False)  # an overlay: the run's name once, its stages below it
            for key in keys:
                stage = key.rpartition(" · ")[2] or "(run)"
                self._entry(("key", key), ("   " if run else "") + stage, key,
                            _swatch(self._keys[key], Qt.PenStyle.SolidLine))
        self._header("Metrics")
        for metric, style in self._metrics.items():
            self._entry(("metric", metric), metric, metric, _swatch("#57606a", style))
        self.blockSignals(False)

    def _header(self, text: str, bold: bool = True) -> None:
        item = QListWidgetItem(text)
        item.setFlags(Qt.ItemFlag.ItemIsEnabled)
        item.setToolTip(text)
        font = item.font()
        font.setBold(bold)
        font.setItalic(not bold)
        item.setFont(font)
        self.addItem(item)

    def _entry(self, ident: tuple[str, str], text: str, tooltip: str, icon: QIcon) -> None:
        item = QListWidgetItem(icon, text)
        item.setToolTip(tooltip)
        item.setFlags(Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsUserCheckable)
        item.setCheckState(Qt.CheckState.Unchecked if ident in self._hidden else Qt.CheckState.Checked)
        item.setData(Qt.ItemDataRole.UserRole, ident)
        self.addItem(item)

    def entries(self) -> list[str]:
        """The legend's texts, headers included, top to bottom (tests read it)."""
        return [self.item(i).text() for i in range(self.count())]

    def item_for(self, key: str) -> QListWidgetItem | None:
        """The entry of a run · stage."""
        for i in range(self.count()):
            if self.item(i).data(Qt.ItemDataRole.UserRole) == ("key", key):
                return self.item(i)
        return None

    def shown(self, key: str, metric: str) -> bool:
        """Whether a curve's run · stage and metric are both ticked."""
        return ("key", key) not in self._hidden and ("metric", metric) not in self._hidden

    def _on_item_changed(self, item: QListWidgetItem) -> None:
        ident = item.data(Qt.ItemDataRole.UserRole)
        if ident is None:
            return
        if item.checkState() == Qt.CheckState.Checked:
            self._hidden.discard(tuple(ident))
        else:
            self._hidden.add(tuple(ident))
        self.visibility_changed.emit()
