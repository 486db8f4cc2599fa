"""The first screen: run the offline demo in one click, or set up a run with the wizard."""
from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QCheckBox, QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget


class StartPage(QWidget):
    demo_requested = Signal(bool)  # quick
    wizard_requested = Signal()
    history_requested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        title = QLabel("Compression Studio")
        title.setObjectName("heroTitle")
        tagline = QLabel("Turn a large language model into a small, fast one — and see how much of its skill "
                         "survived. Teacher fine-tuning, knowledge distillation, chain-of-thought GRPO and "
                         "4-bit quantization, each one click away.")
        tagline.setObjectName("heroText")
        tagline.setWordWrap(True)
        self.demo_button = QPushButton("▶  Run the demo")
        self.demo_button.setObjectName("primaryButton")
        self.demo_button.setToolTip("compression-engine demo: a tiny Qwen2 teacher and student trained on "
                                    "generated tasks, offline — teacher SFT → student SFT → KD → evaluation.")
        self.demo_button.clicked.connect(lambda: self.demo_requested.emit(self.quick.isChecked()))
        self.quick = QCheckBox("quick (a smoke test of a minute, not a result)")
        self.wizard_button = QPushButton("Set up a run…")
        self.wizard_button.setObjectName("secondaryButton")
        self.wizard_button.setToolTip("Choose models, data, method and settings step by step.")
        self.wizard_button.clicked.connect(lambda: self.wizard_requested.emit())
        self.history_button = QPushButton("Past runs")
        self.history_button.setObjectName("secondaryButton")
        self.history_button.clicked.connect(lambda: self.history_requested.emit())
        demo_text = QLabel("The demo runs on this computer's CPU in a few minutes with no download: the whole "
                           "paper pipeline on a miniature scale, with live curves and a retention table at the "
                           "end.")
        demo_text.setObjectName("hint")
        demo_text.setWordWrap(True)
        self.recent = QLabel("")
        self.recent.setObjectName("hint")
        buttons = QHBoxLayout()
        buttons.addWidget(self.demo_button)
        buttons.addWidget(self.wizard_button)
        buttons.addWidget(self.history_button)
        buttons.addStretch(1)
        column = QVBoxLayout()
        column.addStretch(1)
        column.addWidget(title)
        column.addWidget(tagline)
        column.addSpacing(24)
        column.addLayout(buttons)
        column.addWidget(self.quick)
        column.addSpacing(8)
        column.addWidget(demo_text)
        column.addSpacing(16)
        column.addWidget(self.recent)
        column.addStretch(2)
        outer = QHBoxLayout(self)
        outer.addStretch(1)
        outer.addLayout(column, 6)
        outer.addStretch(1)
        self.setAttribute(Qt.WidgetAttribute.WA_StyledBackground, True)

    def show_recent(self, total: int, running: int) -> None:
        if total:
            runs = "1 run" if total == 1 else f"{total} runs"
            self.recent.setText(f"{runs} in the history" + (f", {running} still running" if running else "") + ".")
        else:
            self.recent.setText("")
