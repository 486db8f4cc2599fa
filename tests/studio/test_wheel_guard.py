"""The mouse wheel edits only a focused field (studio/wheel_guard.py): over any other spin box, combo box or slider
it scrolls the page, on the Settings page as everywhere else."""
from __future__ import annotations

from PySide6.QtCore import QPoint, QPointF, Qt
from PySide6.QtGui import QWheelEvent
from PySide6.QtWidgets import (QAbstractSpinBox, QApplication, QComboBox, QDoubleSpinBox, QScrollArea, QSlider,
                               QSpinBox, QVBoxLayout, QWidget)

from studio.wheel_guard import install_wheel_guard


def _wheel(widget: QWidget, steps: int = -1) -> None:
    """One notch of the wheel over the middle of ``widget`` (negative: towards the user, i.e. scroll down)."""
    local = QPointF(widget.rect().center())
    event = QWheelEvent(local, QPointF(widget.mapToGlobal(local.toPoint())), QPoint(0, 0), QPoint(0, 120 * steps),
                        Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier, Qt.ScrollPhase.NoScrollPhase, False)
    QApplication.sendEvent(widget, event)


def _value(widget: QWidget):
    return widget.currentIndex() if isinstance(widget, QComboBox) else widget.value()


def _settings_fields(window) -> list[QWidget]:
    """One field of each kind on the Settings page (spin box, double spin box, combo box)."""
    page = window.wizard.settings_page
    kinds = (QSpinBox, QDoubleSpinBox, QComboBox)
    found = {}
    for kind in kinds:
        for field in page.findChildren(kind):
            if field.isVisible() and field.isEnabled() and kind not in found:
                found[kind] = field
    assert set(found) == set(kinds), found
    return list(found.values())


def test_wheel_over_unfocused_settings_fields_scrolls_the_page(window, qtbot):
    window.resize(1024, 500)  # the Settings page is taller than the window: it scrolls
    window.go_to("New run")
    wizard = window.wizard
    wizard.method_page.set_method("pipeline")
    wizard.settings_page.same_for_all.setChecked(False)
    while wizard.currentPage() is not wizard.settings_page:
        wizard.next()
    qtbot.wait(20)
    bar = wizard.settings_page.scroll.verticalScrollBar()
    assert bar.maximum() > 0
    for field in _settings_fields(window):
        wizard.settings_page.scroll.ensureWidgetVisible(field)
        qtbot.wait(5)
        field.clearFocus()
        if isinstance(field, QComboBox):
            field.setCurrentIndex(0)  # so that scrolling down could move it
        else:
            field.setValue(field.minimum() + 1 if isinstance(field, QSpinBox) else field.minimum() + 0.5)
        before_value, before_scroll = _value(field), bar.value()
        bar.setValue(min(before_scroll, bar.maximum() - 1))  # room to scroll down
        before_scroll = bar.value()
        _wheel(field, -1)
        assert _value(field) == before_value, type(field).__name__
        assert bar.value() > before_scroll, type(field).__name__
        assert not field.hasFocus()
        assert field.focusPolicy() == Qt.FocusPolicy.StrongFocus  # the wheel cannot give it focus either
        field.setFocus()
        qtbot.waitUntil(field.hasFocus, timeout=2000)
        _wheel(field, -1 if isinstance(field, QComboBox) else 1)
        assert _value(field) != before_value, type(field).__name__  # focused: the wheel edits it


def test_wheel_guard_covers_sliders_and_fields_outside_a_scroll_area(qtbot):
    install_wheel_guard()  # before these fields exist: they get their policy when polished
    outer = QScrollArea()
    inner = QWidget()
    column = QVBoxLayout(inner)
    slider = QSlider(Qt.Orientation.Horizontal)
    slider.setRange(0, 100)
    slider.setValue(50)
    column.addWidget(slider)
    for _ in range(30):
        column.addWidget(QSpinBox())
    outer.setWidget(inner)
    outer.resize(200, 150)
    qtbot.addWidget(outer)
    outer.show()
    qtbot.wait(10)
    slider.clearFocus()  # the window's first field takes the focus when it shows
    _wheel(slider, -1)
    assert slider.value() == 50 and outer.verticalScrollBar().value() > 0
    lone = QSpinBox()  # a dialog's field: swallowed, never edited
    qtbot.addWidget(lone)
    lone.show()
    _wheel(lone, 1)
    assert lone.value() == 0
    assert lone.focusPolicy() != Qt.FocusPolicy.WheelFocus
    assert isinstance(lone, QAbstractSpinBox)
