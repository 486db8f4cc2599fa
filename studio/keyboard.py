"""Keyboard behaviour the studio adds to Qt's: Enter presses the focused button anywhere (Qt does that only for
"auto-default" buttons inside dialogs), and Enter sends in a chat box while Shift+Enter starts a new line."""
from __future__ import annotations

from typing import Callable

from PySide6.QtCore import QEvent, QObject, Qt
from PySide6.QtGui import QKeyEvent
from PySide6.QtWidgets import QAbstractButton, QApplication, QCheckBox, QPlainTextEdit, QRadioButton

_ENTER = (Qt.Key.Key_Return, Qt.Key.Key_Enter)


class EnterPressesFocusedButton(QObject):
    """Application-wide: Enter on a focused push or tool button clicks it, like Space. Check boxes and radio
    buttons are left alone (Enter there belongs to the dialog's default button)."""

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 (Qt's name)
        if event.type() != QEvent.Type.KeyPress or not isinstance(watched, QAbstractButton):
            return False
        key_event: QKeyEvent = event  # type: ignore[assignment]
        if key_event.key() not in _ENTER or key_event.modifiers() & ~Qt.KeyboardModifier.KeypadModifier:
            return False
        if isinstance(watched, (QCheckBox, QRadioButton)) or not watched.isEnabled() or not watched.hasFocus():
            return False
        watched.animateClick()
        return True


def install_enter_filter(app: QApplication | None = None) -> EnterPressesFocusedButton:
    """Install the application-wide filter once; returns it."""
    app = app or QApplication.instance()
    existing = getattr(app, "_studio_enter_filter", None)
    if existing is not None:
        return existing
    filt = EnterPressesFocusedButton(app)
    app.installEventFilter(filt)
    app._studio_enter_filter = filt  # keeps it alive and installed once
    return filt


class EnterSends(QObject):
    """On a text box: Enter calls ``send`` (when ``can_send()``), Shift+Enter inserts a new line."""

    def __init__(self, edit: QPlainTextEdit, send: Callable[[], object], can_send: Callable[[], bool]) -> None:
        super().__init__(edit)
        self._edit, self._send, self._can_send = edit, send, can_send
        edit.installEventFilter(self)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 (Qt's name)
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
