"""The stdin command reader and the process's exit: a run ending while its daemon reader still waits on stdin
(the studio keeps the pipe open) must exit 0, not abort with "Fatal Python error: _enter_buffered_busy" (status
134, what every run started from the studio did), and a ``cancel`` line must still be obeyed."""
from __future__ import annotations

import subprocess
import sys
import time

SCRIPT = """
import sys, threading, time
from engine.cli.common import listen_for_cancel
cancel = threading.Event()
listen_for_cancel(cancel)
if sys.argv[1] == "cancel":
    print("ready", flush=True)
    assert cancel.wait(20), "cancel not obeyed"
    print("cancelled", flush=True)
else:
    time.sleep(0.3)  # the reader is now blocked in its read
"""


def _engine(mode: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", SCRIPT, mode], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)


def test_exit_while_the_reader_waits_is_clean():
    proc = _engine("exit")
    try:
        out, err = proc.communicate(timeout=60)  # stdin stays open until communicate returns: the studio's case
    finally:
        proc.kill()
    assert b"Fatal Python error" not in err, err.decode()
    assert proc.returncode == 0, err.decode()


def test_cancel_line_is_still_obeyed():
    proc = _engine("cancel")
    try:
        assert proc.stdout.readline() == b"ready\n"
        time.sleep(0.1)
        proc.stdin.write(b'{"type": "cancel"}\n')
        proc.stdin.flush()
        assert proc.stdout.readline() == b"cancelled\n"
        proc.stdin.close()
        assert proc.wait(timeout=60) == 0
    finally:
        proc.kill()
