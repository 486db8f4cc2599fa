"""Helpers shared by the wizard pages: a page with an inline error line, and spec tooltips."""
from __future__ import annotations

from PySide6.QtWidgets import QLabel, QVBoxLayout, QWidget, QWizardPage

from engine.spec import SpecError, field_help


class StudioPage(QWizardPage):
    """A wizard page that refuses bad input with the spec's own sentence shown in red below the fields."""

    def __init__(self, title: str, subtitle: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setTitle(title)
        self.setSubTitle(subtitle)
        self.body = QVBoxLayout(self)
        self.error_label = QLabel("")
        self.error_label.setObjectName("pageError")
        self.error_label.setWordWrap(True)
        self.error_label.hide()

    def cleanupPage(self) -> None:
        """Keep what the user typed when they go Back (QWizard would reset the page's fields)."""

    def finish_layout(self) -> None:
        self.body.addStretch(1)
        self.body.addWidget(self.error_label)

    @property
    def choices(self):
        return self.wizard().choices

    def refuse(self, error: SpecError | str) -> bool:
        """Show why the page cannot be left; returns False for validatePage."""
        self.error_label.setText(f"⚠  {error}")
        self.error_label.show()
        return False

    def accept_page(self) -> bool:
        self.error_label.hide()
        self.error_label.setText("")
        return True


def tip(widget: QWidget, cls: type, name: str) -> QWidget:
    """Give a widget the spec field's help text as its tooltip (the CLI and the GUI explain alike)."""
    widget.setToolTip(field_help(cls, name))
    return widget
