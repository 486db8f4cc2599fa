"""The sandbox for model-written programs: limits hold, refusals happen, nothing leaks into or out of the run."""
from __future__ import annotations

import os
import time
from pathlib import Path

import psutil
import pytest

from engine.sandbox import REFUSED_EXIT, normalize_output, run_program, run_tests

SUM_PROGRAM = "import sys\nprint(sum(int(x) for x in sys.stdin.read().split()))\n"


def _sandbox_processes() -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info.get("cmdline") or []
        if any("cs-sandbox-" in part for part in cmdline):
            found.append(proc)
    return found


def test_correct_program_passes_all_tests() -> None:
    tests = [{"input": "1 2 3\n", "output": "6\n"}, {"input": "10 -4", "output": "6"},
             {"input": "", "output": "0"}]
    assert run_tests(SUM_PROGRAM, tests) == 1.0
    wrong = [{"input": "1 2", "output": "3"}, {"input": "1 2", "output": "4"}]
    assert run_tests(SUM_PROGRAM, wrong) == 0.5
    assert run_tests(SUM_PROGRAM, []) == 0.0


def test_output_comparison_ignores_trailing_space_only() -> None:
    assert normalize_output("1 2  \n3\n\n") == "1 2\n3"
    assert normalize_output(" 1") == "1"  # leading space of the whole output is stripped too
    assert normalize_output("1\n 2") != normalize_output("1\n2")  # inner leading spaces matter


def test_endless_loop_is_stopped_within_its_timeout() -> None:
    start = time.monotonic()
    result = run_program("while True:\n    pass\n", timeout_s=1.0, cpu_s=5)
    assert time.monotonic() - start < 2.5
    assert result.timed_out and result.killed_reason == "timeout" and not result.ok
    assert run_tests("while True:\n    pass\n", [{"input": "", "output": ""}], timeout_s=0.5) == 0.0


def test_cpu_limit_kills_a_busy_program_before_the_wall_clock() -> None:
    # generous wall clock: on a loaded machine one CPU second can take many wall seconds
    result = run_program("while True:\n    pass\n", timeout_s=60.0, cpu_s=1)
    assert not result.timed_out and result.killed_reason == "cpu"


def test_fork_bomb_costs_one_failed_test_and_leaves_no_process() -> None:
    bomb = "import os\nwhile True:\n    os.fork()\n"
    result = run_program(bomb, timeout_s=2.0)
    assert result.returncode == REFUSED_EXIT and result.killed_reason == "refused"
    assert run_tests(bomb, [{"input": "", "output": ""}]) == 0.0
    assert _sandbox_processes() == []


def test_children_left_behind_die_with_the_process_group() -> None:
    # Without the audit hook, a program that starts sleeping children and exits must not leave them running.
    code = ("import os, time\npids = []\nfor _ in range(3):\n    pid = os.fork()\n    if pid == 0:\n"
            "        time.sleep(60)\n        os._exit(0)\n    pids.append(pid)\nprint(' '.join(map(str, pids)))\n")
    result = run_program(code, timeout_s=5.0, max_processes=64, _audit=False)
    pids = [int(p) for p in result.stdout.split()]
    assert len(pids) == 3
    time.sleep(0.2)
    alive = [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
    assert alive == []


def test_huge_allocation_fails_cleanly() -> None:
    result = run_program("x = bytearray(8 * 1024 ** 3)\nprint('allocated')\n", memory_mb=256)
    assert result.killed_reason == "memory" and "allocated" not in result.stdout
    # a modest allocation still works under the same limit
    assert run_program("x = bytearray(50 * 1024 ** 2)\nprint(len(x))\n", memory_mb=256).stdout.strip() == \
        str(50 * 1024 ** 2)


def test_writing_outside_its_directory_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "escaped.txt"
    result = run_program(f"open({str(target)!r}, 'w').write('x')\n")
    assert result.killed_reason == "refused" and not target.exists()
    result = run_program(f"import os\nos.mkdir({str(tmp_path / 'made')!r})\n")
    assert result.killed_reason == "refused" and not (tmp_path / "made").exists()
    victim = tmp_path / "keep.txt"
    victim.write_text("data")
    result = run_program(f"import os\nos.remove({str(victim)!r})\n")
    assert result.killed_reason == "refused" and victim.exists()


def test_writing_inside_its_directory_works_and_is_removed_afterwards() -> None:
    code = "import os\nopen('notes.txt', 'w').write('hello')\nprint(open('notes.txt').read(), os.getcwd())\n"
    result = run_program(code)
    assert result.ok, result.stderr
    text, cwd = result.stdout.split()
    assert text == "hello" and not Path(cwd).exists()


@pytest.mark.parametrize("path", ["/etc/passwd", str(Path.home() / ".bashrc"), str(Path.home())])
def test_reading_the_users_files_is_refused(path: str) -> None:
    code = f"import os\np = {path!r}\nprint(os.listdir(p) if os.path.isdir(p) else open(p).read())\n"
    result = run_program(code)
    assert result.killed_reason == "refused" and result.stdout == ""


def test_processes_and_sockets_are_refused() -> None:
    for code in ("import subprocess\nsubprocess.run(['true'])\n", "import os\nos.system('true')\n",
                 "import socket\nsocket.socket()\n", "import ctypes\n"):
        assert run_program(code).killed_reason == "refused", code


def test_environment_secrets_are_not_visible(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SECRET_TOKEN", "hunter2")
    result = run_program("import os\nprint(sorted(os.environ.items()))\n")
    assert result.ok and "hunter2" not in result.stdout and "SECRET_TOKEN" not in result.stdout
    assert "PATH" not in dict(eval(result.stdout))


def test_output_is_capped() -> None:
    result = run_program("while True:\n    print('x' * 1000)\n", output_kb=64, timeout_s=5.0)
    assert len(result.stdout) <= 64 * 1024 and not result.ok
    assert result.killed_reason == "output"


def test_standard_library_imports_work() -> None:
    code = ("import math, collections, itertools, heapq, bisect, functools, re, json, random, string, fractions\n"
            "print(math.gcd(12, 18), collections.Counter('aab')['a'])\n")
    result = run_program(code)
    assert result.ok, result.stderr
    assert result.stdout.split() == ["6", "2"]


def test_sandbox_never_raises_for_bad_programs() -> None:
    for code in ("raise SystemExit(3)\n", "def f(:\n", "import sys\nsys.exit('bye')\n", "\x00"):
        result = run_program(code)
        assert not result.ok
    assert os.getcwd()  # the parent's working directory is untouched
