"""The new-run wizard: five pages editing one :class:`~studio.wizard_model.WizardChoices`; Finish launches."""
from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QWidget, QWizard

from studio.engine_client import EngineLauncher, ModelInspector
from studio.pages.data_page import DataPage
from studio.pages.method_page import MethodPage
from studio.pages.models_page import ModelsPage
from studio.pages.review_page import ReviewPage
from studio.pages.settings_page import SettingsPage
from studio.wizard_model import WizardChoices


class RunWizard(QWizard):
    """Embedded in the main window (not a modal dialog), so a running run stays visible next to it."""

    launch_requested = Signal(object, str)  # RunSpec, path of its spec file

    def __init__(self, launcher: EngineLauncher | None = None, default_device: str = "auto",
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowFlags(Qt.WindowType.Widget)
        self.setWizardStyle(QWizard.WizardStyle.ModernStyle)
        self.setOption(QWizard.WizardOption.NoCancelButton, False)
        self.setOption(QWizard.WizardOption.HaveHelpButton, False)
        self.choices = WizardChoices()
        self.default_device = default_device
        self.inspector = ModelInspector(launcher, self)
        self.models_page = ModelsPage()
        self.data_page = DataPage()
        self.method_page = MethodPage()
        self.settings_page = SettingsPage()
        self.review_page = ReviewPage()
        for page in (self.models_page, self.data_page, self.method_page, self.settings_page, self.review_page):
            self.addPage(page)

    def accept(self) -> None:
        page = self.review_page
        if page.spec is not None and page.spec_path is not None:
            self.launch_requested.emit(page.spec, str(page.spec_path))
        self.restart_fresh()

    def reject(self) -> None:
        self.restart_fresh()

    def restart_fresh(self) -> None:
        """Back to the first page, keeping the last choices as a starting point for the next run."""
        self.restart()
