"""The new-run wizard: five pages editing one :class:`~studio.model.wizard_model.WizardChoices`; Finish launches. A spec
(an edit of the review page's YAML, or a file opened with File → Open spec…) flows back into every page."""
from __future__ import annotations

import copy
from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QApplication, QWidget, QWizard

from engine.contract.spec import RunSpec, SpecError, load_spec
from studio.engine_client import EngineLauncher
from studio.keyboard import focus_first_field
from studio.memory_preflight import MemoryPreflight
from studio.model_inspector import ModelInspector
from studio.pages.data_page import DataPage
from studio.pages.method_page import MethodPage
from studio.pages.models_page import ModelsPage
from studio.pages.review_page import ReviewPage
from studio.pages.training_page import SettingsPage
from studio.model.wizard_model import WizardChoices, build_spec, choices_from_spec


class RunWizard(QWizard):
    """Embedded in the main window (not a modal dialog), so a running run stays visible next to it."""

    launch_requested = Signal(object, str)  # RunSpec, path of its spec file
    cancelled = Signal()  # Cancel: the window leaves the wizard (restarting it alone left the person on page 1)

    def __init__(self, launcher: EngineLauncher | None = None, default_device: str = "auto",
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowFlags(Qt.WindowType.Widget)
        self.setWizardStyle(QWizard.WizardStyle.ModernStyle)
        self.setOption(QWizard.WizardOption.NoCancelButton, False)
        self.setOption(QWizard.WizardOption.HaveHelpButton, False)
        self.choices = WizardChoices()
        self.loaded_spec: RunSpec | None = None  # a spec the pages cannot rebuild exactly; launched as it is
        self._taken_choices: WizardChoices | None = None
        self.default_device = default_device
        self.inspector = ModelInspector(launcher, self)
        self.models_page = ModelsPage()
        self.data_page = DataPage()
        self.method_page = MethodPage()
        self.settings_page = SettingsPage()
        self.review_page = ReviewPage()
        self.preflight = MemoryPreflight(launcher, self)  # the review page's memory estimate
        self.preflight.checked.connect(self.review_page.show_memory)
        self.preflight.check_failed.connect(self.review_page.show_memory_problem)
        self.pages = (self.models_page, self.data_page, self.method_page, self.settings_page, self.review_page)
        for page in self.pages:
            self.addPage(page)
            page.completeChanged.connect(self.explain_next)
        self.currentIdChanged.connect(self.explain_next)
        self.currentIdChanged.connect(self._on_current_id_changed)

    def _on_current_id_changed(self, _page_id: int) -> None:
        """Enter in a field goes to the next page and hides the field: Qt would hand the focus to the window's
        page list, where the next keys switch pages. The new page's first field gets it instead."""
        focus = QApplication.focusWidget()
        page = self.currentPage()
        if page is not None and (focus is None or not self.isAncestorOf(focus) or not focus.isVisible()):
            focus_first_field(page)

    def explain_next(self, *_: object) -> None:
        """A disabled Next or Launch says why in its tooltip (the page's red line says it too)."""
        page = self.currentPage()
        problem = page.problem() if page is not None and hasattr(page, "problem") else ""
        for which in (QWizard.WizardButton.NextButton, QWizard.WizardButton.FinishButton):
            self.button(which).setToolTip(f"Not yet: {problem}" if problem else "")

    def validateCurrentPage(self) -> bool:  # noqa: N802 (Qt's name)
        if not super().validateCurrentPage():
            return False
        if self.loaded_spec is not None and self.currentPage() is not self.review_page \
                and self.choices != self._taken_choices:
            self.loaded_spec = None  # the pages changed something: they, not the loaded file, make the spec
        return True

    # ------------------------------------------------------------------ specs into the pages
    def take_spec(self, spec: RunSpec) -> None:
        """Make ``spec`` the wizard's: every page shows it. A pipeline the pages cannot express is kept as it is
        (and launched as written) until a page is changed."""
        try:
            choices = choices_from_spec(spec)
        except SpecError as exc:
            self.loaded_spec = spec
            self.review_page.summary.setToolTip(str(exc))
            self._taken_choices = copy.deepcopy(self.choices)
            return
        self.choices = choices
        for page in self.pages:
            if hasattr(page, "show_choices"):
                page.show_choices(choices)
        self.loaded_spec = None if build_spec(choices) == spec else spec
        self._taken_choices = copy.deepcopy(choices)

    def open_spec(self, path: str | Path, spec: RunSpec | None = None) -> RunSpec:
        """File → Open spec…: load a spec file (SpecError names the file and the field) and show it on the
        review page, every other page filled in."""
        spec = spec if spec is not None else load_spec(path)
        self.restart()
        self.take_spec(spec)
        while self.currentPage() is not self.review_page:
            before = self.currentId()
            self.next()
            if self.currentId() == before:  # a page refused (e.g. a data file that is gone): stay there
                break
        return spec

    def accept(self) -> None:
        page = self.review_page
        if page.spec is not None and page.spec_path is not None:
            self.launch_requested.emit(page.spec, str(page.spec_path))
        self.restart_fresh()

    def reject(self) -> None:
        self.restart_fresh()
        self.cancelled.emit()

    def restart_fresh(self) -> None:
        """Back to the first page, keeping the last choices as a starting point for the next run."""
        self.review_page.show_notes([])  # they were about a file opened before
        self.restart()
