"""Helpers shared by the wizard pages: a scrollable page with an inline error line, live validation that says why
Next is disabled, and spec tooltips."""
from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFrame, QLabel, QScrollArea, QVBoxLayout, QWidget, QWizardPage

from engine.contract.spec import SpecError, field_help


class StudioPage(QWizardPage):
    """A wizard page that refuses bad input with the spec's own sentence shown in red below the fields.

    The fields sit in a scroll area so every page fits a 1024×700 window; the error line stays below it, always
    visible. Pages with live checks override :meth:`problem` and call :meth:`recheck` when a field changes:
    Next is enabled exactly when there is no problem, and the problem is shown (inline and as the Next button's
    tooltip) while it lasts. Nothing here moves the keyboard focus.
    """

    def __init__(self, title: str, subtitle: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setTitle(title)
        self.setSubTitle(subtitle)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        self.scroll = QScrollArea()
        self.scroll.setWidgetResizable(True)
        self.scroll.setFrameShape(QFrame.Shape.NoFrame)
        self.scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        content = QWidget()
        content.setObjectName("pageContent")
        self.body = QVBoxLayout(content)
        self.body.setContentsMargins(0, 0, 6, 0)
        self.scroll.setWidget(content)
        self.scroll.viewport().setAutoFillBackground(False)  # the page's own background shows through
        outer.addWidget(self.scroll, 1)
        self.error_label = QLabel("")
        self.error_label.setObjectName("pageError")
        self.error_label.setWordWrap(True)
        self.error_label.hide()
        outer.addWidget(self.error_label)
        self._last_problem: str | None = None

    def cleanupPage(self) -> None:
        """Keep what the user typed when they go Back (QWizard would reset the page's fields)."""

    def finish_layout(self) -> None:
        self.body.addStretch(1)

    @property
    def choices(self):
        return self.wizard().choices

    # ------------------------------------------------------------------ live checks
    def problem(self) -> str:
        """Why the page cannot be left right now ('' when it can); pages with live checks override it."""
        return ""

    def isComplete(self) -> bool:  # Qt's name
        return not self.problem()

    def recheck(self) -> None:
        """Re-run the live check after an edit: show or hide the reason, and tell the wizard when Next changes.
        Only the enabled state of Next changes; the focus stays in the field being typed in."""
        problem = self.problem()
        if problem:
            self._show_error(problem)
        elif self._last_problem:
            self._hide_error()
        self._last_problem = problem
        self._enable_next(not problem)

    def _enable_next(self, enabled: bool) -> None:
        """Switch Next (or Finish) directly: emitting completeChanged makes QWizard rebuild its button row, and
        that took the keyboard focus out of the field being typed in ("gui-kd-1" arrived as "g")."""
        wizard = self.wizard()
        if wizard is None or wizard.currentPage() is not self:
            return
        for which in (wizard.WizardButton.NextButton, wizard.WizardButton.FinishButton):
            wizard.button(which).setEnabled(enabled)
        if hasattr(wizard, "explain_next"):
            wizard.explain_next()

    # ------------------------------------------------------------------ refusals on Next
    def refuse(self, error: SpecError | str) -> bool:
        """Show why the page cannot be left; returns False for validatePage."""
        self._show_error(str(error))
        return False

    def accept_page(self) -> bool:
        self._hide_error()
        return True

    def _show_error(self, text: str) -> None:
        self.error_label.setText(f"⚠  {text}")
        self.error_label.show()

    def _hide_error(self) -> None:
        self.error_label.hide()
        self.error_label.setText("")


def tip(widget: QWidget, cls: type, name: str) -> QWidget:
    """Give a widget the spec field's help text as its tooltip (the CLI and the GUI explain alike)."""
    widget.setToolTip(field_help(cls, name))
    return widget
