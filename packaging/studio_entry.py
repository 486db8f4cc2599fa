"""Entry point of the frozen desktop bundle (PyInstaller freezes this file, not studio/app.py directly, so the
bundle's start-up stays one obvious line). Arguments are the studio's own: ``--ready-file PATH`` opens the main
window, writes the time it took and quits (the bundle's smoke test uses it)."""
from __future__ import annotations

import multiprocessing
import sys

from studio.app import main

if __name__ == "__main__":
    multiprocessing.freeze_support()  # a frozen app re-executes itself for child processes; do not start twice
    sys.exit(main())
