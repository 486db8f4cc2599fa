"""The Log tab's folding: tqdm bars as one updating line, library warnings set aside, engine.log's tail."""
from __future__ import annotations

import os
import time

from studio.model.log_fold import LogFolder, read_tail

BAR = "Generating:  {p:>3}%|{fill:<10}| {n}/20 [00:0{n}<00:10, 2.0it/s]"


def _bar(n: int) -> str:
    return BAR.format(p=n * 5, fill="#" * (n // 2), n=n)


def test_a_bars_updates_collapse_to_the_newest_and_other_lines_stay():
    folder = LogFolder()
    shown = folder.fold(["[info] stage student_kd", _bar(1), _bar(2), _bar(3), "[info] done", "12it [00:01, 9.8it/s]",
                         "13it [00:01, 9.9it/s]"])
    assert [line.text for line in shown] == ["[info] stage student_kd", _bar(3), "[info] done",
                                             "13it [00:01, 9.9it/s]"]
    assert shown[1].bar == "Generating:" and shown[0].bar is None


def test_library_warnings_and_their_source_lines_are_folded_across_batches():
    folder = LogFolder()
    shown = folder.fold(["/venv/torch/utils.py:830: UserWarning: TypedStorage is deprecated",
                         "  return self.fget.__get__(instance, owner)()"])
    shown += folder.fold(["  second continuation line", "[warning] the engine's own warning stays",
                          "x.py:1: FutureWarning: old API", "[info] after"])
    assert [line.text for line in shown] == ["[warning] the engine's own warning stays", "[info] after"]
    assert len(folder.warnings) == 2 and folder.warnings[0].count("\n") == 2


def test_read_tail_keeps_the_last_lines_and_never_blocks_on_a_fifo(tmp_path):
    log = tmp_path / "engine.log"
    log.write_text("".join(f"line {i}\n" for i in range(10_000)))
    assert read_tail(log, max_lines=3) == ["line 9997", "line 9998", "line 9999"]
    tail = read_tail(log, max_lines=100_000, max_bytes=100)
    assert tail[-1] == "line 9999" and all(line.startswith("line ") for line in tail)  # no cut first line
    assert read_tail(tmp_path / "missing.log") == []
    fifo = tmp_path / "fifo.log"
    os.mkfifo(fifo)
    start = time.monotonic()
    assert read_tail(fifo) == [] and time.monotonic() - start < 1


def test_the_log_panel_unfolds_its_warnings(qtbot):
    from studio.model.run_state import RunState
    from studio.widgets.log_panel import LogPanel

    panel = LogPanel()
    qtbot.addWidget(panel)
    panel.show()
    state = RunState()
    for line in ("[info] start", _bar(1), "a.py:3: FutureWarning: one", "b.py:4: UserWarning: two"):
        state.add_log(line)
    panel.show_state(state)
    state.add_log(_bar(4))  # the next refresh: the bar's line is rewritten, not repeated
    panel.show_state(state)
    assert panel.view.toPlainText() == "[info] start\n" + _bar(4)
    assert panel.warnings_button.isVisible() and panel.warnings_button.text() == "▸ 2 library warnings"
    assert not panel.warnings_view.isVisible()
    panel.warnings_button.click()
    assert panel.warnings_view.isVisible() and "UserWarning: two" in panel.warnings_view.toPlainText()
    assert panel.warnings_button.text() == "▾ 2 library warnings"
    panel.reset()
    assert not panel.warnings_button.isVisible() and panel.view.toPlainText() == ""
