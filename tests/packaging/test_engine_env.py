"""The engine environment manager: GPU detection from nvidia-smi output, the torch build it picks, the install plan,
progress from pip/uv output, probing interpreters, and the QProcess installer running a plan."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from studio.model import engine_env as ee
from studio.widgets import engine_env_dialog as dialogs

PIP_TRANSCRIPT = """\
Looking in indexes: https://pypi.org/simple
Collecting absl-py
  Downloading absl_py-2.5.1-py3-none-any.whl (137 kB)
Collecting nltk
  Downloading nltk-3.10.4-py3-none-any.whl (1.7 MB)
Progress 0 of 1722994
Progress 262144 of 1722994
Progress 1722994 of 1722994
Processing /opt/pypi/files/defusedxml-0.7.1-py2.py3-none-any.whl (from nltk)
Collecting regex>=2021.8.3 (from nltk)
Progress 805895 of 805895
Installing collected packages: tqdm, regex, defusedxml, absl-py, nltk
Successfully installed absl-py-2.5.1 defusedxml-0.7.1 nltk-3.10.4 regex-2026.11.19 tqdm-4.70.1
"""
SMI = """\
+-----------------------------------------------------------------------------------------+
| NVIDIA-SMI 570.86.15              Driver Version: 570.86.15      CUDA Version: 12.8     |
"""


def test_gpu_csv_and_cuda_version():
    gpus = ee.parse_gpu_csv("NVIDIA H200, 143771, 570.86.15\nNVIDIA H200, 143771, 570.86.15\n")
    assert [(g.name, g.memory_mib) for g in gpus] == [("NVIDIA H200", 143771)] * 2
    assert ee.parse_gpu_csv("No devices were found\n") == []
    assert ee.parse_cuda_version(SMI) == 12.8 and ee.parse_cuda_version("garbage") is None


@pytest.mark.parametrize(("gpus", "cuda", "variant"), [(0, None, "cpu"), (1, 13.1, "cu130"), (1, 12.8, "cu128"),
                                                       (2, 12.6, "cu126"), (1, 11.8, "cpu"), (1, None, "cpu")])
def test_torch_variant_fits_the_driver(gpus, cuda, variant):
    machine = ee.Machine(gpus=[ee.GpuInfo("GPU", 81920, "1")] * gpus, cuda=cuda)
    assert machine.torch_variant == variant
    assert ("CPU build" in machine.describe()) == (gpus == 0)


def test_detect_machine_with_a_fake_nvidia_smi(monkeypatch):
    def run(argv, **kwargs):
        out = "NVIDIA H200, 143771, 570.86.15\n" if len(argv) > 1 else SMI
        return subprocess.CompletedProcess(argv, 0, out, "")

    monkeypatch.setattr(ee.shutil, "which", lambda name: "/usr/bin/nvidia-smi")
    machine = ee.detect_machine(run)
    assert machine.cuda == 12.8 and machine.gpus[0].name == "NVIDIA H200" and machine.torch_variant == "cu128"
    monkeypatch.setattr(ee.shutil, "which", lambda name: None)
    assert ee.detect_machine(run).gpus == []


def test_pip_progress_is_monotonic_and_ends_at_one():
    progress = ee.StepProgress(expected_packages=5)
    fractions = [progress.feed(line) for line in PIP_TRANSCRIPT.splitlines()]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert 0.0 < fractions[6] < 0.85  # mid-download of the second package
    assert fractions[-2] == pytest.approx(0.9)


def test_uv_summaries_drive_progress():
    progress = ee.StepProgress(expected_packages=3)
    assert progress.feed("Resolved 25 packages in 1.2s") == pytest.approx(0.1)
    assert progress.feed("Prepared 25 packages in 30s") == pytest.approx(0.85)
    assert progress.feed("Installed 25 packages in 2s") == 1.0


def test_install_plans(tmp_path):
    plan = ee.install_plan(tmp_path / "env", "cu128", "/src/wheel.whl", python="/usr/bin/python3")
    argvs = [" ".join(s.argv) for s in plan]
    assert argvs[0] == f"/usr/bin/python3 -m venv {tmp_path / 'env'}"
    torch_step = next(a for a in argvs if "torch==" in a)
    assert "https://download.pytorch.org/whl/cu128" in torch_step and "--progress-bar raw" in torch_step
    assert argvs[-1].endswith("/src/wheel.whl")
    uv_plan = ee.install_plan(tmp_path / "env", "cpu", "compression-studio==0.1.0", uv="/bin/uv")
    assert uv_plan[0].argv[:2] == ["/bin/uv", "venv"] and "whl/cpu" in " ".join(uv_plan[1].argv)
    assert ee.overall_fraction(plan, len(plan) - 1, 1.0) == pytest.approx(1.0)
    with pytest.raises(RuntimeError, match="existing environment"):
        ee.install_plan(tmp_path / "env", "cpu", "x")


def test_probe_finds_this_environment_and_rejects_a_broken_one(tmp_path):
    env = ee.probe(sys.executable)
    assert env.ok and env.torch_version.startswith("2.") and env.engine_version
    assert env.command("run", "s.yaml") == [sys.executable, "-m", "engine", "run", "s.yaml"]
    broken = tmp_path / "python"
    broken.write_text("#!/bin/sh\necho not python\n")
    broken.chmod(0o755)
    assert not ee.probe(broken).ok and "not a working Python" in ee.probe(broken).problem
    assert not ee.probe(tmp_path / "missing").ok


def test_choice_is_remembered_and_tried_first(tmp_path, monkeypatch):
    monkeypatch.setenv("COMPRESSION_STUDIO_HOME", str(tmp_path))
    chosen = tmp_path / "bin" / "python"
    chosen.parent.mkdir()
    chosen.write_text("")
    ee.remember_python(chosen)
    assert ee.chosen_python() == chosen and ee.candidates()[0] == chosen
    seen = []

    def check(python: Path) -> ee.EngineEnv:
        seen.append(python)
        return ee.EngineEnv(python, "0.1", "2.13.0") if python == Path(sys.executable) else ee.EngineEnv(python)

    assert ee.find_engine_env(check).python == Path(sys.executable) and seen[0] == chosen


def test_installer_runs_a_plan_and_reports_progress(qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("COMPRESSION_STUDIO_HOME", str(tmp_path))
    lines = PIP_TRANSCRIPT.splitlines()
    script = f"import time\nfor line in {lines!r}:\n    print(line, flush=True)\n    time.sleep(0.005)\n"
    steps = [ee.Step(title, [sys.executable, "-c", script], 0.5, 5) for title in ("one", "two")]
    installer = dialogs.EngineEnvInstaller(steps, tmp_path / "env")
    fractions = []
    installer.progressed.connect(lambda f, m: fractions.append(f))
    with qtbot.waitSignal(installer.finished, timeout=20000) as blocker:
        installer.start()
    assert blocker.args[0] is True and blocker.args[1] == str(ee.env_python(tmp_path / "env"))
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0)
    assert ee.chosen_python() == ee.env_python(tmp_path / "env")
    failing = dialogs.EngineEnvInstaller([ee.Step("bad", [sys.executable, "-c", "raise SystemExit(4)"], 1.0)], tmp_path)
    with qtbot.waitSignal(failing.finished, timeout=20000) as blocker:
        failing.start()
    assert blocker.args[0] is False and "exit code 4" in blocker.args[1]


def test_dialog_accepts_a_working_python_and_rejects_a_broken_one(qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("COMPRESSION_STUDIO_HOME", str(tmp_path))
    dialog = dialogs.EngineEnvDialog(machine=ee.Machine())
    qtbot.addWidget(dialog)
    broken = tmp_path / "python"
    broken.write_text("#!/bin/sh\nexit 0\n")
    broken.chmod(0o755)
    with qtbot.waitSignal(dialog._probe.exited, timeout=20000):
        dialog.use_python(broken)
    assert dialog.python is None and "cannot run the engine" in dialog.status.text()
    with qtbot.waitSignal(dialog.accepted, timeout=60000):
        dialog.use_python(sys.executable)
    assert dialog.python == Path(sys.executable) and ee.chosen_python() == Path(sys.executable)
