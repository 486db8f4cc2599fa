"""Keyboard behaviour the studio adds to Qt's: Enter presses the focused button anywhere (Qt does that only for
"auto-default" buttons inside dialogs), Enter sends in a chat box while Shift+Enter starts a new line, and a
visible focus ring (a ``QFocusFrame`` styled in studio.qss) follows the keyboard focus across fields; Enter in a
file field reads the file instead of leaving the page."""
from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import QEvent, QObject, Qt
from PySide6.QtGui import QKeyEvent
from PySide6.QtWidgets import (QAbstractButton, QAbstractItemView, QAbstractSpinBox, QApplication, QCheckBox,
                               QComboBox, QFocusFrame, QLineEdit, QPlainTextEdit, QRadioButton, QScrollArea, QSlider,
                               QTextEdit, QWidget)

_ENTER = (Qt.Key.Key_Return, Qt.Key.Key_Enter)


class EnterPressesFocusedButton(QObject):
    """Application-wide: Enter on a focused push or tool button clicks it, like Space. Check boxes and radio
    buttons are left alone (Enter there belongs to the dialog's default button)."""

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # Qt's name
        if event.type() != QEvent.Type.KeyPress or not isinstance(watched, QAbstractButton):
            return False
        key_event: QKeyEvent = event  # type: ignore[assignment]
        if key_event.key() not in _ENTER or key_event.modifiers() & ~Qt.KeyboardModifier.KeypadModifier:
            return False
        if isinstance(watched, (QCheckBox, QRadioButton)) or not watched.isEnabled() or not watched.hasFocus():
            return False
        watched.animateClick()
        return True


# widgets whose focus the ring shows (buttons, check boxes and tabs draw their own, see studio.qss)
RINGED = (QLineEdit, QAbstractSpinBox, QComboBox, QPlainTextEdit, QTextEdit, QAbstractItemView, QSlider)


class FocusRing(QObject):
    """One focus frame that moves to whichever ringed widget has the keyboard focus."""

    def __init__(self, app: QApplication) -> None:
        super().__init__(app)
        self.frame: QFocusFrame | None = None
        app.focusChanged.connect(self._on_app_focus_changed)

    def _on_app_focus_changed(self, _old: QWidget | None, new: QWidget | None) -> None:
        target = new
        if isinstance(new, QLineEdit) and isinstance(new.parentWidget(), (QComboBox, QAbstractSpinBox)):
            target = new.parentWidget()  # an editable combo box or spin box: ring the whole box
        ringed = isinstance(target, RINGED) and target.objectName() != "nav" and target.isWindow() is False
        try:
            if self.frame is not None:
                self.frame.setWidget(target if ringed else None)
                self.frame.setVisible(ringed)
                return
        except RuntimeError:  # its parent was deleted, and the frame with it
            self.frame = None
        if ringed:
            self.frame = QFocusFrame(target)
            self.frame.setObjectName("focusRing")
            self.frame.setWidget(target)
            self.frame.show()


def install_enter_filter(app: QApplication | None = None) -> EnterPressesFocusedButton:
    """Install the application-wide filter and the focus ring once; returns the filter."""
    app = app or QApplication.instance()
    existing = getattr(app, "_studio_enter_filter", None)
    if existing is not None:
        return existing
    filt = EnterPressesFocusedButton(app)
    app.installEventFilter(filt)
    app._studio_enter_filter = filt  # keeps it alive and installed once
    app._studio_focus_ring = FocusRing(app)
    return filt


class EnterSends(QObject):
    """On a text box: Enter calls ``send`` (when ``can_send()``), Shift+Enter inserts a new line."""

    def __init__(self, edit: QPlainTextEdit, send: Callable[[], object], can_send: Callable[[], bool]) -> None:
        super().__init__(edit)
        self._edit, self._send, self._can_send = edit, send, can_send
        edit.installEventFilter(self)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # Qt's name
        if event.type() != QEvent.Type.KeyPress or event.key() not in _ENTER:
            return False
        modifiers = event.modifiers() & ~Qt.KeyboardModifier.KeypadModifier
        if modifiers == Qt.KeyboardModifier.ShiftModifier:
            self._edit.insertPlainText("\n")  # Qt would insert U+2028, which a prompt must not contain
            return True
        if modifiers == Qt.KeyboardModifier.NoModifier:
            if self._can_send():
                self._send()
            return True
        return False


class EnterCommits(QObject):
    """On a line edit whose text names something to read (a file): Enter reads it (``commit``) and stays on the
    field. QLineEdit passes Enter on, and the wizard's default button took it as Next: the page was left before
    the file's preview was seen."""

    def __init__(self, edit: QLineEdit, commit: Callable[[], object]) -> None:
        super().__init__(edit)
        self._commit = commit
        edit.installEventFilter(self)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # Qt's name
        if event.type() == QEvent.Type.KeyPress and event.key() in _ENTER:
            self._commit()
            return True
        return False


def focus_first_field(page: QWidget) -> None:
    """Give the focus to the first field of a page just shown: the field focused on the page left is hidden, and
    Qt would pass the focus on to the page list (ringed, as if the keyboard were there)."""
    widget = page.nextInFocusChain()
    while widget is not None and widget is not page:
        if (page.isAncestorOf(widget) and widget.isVisibleTo(page) and widget.isEnabled()
                and widget.focusPolicy() & Qt.FocusPolicy.TabFocus
                and not isinstance(widget, QScrollArea)):  # a page's scroller: the fields are inside it
            widget.setFocus(Qt.FocusReason.OtherFocusReason)
            return
        widget = widget.nextInFocusChain()
    page.setFocus(Qt.FocusReason.OtherFocusReason)
