"""Live metric curves with pyqtgraph: one plot per metric group, smoothing, log scale and a hover read-out.

Each run · stage has one colour in every plot and each metric one line style; the legend is a list beside the
plots (:mod:`studio.widgets.plot_legend`), so it never covers a curve and lists every overlaid run. Smoothing
applies to noisy training series only (losses, rewards, KL), never to the learning-rate schedule or evaluations.

The widget draws from a :class:`studio.model.run_state.MetricStore` on a timer (10 Hz), only the curves whose data
changed, so a run streaming thousands of metrics per second never stalls the event loop; pyqtgraph's peak
downsampling and clip-to-view keep 100,000-point curves smooth.
"""
from __future__ import annotations

import time

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QPointF, Qt, QTimer, Signal
from PySide6.QtWidgets import QCheckBox, QFrame, QHBoxLayout, QLabel, QScrollArea, QSlider, QVBoxLayout, QWidget

from engine.contract.metric_names import METRIC_GROUPS
from studio.model.run_state import MetricStore
from studio.widgets.plot_legend import CurveStyles, PlotLegend, is_smoothed, split_label

GROUP_TITLES = dict(METRIC_GROUPS)
GROUP_ORDER = [key for key, _ in METRIC_GROUPS]

HOVER_HINT = "Hover over a plot to read its values."
SWEEP_SYMBOLS = ("o", "s", "t", "d")  # each sweep metric its own marker: the colours are the runs' and stages'

pg.setConfigOptions(antialias=False, background="w", foreground="#404040")


ROW_HEIGHT = 210  # the least height of a row of plots: below it the canvas scrolls (seven GRPO plots at 1024×700)


class StepAxis(pg.AxisItem):
    """An x axis of training steps: ticks on whole steps only (a 12-step run got 2.5, 7.5 …)."""

    def tickSpacing(self, minVal: float, maxVal: float, size: float) -> list:  # noqa: N802 - pyqtgraph's name
        # whole steps, about 30 px apart at least (labels do not run together)
        per_px = max(maxVal - minVal, 1e-9) / max(size, 1.0)
        levels = [(spacing, offset) for spacing, offset in super().tickSpacing(minVal, maxVal, size)
                  if spacing >= 1 and float(spacing).is_integer() and spacing / per_px >= 30]
        if levels:
            return levels
        step = next((n for n in (1, 2, 5, 10, 20, 50, 100) if n / per_px >= 30), 100)
        return [(float(step), 0.0)]


class _TimedCanvas(pg.GraphicsLayoutWidget):
    """The plot canvas, timing its own paints so that the refresh rate can adapt to what painting costs."""

    last_paint_s = 0.0
    left = Signal()  # the pointer left the canvas: the hover line goes

    def paintEvent(self, event) -> None:  # Qt's name
        start = time.perf_counter()
        super().paintEvent(event)
        self.last_paint_s = time.perf_counter() - start

    def leaveEvent(self, event) -> None:  # Qt's name
        super().leaveEvent(event)
        self.left.emit()


