"""The studio's main window: start screen, new-run wizard, run monitor, run history and chat arena.

It owns the run sessions: it launches engine processes (``python -m engine run SPEC`` / ``demo``), re-attaches
to runs still going after a restart (followers on their events.jsonl), and hands sessions to the monitor.
Closing the window never kills a training run: the user chooses to leave it running or to cancel it.
"""
from __future__ import annotations

import logging
from pathlib import Path

from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (QFileDialog, QHBoxLayout, QListWidget, QListWidgetItem, QMainWindow, QMessageBox,
                               QStackedWidget, QWidget)

from engine.contract.runs import RunRecord, RunStore, StoreError
from engine.contract.spec import SpecError, load_spec, spec_warnings
from studio.engine_client import EngineClient, EngineLauncher, RunFollower
from studio.model.history_data import display_status, live_runs
from studio.keyboard import focus_first_field, install_enter_filter
from studio.wheel_guard import install_wheel_guard
from studio.pages.review_page import specs_dir
from studio.pages.wizard import RunWizard
from studio.run_watch import FollowsRunFolders, RunWatcher
from studio.window_close import ClosesWithRunsGoing
from studio.run_session import RunSession
from studio.model.app_settings import StudioSettings, load_settings, save_settings
from studio.widgets.status_bar import StudioStatusBar
from studio.widgets.preferences_dialog import SettingsDialog, show_about
from studio.widgets.start_page import StartPage

log = logging.getLogger(__name__)
PAGES = ("Start", "New run", "Monitor", "History", "Chat")


PREFERRED_SIZE = QSize(1280, 820)
FRAME_ALLOWANCE = QSize(16, 48)  # the window manager's title bar and borders, unknown before the first show


def initial_size(available: QSize | None) -> QSize:
    """The window's first size: 1280×820, or less where the screen is smaller (a 1280×800 or 1366×768 laptop),
    so that its frame, status bar included, is on screen; never below what a screen of that size can show."""
    if available is None or available.isEmpty():
        return QSize(PREFERRED_SIZE)
    return QSize(min(PREFERRED_SIZE.width(), available.width() - FRAME_ALLOWANCE.width()),
                 min(PREFERRED_SIZE.height(), available.height() - FRAME_ALLOWANCE.height()))


class _ChatPlaceholder(QWidget):
    """Stands in for the chat arena until its page is first opened (it starts an engine chat service)."""


class _Placeholder(QWidget):
    """Stands in for a page built on first use (the plot pages import pyqtgraph: the window shows sooner)."""


