"""The sandbox for model-written programs: limits hold, refusals happen, nothing leaks into or out of the run, and
the kernel boundary contains every known class of escape, also with the audit hook switched off."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import sysconfig
import tempfile
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from engine.rewards import sandbox
from engine.core.context import EngineError
from engine.contract.spec import GRPOSpec, RewardSpec, SpecError
from engine.rewards.functions import check_code_sandbox, validate_rewards
from engine.rewards.sandbox import REFUSED_EXIT, SandboxResult, normalize_output, run_program, run_tests
from engine.rewards.sandbox_kernel import landlock_abi
from tests.engine.sandbox_helpers import mechanisms as _mechanisms, reward as _reward, \
    sandbox_processes as _sandbox_processes

SUM_PROGRAM = "import sys\nprint(sum(int(x) for x in sys.stdin.read().split()))\n"


@pytest.fixture(autouse=True)
def _own_temp_root(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """This test's sandboxes live under a folder of their own, so that ``_sandbox_processes`` sees only them (other
    engines on the machine may run sandboxes at the same time)."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path_factory.mktemp("sandboxes")))


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


# ------------------------------------------------------------------ the kernel boundary ----------------------------
# Each attack runs twice: with only the kernel boundary (no audit hook: ``_audit=False``), where it must fail and
# leave nothing behind, and through the code_tests reward with every layer, where it must earn nothing. Every
# attack prints "ok" (the expected output) once it got through, so an escape would also earn the reward.