class MetricPlots(QWidget):
    """Plots of every curve in a MetricStore, grouped by metric prefix."""

    curves_drawn = Signal(int)  # how many curves the last refresh redrew

    def __init__(self, parent: QWidget | None = None, refresh_ms: int = 100) -> None:
        super().__init__(parent)
        self.store = MetricStore()
        self.smoothing = 0.6
        self.log_y = False
        self._plots: dict[str, pg.PlotItem] = {}
        self._curves: dict[str, tuple[pg.PlotDataItem, pg.PlotDataItem]] = {}  # raw, smoothed
        self._drawn: dict[str, int] = {}
        self._hover_lines: dict[str, pg.InfiniteLine] = {}
        self.styles = CurveStyles()
        self._build()
        self.refresh_ms = refresh_ms
        self._timer = QTimer(self)
        self._timer.setInterval(refresh_ms)
        self._timer.timeout.connect(self._on_timer_timeout)
        self._timer.start()

    def _build(self) -> None:
        self.smoothing_slider = QSlider(Qt.Orientation.Horizontal)
        self.smoothing_slider.setRange(0, 99)
        self.smoothing_slider.setValue(int(self.smoothing * 100))
        self.smoothing_slider.setMaximumWidth(160)
        self.smoothing_slider.setToolTip("Exponential moving average of the noisy curves — losses, rewards, KL "
                                         "(0 = raw values); the raw values stay visible as a faint line. The "
                                         "learning rate and evaluation points are never smoothed.")
        self.smoothing_slider.valueChanged.connect(self._on_smoothing_changed)
        self.smoothing_label = QLabel(f"{self.smoothing:.2f}")
        self.log_check = QCheckBox("Log scale")
        self.log_check.setToolTip("Logarithmic y axis (losses spanning several orders of magnitude).")
        self.log_check.toggled.connect(self._on_log_toggled)
        self.readout = QLabel(HOVER_HINT)
        self.readout.setObjectName("readout")
        self.readout.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.empty_label = QLabel("No metrics yet — curves appear here as soon as the engine reports them.")
        self.empty_label.setObjectName("placeholder")
        self.empty_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        controls = QHBoxLayout()
        controls.addWidget(QLabel("Smoothing"))
        controls.addWidget(self.smoothing_slider)
        controls.addWidget(self.smoothing_label)
        controls.addSpacing(16)
        controls.addWidget(self.log_check)
        controls.addSpacing(16)
        controls.addWidget(self.readout, 1)
        self.readout.setMinimumWidth(40)  # a long read-out is cut, it does not widen the window
        self.canvas = _TimedCanvas()
        self.canvas.ci.setSpacing(12)
        self.canvas.setMinimumSize(200, 150)
        self.canvas.scene().sigMouseMoved.connect(self._on_scene_mouse_moved)
        self.canvas.left.connect(self._hide_hover)
        self.scroller = QScrollArea()  # a tall canvas (many plots) scrolls instead of squeezing each plot
        self.scroller.setWidgetResizable(True)
        self.scroller.setFrameShape(QFrame.Shape.NoFrame)
        self.scroller.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.scroller.setWidget(self.canvas)
        self.legend = PlotLegend()
        self.legend.visibility_changed.connect(self._apply_visibility)
        self.legend.hide()
        row = QHBoxLayout()
        row.addWidget(self.empty_label, 1)
        row.addWidget(self.scroller, 1)
        row.addWidget(self.legend)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(controls)
        layout.addLayout(row, 1)
        self.scroller.hide()

    # -- data ------------------------------------------------------------------------------------------------
    def set_store(self, store: MetricStore) -> None:
        """Show another run's curves (or an overlay of several)."""
        self.store = store
        self._reset_plots()
        self.readout.setText(HOVER_HINT)  # a value read from the previous run's curves is not this run's
        self.refresh()

    def _reset_plots(self) -> None:
        self.canvas.ci.clear()
        self.legend.clear_entries()
        self.legend.hide()
        self.styles = CurveStyles()
        self._plots.clear()
        self._curves.clear()
        self._drawn.clear()
        self._hover_lines.clear()
        self.canvas.setMinimumHeight(150)

    def _plot_for(self, group: str) -> pg.PlotItem:
        plot = self._plots.get(group)
        if plot is None:
            axes = {} if group == "sweep" else {"bottom": StepAxis("bottom")}
            plot = pg.PlotItem(title=GROUP_TITLES.get(group, group), axisItems=axes)
            # tick labels keep their room: shrinking it to the widest label on screen made them vanish
            plot.getAxis("left").setStyle(autoReduceTextSpace=False, hideOverlappingLabels=False)
            plot.setDownsampling(auto=True, mode="peak")
            plot.setClipToView(True)
            plot.showGrid(x=True, y=True, alpha=0.15)
            plot.setLabel("bottom", "learning rate" if group == "sweep" else "step")
            plot.setLogMode(group == "sweep", self.log_y)  # a sweep's rates span decades
            if group == "sweep":
                plot.getAxis("bottom").enableAutoSIPrefix(False)  # the ticks are the rates: no "(×0.001)"
            line = pg.InfiniteLine(angle=90, movable=False, pen=pg.mkPen("#999999", style=Qt.PenStyle.DashLine))
            line.hide()
            plot.addItem(line, ignoreBounds=True)
            self._hover_lines[group] = line
            self._plots[group] = plot
            self._relayout()
        return plot

    def _relayout(self) -> None:
        """Two columns, groups in their fixed order."""
        for plot in self._plots.values():
            if plot.scene() is not None:
                self.canvas.ci.removeItem(plot)
        ordered = [g for g in GROUP_ORDER if g in self._plots] + [g for g in self._plots if g not in GROUP_ORDER]
        for i, group in enumerate(ordered):
            self.canvas.ci.addItem(self._plots[group], row=i // 2, col=i % 2)
        self.canvas.setMinimumHeight(max(150, ROW_HEIGHT * ((len(ordered) + 1) // 2)))

    def _curve_for(self, label: str) -> tuple[pg.PlotDataItem, pg.PlotDataItem]:
        curves = self._curves.get(label)
        if curves is None:
            group = self.store.groups[label]
            plot = self._plot_for(group)
            key, metric = split_label(label)
            color, style = self.styles.color(key), self.styles.style(metric, group)
            self.legend.add_key(key, color)
            self.legend.add_metric(metric, style)
            self.legend.show()
            raw_color = pg.mkColor(color)
            raw_color.setAlpha(60)
            raw = plot.plot(pen=pg.mkPen(raw_color, width=1))
            # a sweep's rates are separate trainings: points side by side, no line between them
            smooth = plot.plot(pen=None if group == "sweep" else pg.mkPen(color, width=2, style=style), name=label)
            if group in ("eval", "sweep") or metric.startswith("eval/"):  # a few points per stage: markers
                smooth.setSymbol(SWEEP_SYMBOLS[len(self._curves) % len(SWEEP_SYMBOLS)] if group == "sweep" else "o")
                smooth.setSymbolSize(9 if group == "sweep" else 7)
                smooth.setSymbolBrush(pg.mkBrush(color))
                smooth.setSymbolPen(pg.mkPen(color))
            for item in (raw, smooth):
                item.setDownsampling(auto=True, method="peak")
                item.setClipToView(True)
            curves = self._curves[label] = (raw, smooth)
        return curves

    def _on_timer_timeout(self) -> None:
        if self.isVisible():  # a hidden page draws nothing; it catches up when shown
            self.refresh(build_all=False)
            # painting many long curves is the costly part: keep it under ~30 % of the GUI thread, and the
            # curves at most 0.4 s behind
            paint_ms = 1000 * self.canvas.last_paint_s
            self._timer.setInterval(int(min(400, max(self.refresh_ms, 3 * paint_ms))))

    def refresh(self, build_all: bool = True) -> int:
        """Redraw the curves whose data changed since the last refresh; returns how many. The timer passes
        ``build_all=False``: at most one new plot per event-loop turn."""
        changed = [label for label, s in self.store.series.items() if self._drawn.get(label) != s.version
                   and (self.store.groups[label] != "eval" or s.x[-1] > s.x[0])]  # final scores: a table, not a curve
        # Building a plot costs tens of milliseconds: build one new plot per refresh, never all at once.
        new_groups = [g for g in dict.fromkeys(self.store.groups[label] for label in changed) if g not in self._plots]
        if len(new_groups) > 1 and not build_all:
            changed = [label for label in changed if self.store.groups[label] not in new_groups[1:]]
            QTimer.singleShot(0, self, lambda: self.refresh(build_all=False))  # the next plot after this turn
        for label in changed:
            series = self.store.series[label]
            raw, smooth = self._curve_for(label)
            x = series.x
            if self.smoothing > 0 and is_smoothed(label, self.store.groups[label]):
                raw.setData(x, series.y, skipFiniteCheck=True)  # the store keeps finite values only
                raw.show()
                smooth.setData(x, series.smoothed(self.smoothing), skipFiniteCheck=True)
            else:
                raw.hide()
                smooth.setData(x, series.y, skipFiniteCheck=True)
            if series.size == 1 and smooth.opts.get("symbol") is None:  # one point draws nothing without a marker
                smooth.setSymbol("o")
                smooth.setSymbolSize(7)
                smooth.setSymbolBrush(pg.mkBrush(smooth.opts["pen"].color()))
            self._drawn[label] = series.version
        for group in {self.store.groups[label] for label in changed}:
            self._fit_flat_range(group)
            if group == "sweep":
                self._label_rates()
        if changed:
            self._apply_visibility()
        if changed:
            self.empty_label.hide()
            self.scroller.show()
            self.curves_drawn.emit(len(changed))
        elif not self.store.series:
            self.scroller.hide()
            self.empty_label.show()
        return len(changed)

    def _fit_flat_range(self, group: str) -> None:
        """A constant curve (a constant learning rate) would get a range of 1e-18 and ticks full of float noise:
        give it ±50 % around its value instead; any other curve keeps auto-range."""
        plot = self._plots[group]
        ys = [self.store.series[label].y for label in self.store.labels_in(group)
              if label in self._curves and self.store.series[label].size]  # drawn curves only
        if not ys:
            return
        low, high = min(float(y.min()) for y in ys), max(float(y.max()) for y in ys)
        if high - low <= 1e-9 * max(abs(low), abs(high), 1e-30):
            if self.log_y and low > 0:
                plot.setYRange(np.log10(low) - 0.3, np.log10(low) + 0.3, padding=0)
            else:
                half = abs(low) * 0.5 or 1.0
                plot.setYRange(low - half, low + half, padding=0)
        else:
            plot.enableAutoRange(axis="y")

    def _label_rates(self) -> None:
        """The sweep plot's x ticks are the rates tried, written as they were given (5e-4, not 10^-3.3)."""
        rates = sorted({float(x) for label in self.store.labels_in("sweep") for x in self.store.series[label].x
                        if x > 0})
        if rates:
            ticks = [(float(np.log10(rate)), f"{rate:g}") for rate in rates]
            self._plots["sweep"].getAxis("bottom").setTicks([ticks, []])
            low, high = ticks[0][0], ticks[-1][0]
            pad = max(0.25 * (high - low), 0.3)  # points side by side, off the plot's edges
            self._plots["sweep"].setXRange(low - pad, high + pad, padding=0)

    def _apply_visibility(self) -> None:
        """Curves whose run · stage or metric is ticked off in the legend are hidden."""
        for label, (raw, smooth) in self._curves.items():
            shown = self.legend.shown(*split_label(label))
            smooth.setVisible(shown)
            raw.setVisible(shown and self.smoothing > 0 and is_smoothed(label, self.store.groups[label]))

    def curve_data(self, label: str) -> tuple:
        """The (x, y) of a curve's values as reported (tests and benchmarks read it)."""
        raw, smooth = self._curves[label]
        return raw.getData() if self.is_smoothed(label) else smooth.getData()

    def is_smoothed(self, label: str) -> bool:
        """Whether the curve is drawn smoothed now (its raw values then show as a faint line)."""
        return self.smoothing > 0 and is_smoothed(label, self.store.groups[label])

    def curve_pen(self, label: str):
        """The pen of a curve's main line (its colour and style)."""
        return self._curves[label][1].opts["pen"]

    def plot_titles(self) -> list[str]:
        return [GROUP_TITLES.get(g, g) for g in self._plots]

    # -- controls ---------------------------------------------------------------------------------------------
    def set_smoothing(self, weight: float) -> None:
        self.smoothing_slider.setValue(int(round(weight * 100)))

    def _on_smoothing_changed(self, value: int) -> None:
        self.smoothing = value / 100
        self.smoothing_label.setText(f"{self.smoothing:.2f}")
        self._drawn.clear()  # every curve needs its new average
        self.refresh()

    def _on_log_toggled(self, checked: bool) -> None:
        self.log_y = checked
        for group, plot in self._plots.items():
            plot.setLogMode(group == "sweep", checked)

    def _on_scene_mouse_moved(self, pos: QPointF) -> None:
        for group, plot in self._plots.items():
            line = self._hover_lines[group]
            if not plot.sceneBoundingRect().contains(pos):
                line.hide()
                continue
            x = plot.vb.mapSceneToView(pos).x()
            line.setPos(x)
            line.show()
            self.readout.setText(self.readout_at(group, 10 ** x if group == "sweep" else x))  # log10 axis

    def _hide_hover(self) -> None:
        for line in self._hover_lines.values():
            line.hide()

    def readout_at(self, group: str, x: float) -> str:
        """'step N — label: value, ...' for the points of a group's curves nearest to x."""
        parts, step = [], None
        for label in self.store.labels_in(group):
            point = self.store.series[label].nearest(x)
            if point is not None:
                step = point[0] if step is None else step
                parts.append(f"{label}: {point[1]:.4g}")
        if not parts:
            return ""
        return f"{'learning rate' if group == 'sweep' else 'step'} {step:g} — " + "   ".join(parts)