class MainWindow(ClosesWithRunsGoing, FollowsRunFolders, QMainWindow):
    run_launched = Signal(object)  # RunSession

    def __init__(self, settings: StudioSettings | None = None, launcher: EngineLauncher | None = None,
                 store: RunStore | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.settings = settings or load_settings()
        self.launcher = launcher or EngineLauncher(python=self.settings.engine_python)
        self.store = store or RunStore()
        self.sessions: list[RunSession] = []
        self._init_closing()
        self.setWindowTitle("Compression Studio")
        self.resize(initial_size(self.screen().availableGeometry().size() if self.screen() else None))
        self._build()
        self._build_menus()
        self.watcher = RunWatcher(self.store, parent=self)
        self.watcher.runs_changed.connect(self._on_watcher_runs_changed)
        self.watcher.status_changed.connect(self._on_watcher_status_changed)
        install_enter_filter()  # Enter presses the focused button on every page
        install_wheel_guard(self)  # the wheel edits only a focused field, on every page and dialog
        self.refresh_model_lists(force=True)  # the wizard's model sources name the runs' models
        self.reattach_live_runs()
        self.start_page.show_recent(*self.watcher.scanner.count())
        self.go_to("Monitor" if self.live_sessions() else "Start")
        if self.current_page() == "Start":
            self.start_page.demo_button.setFocus()  # the first thing to do; Enter does it

    # -- layout ---------------------------------------------------------------------------------------------
    def _build(self) -> None:
        self.nav = QListWidget()
        self.nav.setObjectName("nav")
        self.nav.setFixedWidth(150)
        self.nav.setIconSize(QSize(18, 18))
        # reached by Tab (its focus ring then shows, and Up/Down switch pages); a click on a page does not leave
        # the page list focused, ringed in blue for as long as the mouse is used
        self.nav.setFocusPolicy(Qt.FocusPolicy.TabFocus)
        for name in PAGES:
            self.nav.addItem(QListWidgetItem(name))
        self.stack = QStackedWidget()
        self.start_page = StartPage()
        self.wizard = RunWizard(self.launcher, self.settings.device)
        self._monitor = None
        self._history = None
        self._row_before_wizard = 0  # the start page
        self.chat: QWidget = _ChatPlaceholder()
        for widget in (self.start_page, self.wizard, _Placeholder(), _Placeholder(), self.chat):
            self.stack.addWidget(widget)
        self.nav.currentRowChanged.connect(self._on_nav_row_changed)
        self.start_page.demo_requested.connect(self.start_demo)
        self.start_page.wizard_requested.connect(lambda: self.go_to("New run"))
        self.start_page.history_requested.connect(lambda: self.go_to("History"))
        self.wizard.launch_requested.connect(self._on_wizard_launch_requested)
        self.wizard.cancelled.connect(lambda: self.go_to(PAGES[self._row_before_wizard]))
        central = QWidget()
        layout = QHBoxLayout(central)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)
        layout.addWidget(self.nav)
        layout.addWidget(self.stack, 1)
        self.setCentralWidget(central)
        self.setStatusBar(StudioStatusBar(self))
        self.statusBar().place.setText(f"Runs in {self.store.root}")

    def _replace_page(self, name: str, widget: QWidget) -> None:
        index = PAGES.index(name)
        old = self.stack.widget(index)
        self.stack.insertWidget(index, widget)
        self.stack.removeWidget(old)
        old.deleteLater()

    @property
    def monitor(self):
        """The run monitor (built on first use)."""
        if self._monitor is None:
            from studio.widgets.run_monitor import RunMonitor

            self._monitor = RunMonitor(store=self.store)
            self._monitor.plots.set_smoothing(self.settings.smoothing)
            self._monitor.resume_requested.connect(self.resume)
            self._replace_page("Monitor", self._monitor)
            self._show_latest_run()
        return self._monitor

    @property
    def history(self):
        """The run history (built on first use)."""
        if self._history is None:
            from studio.tensorboard_view import TensorBoardLauncher
            from studio.widgets.history import HistoryView

            self._history = HistoryView(self.store, tensorboard=TensorBoardLauncher(lambda: self.launcher.python,
                                                                                   self))
            self._history.launcher = self.launcher
            self._history.open_requested.connect(self.open_run)
            self._history.rerun_requested.connect(self.rerun)
            self._history.resume_requested.connect(lambda record: self.resume(record.id))
            self._replace_page("History", self._history)
        return self._history

    def warm_up(self) -> None:
        """Build the plot pages once the window is on screen (called from the event loop after show)."""
        self.monitor, self.history  # noqa: B018 - properties build the pages

    def _build_menus(self) -> None:
        file_menu = self.menuBar().addMenu("&File")
        self._action(file_menu, "&New run…", lambda: self.go_to("New run"), QKeySequence.StandardKey.New)
        self._action(file_menu, "Run the &demo", lambda: self.start_demo(False))
        self._action(file_menu, "Run a spec &file…", self._on_run_spec_file_triggered, QKeySequence.StandardKey.Open)
        self._action(file_menu, "&Open spec in the wizard…", self._on_open_spec_triggered, QKeySequence("Ctrl+Shift+O"))
        file_menu.addSeparator()
        self._action(file_menu, "&Settings…", self.open_settings, QKeySequence.StandardKey.Preferences)
        file_menu.addSeparator()
        self._action(file_menu, "&Quit", self.close, QKeySequence.StandardKey.Quit)
        help_menu = self.menuBar().addMenu("&Help")
        self._action(help_menu, "&About Compression Studio", lambda: show_about(self, self.settings))

    def _action(self, menu, text: str, slot, shortcut=None) -> QAction:
        action = QAction(text, self)
        if shortcut is not None:
            action.setShortcut(shortcut)
        action.triggered.connect(slot)
        menu.addAction(action)
        return action

    def go_to(self, page: str) -> None:
        self.nav.setCurrentRow(PAGES.index(page))

    def current_page(self) -> str:
        return PAGES[self.stack.currentIndex()]

    def _on_nav_row_changed(self, row: int) -> None:
        if PAGES[row] == "Chat" and isinstance(self.chat, _ChatPlaceholder):
            self._mount_chat()
        elif PAGES[row] == "Monitor":
            self.monitor  # noqa: B018 - built on first use
        elif PAGES[row] == "History":
            self.history  # noqa: B018 - built on first use
        if PAGES[row] == "New run" and self.stack.currentIndex() != row:
            self._row_before_wizard = self.stack.currentIndex()  # where the wizard's Cancel returns to
        self.stack.setCurrentIndex(row)
        if not self.nav.hasFocus():  # Up/Down in the page list keep the focus there
            page = self.stack.currentWidget()
            focus_first_field(self.wizard.currentPage() or page if page is self.wizard else page)  # not Next
        if PAGES[row] == "History":
            self.history.refresh()

    def _mount_chat(self) -> None:
        from studio.arena.arena_widget import ArenaWidget  # on demand: it starts its own engine service

        arena = ArenaWidget(store=self.store, engine_python=self.launcher.python)
        index = self.stack.indexOf(self.chat)
        self.stack.removeWidget(self.chat)
        self.chat.deleteLater()
        self.chat = arena
        self.stack.insertWidget(index, arena)

    # -- runs -----------------------------------------------------------------------------------------------
    def live_sessions(self) -> list[RunSession]:
        return [s for s in self.sessions if s.live]

    def _add_session(self, session: RunSession) -> RunSession:
        self.sessions.append(session)
        session.run_ended.connect(self._on_session_run_ended)
        self.monitor.add_session(session)
        self.go_to("Monitor")
        return session

    def launch(self, title: str, *args: str) -> RunSession:
        """Start ``python -m engine ARGS`` in a new session shown in the monitor."""
        title = unique_title(title, [s.title for s in self.sessions])
        client = EngineClient(self.launcher)
        session = self._add_session(RunSession(title, client, parent=self))
        client.start(*args)
        self.statusBar().showMessage(f"Started: {title}")
        self.run_launched.emit(session)
        return session

    def start_demo(self, quick: bool = False) -> RunSession:
        self._remember_first_run()
        return self.launch("demo (quick)" if quick else "demo", "demo", *(["--quick"] if quick else []))

    def run_spec_file(self, path: str | Path, title: str = "") -> RunSession:
        return self.launch(title or Path(path).stem, "run", str(path))

    def _on_wizard_launch_requested(self, spec, spec_path: str) -> None:
        self._remember_first_run()
        self.run_spec_file(spec_path, spec.name)

    def _on_run_spec_file_triggered(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Run a spec file", str(specs_dir()),
                                              "Run specs (*.yaml *.yml *.json)")
        if path:
            self.run_spec_file(path)

    def _on_open_spec_triggered(self) -> None:
        # where the wizard saves every spec it launches (the current directory meant nothing to a desktop user)
        path, _ = QFileDialog.getOpenFileName(self, "Open a spec in the wizard", str(specs_dir()),
                                              "Run specs (*.yaml *.yml *.json)")
        if path:
            self.open_spec(path)

    def open_spec(self, path: str | Path) -> bool:
        """Load a spec file into the wizard (every page filled in, the review page shown); a bad file is refused
        with the spec's own sentence and the wizard is left as it was."""
        try:
            with spec_warnings() as notes:  # settings an older version wrote, ignored: said on the review page
                spec = load_spec(path)
        except SpecError as exc:
            self.warn("Cannot open this spec", str(exc))
            return False
        self.go_to("New run")
        self.wizard.open_spec(path, spec)
        self.wizard.review_page.show_notes(notes)
        return True

    def warn(self, title: str, text: str) -> None:
        """A refusal the user must read (tests replace it: a modal box would block them)."""
        QMessageBox.warning(self, title, text)

    def rerun(self, record: RunRecord) -> RunSession:
        """A new run with a past run's spec (the engine reads it before creating the new run's folder)."""
        return self.run_spec_file(Path(record.path) / "spec.yaml", f"{record.name} (re-run)")

    def open_run(self, record: RunRecord) -> RunSession:
        """Show a past or running run in the monitor (a running one is followed live)."""
        for session in self.sessions:
            if session.run_id == record.id:
                self.monitor.show_session(session)
                self.go_to("Monitor")
                return session
        if record.is_alive():
            return self.follow(record)
        return self._add_session(self._replay(record))

    def _replay(self, record: RunRecord) -> RunSession:
        """A past run rebuilt from its folder; a run marked running whose engine is gone shows as failed."""
        return RunSession.from_events(record.name, Path(record.path) / "events.jsonl", parent=self,
                                      interrupted=display_status(record) == "interrupted")

    def follow(self, record: RunRecord, show: bool = True) -> RunSession:
        """Follow a run whose engine this window did not start (a restart, the command line, another window)."""
        follower = RunFollower(record.id, Path(record.path) / "events.jsonl", record.pid)
        session = RunSession(f"{record.name} (followed)", follower, parent=self)
        session.events_path = follower.events_path
        if show:
            self._add_session(session)
        else:
            self.sessions.append(session)
            session.run_ended.connect(self._on_session_run_ended)
            self.monitor.add_session(session, show=False)
        follower.start()
        return session

    def resume(self, run_id: str) -> RunSession | None:
        """``python -m engine run --resume RUN_ID`` into the run's session (its curves so far stay on screen)."""
        try:
            record = self.store.get(run_id)
        except KeyError:
            self.statusBar().showMessage(f"There is no run {run_id} any more.")
            return None
        except StoreError as exc:  # a damaged run.json: say so instead of raising into Qt
            self.statusBar().showMessage(str(exc))
            return None
        if record.is_alive():
            self.statusBar().showMessage(f"{record.name} is still running (pid {record.pid}).")
            return None
        session = next((s for s in self.sessions if s.run_id == run_id), None)
        if session is None:
            session = self._add_session(self._replay(record))
        elif session.live:
            return session
        session.catch_up()  # whatever happened on disk since this session last read it
        session.title = f"{record.name} (resumed)"
        client = EngineClient(self.launcher)
        session.attach(client)
        session.offset = None  # the engine appends to events.jsonl; a later catch-up goes by seq
        client.start("run", "--resume", run_id)
        self.monitor.show_session(session)
        self.go_to("Monitor")
        self.statusBar().showMessage(f"Resuming {record.name}")
        self.run_launched.emit(session)
        return session

    def reattach_live_runs(self) -> list[RunSession]:
        """On start-up: follow again every run whose engine outlived the previous studio."""
        return [self.follow(record) for record in live_runs(self.store)]

    def _show_latest_run(self) -> None:
        """With nothing running, the monitor shows the newest run (its complete curves) instead of nothing."""
        if self.sessions or self._monitor.sessions:
            return
        records = self.store.list()
        if records:
            self._add_session_quietly(self._replay(records[0]))

    def _add_session_quietly(self, session: RunSession) -> None:
        self.sessions.append(session)
        session.run_ended.connect(self._on_session_run_ended)
        self._monitor.add_session(session)

    def _on_session_run_ended(self, state: str) -> None:
        if self._history is not None:
            self._history.records = []  # force a reload: statuses and scores changed
            self._history.refresh()
        session = self.sender()
        title = session.title if isinstance(session, RunSession) else "A run"
        self.statusBar().showMessage(f"{title}: {state}")

    # -- settings & closing ---------------------------------------------------------------------------------
    def _remember_first_run(self) -> None:
        if not self.settings.first_run_done:
            self.settings.first_run_done = True
            self._save_settings()

    def _save_settings(self) -> None:
        if self._monitor is not None:
            self.settings.smoothing = self._monitor.plots.smoothing
        try:
            save_settings(self.settings)
        except OSError as exc:
            log.warning("cannot save settings: %s", exc)

    def open_settings(self) -> None:
        dialog = SettingsDialog(self.settings, self)
        if dialog.exec():
            self.apply_settings(dialog.values())

    def apply_settings(self, settings: StudioSettings) -> None:
        self.settings = settings
        self.launcher.python = settings.engine_python
        self.wizard.default_device = settings.device
        self._save_settings()


def unique_title(title: str, taken: list[str]) -> str:
    """``title``, or ``title #2``, ``#3`` … when a run of this window already has it: two quick demos were both
    "demo (quick)" in the run selector."""
    if title not in taken:
        return title
    number = 2
    while f"{title} #{number}" in taken:
        number += 1
    return f"{title} #{number}"
