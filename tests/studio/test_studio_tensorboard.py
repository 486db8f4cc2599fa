"""'Open in TensorBoard' in the history: shown only when the engine's environment has the tensorboard command,
which it starts on a free local port with the selected runs' event folders and opens in the browser once it
answers (a stand-in tensorboard that serves HTTP plays the real one); a command that dies says so."""
from __future__ import annotations

import sys
from pathlib import Path

FAKE = """#!{python}
import http.server, json, sys
args = sys.argv[1:]
port = int(args[args.index("--port") + 1])
with open({record!r}, "w") as f:
    json.dump(args, f)
http.server.HTTPServer(("127.0.0.1", port), http.server.SimpleHTTPRequestHandler).serve_forever()
"""


def _env_bin(tmp_path: Path, body: str) -> str:
    """A fake engine environment: bin/python (never run) next to bin/tensorboard."""
    folder = tmp_path / "env" / "bin"
    folder.mkdir(parents=True)
    script = folder / "tensorboard"
    script.write_text(body, encoding="utf-8")
    script.chmod(0o755)
    return str(folder / "python")


def _history(qtbot, python: str):
    from engine.contract.runs import RunStore
    from studio.tensorboard_view import TensorBoardLauncher
    from studio.widgets.history import HistoryView

    store = RunStore()
    for name in ("kd", "sft"):
        paths = store.create(name, "name: x\n")
        (paths.tensorboard / "student_kd").mkdir(parents=True)
    view = HistoryView(store, tensorboard=TensorBoardLauncher(lambda: python))
    qtbot.addWidget(view)
    return view, store


def test_opens_the_selected_runs_and_the_browser(qtbot, home, tmp_path, monkeypatch):
    import json

    record = tmp_path / "args.json"
    python = _env_bin(tmp_path, FAKE.format(python=sys.executable, record=str(record)))
    view, store = _history(qtbot, python)
    launcher = view.tensorboard
    urls = []
    launcher.open_url = lambda url: urls.append(url.toString())
    assert not view.tensorboard_button.isHidden()
    assert not view.tensorboard_button.isEnabled()  # nothing selected
    view.select_run(view.records[0].id)
    view.select_run(view.records[1].id, add=True)
    assert view.tensorboard_button.isEnabled()
    with qtbot.waitSignal(launcher.opened, timeout=20000) as blocker:
        view.tensorboard_button.click()
    url = blocker.args[0]
    assert url.startswith("http://127.0.0.1:") and urls == [url]
    # the stand-in browser opened nothing (as on a machine without one): the address is there to copy
    assert view.tensorboard_url.isVisibleTo(view) and view.tensorboard_url.text() == url
    assert view.tensorboard_url.selectedText() == url and "no browser opened it" in view.tensorboard_url.toolTip()
    args = json.loads(record.read_text())
    spec = args[args.index("--logdir_spec") + 1].split(",")
    assert sorted(s.split(":", 1)[1] for s in spec) == sorted(str(r.path / "tensorboard") for r in view.records)
    view.tensorboard_button.click()  # the same runs again: the running TensorBoard is reused
    assert urls == [url, url]
    launcher.stop()


def test_hidden_without_tensorboard_and_a_dying_one_says_so(qtbot, home, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    view, _ = _history(qtbot, str(tmp_path / "no-env" / "bin" / "python"))
    assert view.tensorboard_button.isHidden()

    python = _env_bin(tmp_path, f"#!{sys.executable}\nimport sys\nprint('ImportError: no module named tensorboard')\n"
                                "sys.exit(1)\n")
    from studio.tensorboard_view import TensorBoardLauncher

    launcher = TensorBoardLauncher(lambda: python)
    with qtbot.waitSignal(launcher.failed, timeout=20000) as blocker:
        launcher.open({"run": tmp_path})
    assert blocker.args[0] == "TensorBoard stopped before it started (ImportError: no module named tensorboard)."
