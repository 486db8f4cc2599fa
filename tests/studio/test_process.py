"""The one process wrapper every studio child goes through: whole lines, all of them before the exit, and a stop
that escalates when asking is not enough."""
from __future__ import annotations

import sys

from studio.process import ChildProcess, LineSplitter


def test_line_splitter_keeps_the_unfinished_tail():
    split = LineSplitter(cr_ends_line=True)
    assert split.feed(b"a\nb") == [b"a"]
    assert split.feed(b"c\r50%\rd") == [b"bc", b"50%"]
    assert split.flush() == [b"d"] and split.flush() == []


def test_every_line_arrives_before_the_exit(qtbot):
    child, out, err, order = ChildProcess(), [], [], []
    child.stdout_lines.connect(lambda lines: (out.extend(lines), order.append("out")))
    child.stderr_lines.connect(err.extend)
    child.exited.connect(lambda code, crashed: order.append(("exit", code, crashed)))
    code = "import sys; print('one'); sys.stdout.write('no newline'); sys.stderr.write('oops\\r42%'); sys.exit(3)"
    with qtbot.waitSignal(child.exited, timeout=20000):
        child.start(sys.executable, ["-c", code])
    assert out == [b"one", b"no newline"] and err == ["oops", "42%"]
    assert order[-1] == ("exit", 3, False)


def test_stop_asks_then_terminates(qtbot):
    child, asked, steps = ChildProcess(), [], []
    child.escalated.connect(steps.append)
    with qtbot.waitSignal(child.started, timeout=20000):
        child.start(sys.executable, ["-c", "import time; time.sleep(60)"])
    with qtbot.waitSignal(child.exited, timeout=20000) as exited:
        child.stop(lambda: asked.append(True), 200, 5000)
    assert asked == [True] and steps == ["terminate"] and exited.args[1] is True  # died of SIGTERM
