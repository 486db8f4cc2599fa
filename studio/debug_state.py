"""What the window shows, as JSON, for end-to-end tests that drive the real app with real input events.

With ``$COMPRESSION_STUDIO_STATE_FILE`` set, the app rewrites that file (atomically) every 300 ms: the page, the
focused widget, the screen rectangles of the controls a test clicks (so xdotool can aim at them), the monitor's
badge, bars, buttons and curve sizes, the arena's run and model lists, and any open dialog's buttons. It reads
widgets only; it changes nothing.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QAbstractButton, QApplication, QWidget

log = logging.getLogger(__name__)
STATE_FILE_ENV = "COMPRESSION_STUDIO_STATE_FILE"


def rect(widget: QWidget | None) -> dict | None:
    """The widget's centre and size in screen coordinates, and whether a person can see it."""
    if widget is None:
        return None
    top_left = widget.mapToGlobal(widget.rect().topLeft())
    return {"x": top_left.x() + widget.width() // 2, "y": top_left.y() + widget.height() // 2,
            "w": widget.width(), "h": widget.height(), "visible": widget.isVisible(),
            "enabled": widget.isEnabled()}


def _nav(window) -> dict:
    out = {}
    for row in range(window.nav.count()):
        item = window.nav.item(row)
        r = window.nav.visualItemRect(item)
        centre = window.nav.viewport().mapToGlobal(r.center())
        out[item.text()] = {"x": centre.x(), "y": centre.y()}
    return out


def _monitor(window) -> dict | None:
    monitor = window._monitor
    if monitor is None:
        return None
    session = monitor.session
    state = session.state if session is not None else None
    return {"title": monitor.title.text(), "badge": monitor.badge.text(), "sessions": len(monitor.sessions),
            "run_id": state.run_id if state else "", "state": state.state if state else "",
            "live": bool(session and session.live),
            "curves": {label: s.size for label, s in state.metrics.series.items()} if state else {},
            "bar": monitor.progress.bar.value(), "run_bar": monitor.progress.run_bar.value(),
            "run_bar_text": monitor.progress.run_bar.text(), "run_eta": monitor.progress.run_eta_label.text(),
            "error": monitor.error_banner.text() if monitor.error_banner.isVisible() else "",
            "resume": rect(monitor.resume_button), "cancel": rect(monitor.cancel_button)}


def _arena(window) -> dict | None:
    """The arena's run list and each visible pane's picker, load state and error (None until it is mounted)."""
    arena = window.chat
    if not hasattr(arena, "run_combo"):
        return None
    panes = []
    for state in arena.session.panes:
        pane = arena.panes[state.key]
        if pane.isVisible():
            combo = pane.model_combo
            panes.append({"text": combo.currentText(), "items": [combo.itemText(i) for i in range(combo.count())],
                          "combo": rect(combo), "load": rect(pane.load_button), "state": state.load_state,
                          "error": pane.error_label.text() if pane.error_label.isVisible() else ""})
    return {"runs": [arena.run_combo.itemText(i) for i in range(arena.run_combo.count())], "panes": panes}


def _dialog() -> dict | None:
    modal = QApplication.activeModalWidget()
    if modal is None:
        return None
    return {"title": modal.windowTitle(),
            "buttons": {b.text(): rect(b) for b in modal.findChildren(QAbstractButton) if b.isVisible()}}


def visible_state(window) -> dict:
    focus = QApplication.focusWidget()
    wizard = window.wizard.models_page
    return {"pid": os.getpid(), "page": window.current_page(), "visible": window.isVisible(),
            "window": rect(window), "status_bar": window.statusBar().currentMessage(),
            "focus": type(focus).__name__ if focus else "", "nav": _nav(window),
            "start": {"demo": rect(window.start_page.demo_button), "quick": rect(window.start_page.quick),
                      "quick_checked": window.start_page.quick.isChecked(),
                      "recent": window.start_page.recent.text()},
            "wizard": {"name": rect(wizard.name), "name_text": wizard.name.text(),
                       "name_focused": focus is wizard.name},
            "monitor": _monitor(window), "arena": _arena(window), "dialog": _dialog()}


def install(window, path: str | Path, interval_ms: int = 300) -> QTimer:
    """Rewrite ``path`` with :func:`visible_state` every ``interval_ms``."""
    path = Path(path)
    timer = QTimer(window)
    timer.setInterval(interval_ms)

    def write() -> None:
        try:
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(visible_state(window)), encoding="utf-8")
            tmp.replace(path)
        except (OSError, RuntimeError) as exc:  # a widget being torn down at exit
            log.debug("state file not written: %s", exc)

    timer.timeout.connect(write)
    timer.start()
    return timer
