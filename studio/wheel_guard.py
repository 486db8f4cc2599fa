"""The mouse wheel edits only the field that has focus; over any other field it scrolls the page.

Qt's spin boxes, combo boxes and sliders take the wheel whenever the pointer is over them, and take the focus with
it (``Qt.WheelFocus``): scrolling a long settings page silently changed Precision and Batch size. One
application-wide event filter fixes every such field at once, present and future, in every page and dialog:

- a field's ``WheelFocus`` policy becomes ``StrongFocus`` — for the fields of the built window when the filter is
  installed, for any later one when it is polished (before it first shows) — Tab and clicks still focus it; Qt
  gives wheel focus before any event filter runs, so the policy is the only place to stop it;
- a wheel event over a field without focus is not delivered to it: it goes to the nearest scrolling ancestor's
  viewport, which scrolls the page as if the pointer were over empty space.

Scroll bars are sliders too, and keep their wheel.
"""
from __future__ import annotations

from PySide6.QtCore import QEvent, QObject, QPointF, Qt
from PySide6.QtGui import QWheelEvent
from PySide6.QtWidgets import (QAbstractScrollArea, QAbstractSlider, QAbstractSpinBox, QApplication, QComboBox,
                               QScrollBar, QWidget)

GUARDED = (QAbstractSpinBox, QComboBox, QAbstractSlider)  # every field whose value the wheel changes


def guarded(widget: QObject) -> bool:
    """A value field that must not take the wheel without focus (a scroll bar is not one)."""
    return isinstance(widget, GUARDED) and not isinstance(widget, QScrollBar)


def _has_focus(widget: QWidget) -> bool:
    focus = QApplication.focusWidget()
    return focus is not None and (focus is widget or widget.isAncestorOf(focus))


def _scroll_area_of(widget: QWidget) -> QAbstractScrollArea | None:
    parent = widget.parentWidget()
    while parent is not None:
        if isinstance(parent, QAbstractScrollArea):
            return parent
        parent = parent.parentWidget()
    return None


class WheelOnlyWithFocus(QObject):
    """The application-wide filter (see the module docstring)."""

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # Qt's name
        # every event of the application passes here: the receiver's type check goes first (reading event.type()
        # builds a Python enum, dearer still)
        if not isinstance(watched, GUARDED):
            return False
        kind = event.type()
        if kind == QEvent.Type.Polish and guarded(watched):
            if watched.focusPolicy() == Qt.FocusPolicy.WheelFocus:
                watched.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
            return False
        if kind != QEvent.Type.Wheel or not guarded(watched) or _has_focus(watched):
            return False
        area = _scroll_area_of(watched)
        if area is not None:
            viewport = area.viewport()
            position = QPointF(viewport.mapFromGlobal(event.globalPosition().toPoint()))
            forwarded = QWheelEvent(position, event.globalPosition(), event.pixelDelta(), event.angleDelta(),
                                    event.buttons(), event.modifiers(), event.phase(), event.inverted(),
                                    event.source(), event.pointingDevice())
            QApplication.sendEvent(viewport, forwarded)
            return True
        # no page to scroll (a dialog's field): Qt passes an ignored wheel event on to the parent
        event.ignore()
        return True


def _strong_focus(root: QWidget) -> None:
    """The policy change for fields that exist (and may be polished) before the filter was installed."""
    for kind in GUARDED:
        for widget in root.findChildren(kind):
            if guarded(widget) and widget.focusPolicy() == Qt.FocusPolicy.WheelFocus:
                widget.setFocusPolicy(Qt.FocusPolicy.StrongFocus)


def install_wheel_guard(root: QWidget | None = None, app: QApplication | None = None) -> WheelOnlyWithFocus:
    """Install the filter once per application (fields created later get their policy when polished) and give
    the fields under ``root`` theirs now; returns the filter. Installing it once the window is built spares the
    thousands of events of building it a call into Python each."""
    app = app or QApplication.instance()
    if root is not None:
        _strong_focus(root)
    existing = getattr(app, "_studio_wheel_guard", None)
    if existing is not None:
        return existing
    guard = WheelOnlyWithFocus(app)
    app.installEventFilter(guard)
    app._studio_wheel_guard = guard  # keeps it alive and installed once
    return guard