@pytest.fixture(params=_mechanisms())
def boundary(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setattr(sandbox, "mechanism", lambda: request.param)  # the reward path uses the same boundary
    return request.param


def _contained(code: str, boundary: str, **limits: int) -> SandboxResult:
    result = run_program(code, _audit=False, _mechanism=boundary, timeout_s=10.0, **limits)
    assert not result.ok and "ok" not in result.stdout.split(), (result.stdout, result.stderr)
    assert _reward(code) == 0.0
    assert _sandbox_processes() == []
    return result


def test_descriptor_relative_calls_are_contained(boundary: str, tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    d = f"os.open({str(tmp_path)!r}, os.O_PATH)"  # O_PATH: no access is checked on the folder itself
    _contained(f"import os\nfd = os.open('planted.py', os.O_WRONLY | os.O_CREAT, 0o644, dir_fd={d})\n"
               "os.write(fd, b'x')\nprint('ok')\n", boundary)
    _contained(f"import os\nos.unlink('victim.txt', dir_fd={d})\nprint('ok')\n", boundary)
    _contained(f"import os\nprint(open(os.open('victim.txt', os.O_RDONLY, dir_fd={d})).read())\nprint('ok')\n",
               boundary)
    assert not (tmp_path / "planted.py").exists() and victim.read_text() == "keep"


def test_symlinks_and_renames_do_not_lead_out(boundary: str, tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    _contained(f"import os\nos.symlink({str(tmp_path / 'through.txt')!r}, 'link')\nopen('link', 'w').write('x')\n"
               "print('ok')\n", boundary)
    _contained(f"import os\nos.symlink({str(tmp_path)!r}, 'folder')\nopen('folder/into.txt', 'w').write('x')\n"
               "print('ok')\n", boundary)
    _contained(f"import os\nopen('f', 'w').write('x')\nos.rename('f', {str(tmp_path / 'moved.txt')!r})\n"
               "print('ok')\n", boundary)
    _contained(f"import os\nos.rename({str(victim)!r}, 'stolen')\nprint('ok')\n", boundary)
    _contained(f"import os\nos.link({str(victim)!r}, 'hard')\nopen('hard', 'w').write('x')\nprint('ok')\n",
               boundary)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["victim.txt"] and victim.read_text() == "keep"


def test_secrets_and_the_engines_environment_stay_unread(boundary: str, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CS_TEST_SECRET", "hunter2-in-env")
    secret = tmp_path / "secret.txt"
    secret.write_text("hunter2-in-file")
    for path in ("f'/proc/{os.getppid()}/environ'", repr(str(secret)), "'/etc/shadow'",
                 repr(str(Path.home() / ".bashrc"))):
        result = _contained(f"import os\nprint(open({path}, 'rb').read())\nprint('ok')\n", boundary)
        assert "hunter2" not in result.stdout and "root:" not in result.stdout
    # The home folder: Landlock refuses to list it; bubblewrap shows only the way to the interpreter, if it is there.
    home = Path.home()
    result = run_program(f"import os\nprint(sorted(os.listdir({str(home)!r})))\n", _audit=False, _mechanism=boundary)
    leading = {Path(p).relative_to(home).parts[0] for p in sandbox.read_only_paths() if Path(p).is_relative_to(home)}
    assert set(eval(result.stdout) if result.ok else []) <= leading
    assert result.ok == (boundary == "bwrap")


def test_planting_code_for_later_engine_processes_is_contained(boundary: str) -> None:
    target = Path(sysconfig.get_paths()["purelib"]) / "cs_sandbox_probe.pth"  # a .pth runs in every later start
    try:
        _contained(f"open({str(target)!r}, 'w').write('# probe')\nprint('ok')\n", boundary)
        assert not target.exists()
    finally:
        target.unlink(missing_ok=True)  # should this ever fail, do not leave the probe in the environment


def test_no_network_not_even_to_loopback(boundary: str) -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        _contained(f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2).sendall(b'hi')\n"
                   "print('ok')\n", boundary)
        _contained(f"import socket\nsocket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'hi', ('127.0.0.1', "
                   f"{port}))\nprint('ok')\n", boundary)
        listener.settimeout(0.3)
        with pytest.raises(TimeoutError):
            listener.accept()


def test_raw_syscalls_through_ctypes_meet_the_same_rules(boundary: str, tmp_path: Path) -> None:
    nr = {"x86_64": (257, 41), "aarch64": (56, 198)}.get(os.uname().machine)
    if nr is None:
        pytest.skip(f"no syscall numbers for {os.uname().machine} in this test")
    head = ("import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\n"
            "def check(r):\n    assert r >= 0, os.strerror(ctypes.get_errno())\n    return r\n")
    _contained(head + f"fd = check(libc.syscall({nr[0]}, -100, {str(tmp_path / 'raw.txt')!r}.encode(), "
               f"os.O_WRONLY | os.O_CREAT, 0o644))\nos.write(fd, b'x')\nprint('ok')\n", boundary)
    _contained(head + f"check(libc.syscall({nr[0]}, -100, b'/etc/shadow', os.O_RDONLY))\nprint('ok')\n", boundary)
    _contained(head + f"check(libc.syscall({nr[1]}, 2, 1, 0))\nprint('ok')\n", boundary)  # socket(AF_INET, ...)
    assert list(tmp_path.iterdir()) == []


def test_root_powers_and_signals_to_the_engine_are_gone(boundary: str) -> None:
    _contained("import os\nos.setuid(12345)\nprint('ok')\n", boundary)  # needs CAP_SETUID, which root had
    _contained("import os\nos.chroot('.')\nprint('ok')\n", boundary)
    # the engine (this process): Landlock scopes signals, bubblewrap's pid namespace hides it; 0 only probes
    _contained(f"import os\nos.kill({os.getpid()}, 0)\nprint('ok')\n", boundary)


def test_daemons_do_not_outlive_the_check(boundary: str, tmp_path: Path) -> None:
    late = tmp_path / "late.txt"
    daemon = textwrap.dedent(f"""\
        import os, time
        r, w = os.pipe()
        if os.fork() == 0:  # double fork and a new session: the classic daemon
            try:
                os.setsid()
            except OSError:
                pass
            if os.fork() == 0:
                os.write(w, str(os.getpid()).encode())
                time.sleep(1.0)
                open({str(late)!r}, 'w').write('x')
                os._exit(0)
            os._exit(0)
        print(os.read(r, 32).decode())
        """)
    result = run_program(daemon, _audit=False, _mechanism=boundary, max_processes=64, timeout_s=10.0)
    pid = int(result.stdout.split()[0])  # forks allowed here, so the daemon started (pid as seen inside)
    time.sleep(1.5)
    if boundary == "landlock":  # bubblewrap's pid namespace numbers it differently; its command line is checked
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert not late.exists() and _sandbox_processes() == []
    _contained(daemon + "print('ok')\n", boundary)  # with the default one process it cannot even fork


def test_bombs_stay_within_their_limits(boundary: str) -> None:
    result = _contained("import os\nwhile True:\n    os.fork()\n", boundary)
    assert "BlockingIOError" in result.stderr or "Resource temporarily unavailable" in result.stderr
    assert _contained("x = bytearray(8 * 1024 ** 3)\nprint('ok')\n", boundary).killed_reason == "memory"


def test_a_correct_program_still_earns_its_reward(boundary: str) -> None:
    code = "import json, math, collections\nprint('ok')\n"
    assert run_program(code, _mechanism=boundary).stdout == "ok\n"
    assert _reward(code) == 1.0
    assert run_tests(SUM_PROGRAM, [{"input": "1 2 3", "output": "6"}, {"input": "4", "output": "4"}]) == 1.0


def test_landlock_alone_denies_tcp_and_outside_files(tmp_path: Path) -> None:
    """The Landlock layer without seccomp: its network rules and file rules hold by themselves."""
    if landlock_abi() < 4:
        pytest.skip(f"needs Landlock ABI ≥ 4 for network rules, the kernel has {landlock_abi()}")
    with socket.create_server(("127.0.0.1", 0)) as listener:
        code = (f"import socket, sys\nfrom engine.rewards.sandbox_kernel import restrict_landlock\n"
                f"restrict_landlock({list(sandbox.read_only_paths())!r}, [{str(tmp_path)!r}])\n"
                f"for attempt in (lambda: socket.create_connection(('127.0.0.1', {listener.getsockname()[1]})),\n"
                "                lambda: open('/etc/passwd').read()):\n    try:\n        attempt()\n"
                "        print('escaped')\n    except PermissionError:\n        print('denied')\n")
        env = {"PYTHONPATH": str(Path(sandbox.__file__).parents[1])}
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
        assert out.stdout.split() == ["denied", "denied"], out.stderr


def test_a_program_never_runs_unconfined(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    broken = tmp_path / "kernel.py"
    broken.write_text("def confine(*args, **kwargs):\n    raise OSError('no Landlock today')\n")
    monkeypatch.setattr(sandbox, "_KERNEL", str(broken))
    result = run_program("print('ran')\n", _mechanism="landlock")
    assert result.killed_reason == "error" and result.stdout == "" and "no Landlock today" in result.stderr


def test_code_rewards_are_refused_without_a_kernel_sandbox(monkeypatch: pytest.MonkeyPatch) -> None:
    assert sandbox.mechanism() in sandbox.MECHANISMS
    monkeypatch.setattr(sandbox, "mechanism", lambda: "none")
    template = "{prompt} <answer></answer>"
    with pytest.raises(EngineError, match="no kernel sandbox.*allow_unsandboxed_code"):
        validate_rewards([RewardSpec("code_tests")], template, [{"tests": [{"input": "", "output": ""}]}])
    assert check_code_sandbox(allow_unsandboxed=True) == "none"
    validate_rewards([RewardSpec("answer_correct")], template, [{"answer": "1"}])  # no code: no sandbox needed
    assert GRPOSpec().allow_unsandboxed_code is False
    with pytest.raises(SpecError, match="allow_unsandboxed_code"):
        GRPOSpec(allow_unsandboxed_code="yes")
