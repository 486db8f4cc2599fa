"""Run untrusted, model-written Python programs for the code-correctness reward, behind a boundary the kernel
enforces.

Each program runs in its own ``python -I -S`` process (isolated mode: no user site, no ``PYTHON*`` variables, no
site-packages) in a new session/process group, from a fresh temporary working directory that is removed
afterwards, with an almost empty environment (no inherited secrets), stdin fed from a file and stdout/stderr
written to size-capped files. Where the engine is root, the program runs as ``nobody`` (``sandbox_user``), so it
owns nothing outside its folder: under Landlock the child becomes nobody itself once its own root folder is built
(see below), so an interpreter installed under /root works too; bubblewrap starts as nobody where nobody can reach
the interpreter. Otherwise it runs as root without capabilities, and a warning says so. The bootstrap inside the
child, before the program starts, in this order:

* sets ``RLIMIT_CPU``, ``RLIMIT_AS`` (memory), ``RLIMIT_FSIZE`` (output and each file), ``RLIMIT_NOFILE``,
  ``RLIMIT_CORE`` = 0 and, where several processes are allowed, ``RLIMIT_NPROC`` (with one, seccomp refuses forks
  and threads stay allowed);
* confines itself in the kernel (``engine.rewards.sandbox_kernel``): no_new_privs and no capabilities (root too),
  Landlock (read/execute only the interpreter and system libraries, read/write only the work folder, no TCP,
  no signals or abstract sockets outside), a seccomp filter (no sockets, io_uring, setsid/setpgid, ptrace,
  no fork when one process is allowed, and no metadata changes: chmod, chown, utime, extended attributes and
  ACLs, inode flags — Landlock has no rights for those). The kernel resolves every path, so ``dir_fd``-relative
  calls, symlinks, renames, ``/proc/<ppid>`` and raw syscalls through ctypes meet the same rules. If confinement
  fails the program does not run (``engine.rewards.sandbox_child`` holds this bootstrap);
* installs an audit hook (``sys.addaudithook``) as a last layer: it refuses writes and reads outside the work
  folder, process creation, sockets, ``ctypes`` and introspection of itself, and ends the program with
  ``REFUSED_EXIT``. It runs in the interpreter it polices, so alone it is not a boundary, and nothing depends on
  it: the tests run every attack with it off.

Where the kernel has no Landlock, ``bwrap`` (bubblewrap, when installed) provides the boundary instead: new
user/pid/net/ipc namespaces and a filesystem of read-only binds plus the work folder; the seccomp filter and the
audit hook still apply. ``mechanism()`` says which one runs; with neither ("none") only the audit hook and the
limits are left, and the GRPO stage refuses code rewards unless ``grpo.allow_unsandboxed_code`` is set.

The host's file tree: Landlock has no right for ``stat``, so under Landlock alone ``os.stat``, ``exists`` and
``readlink`` would reveal which paths exist, their sizes, times, modes and owners. So the program also gets a
mount namespace of its own (in a user namespace of its own where the engine is not root) whose root holds only
the interpreter, the system libraries and its work folder (``sandbox_kernel.hide_host``; bubblewrap does the same
by itself). ``hides_host`` says whether that works here (a probe checks once; a non-root engine needs user
namespaces). Where it does not, a warning says so: the program can then
stat any path its user may traverse (as nobody, not inside folders like /root), but still read, list or change
none of them. What stays visible either way: the paths leading to the interpreter's folders, and the kernel's
own view (``os.uname``, ``os.cpu_count``, its limits).

The engine kills the whole process group on timeout and again after every run; since the program cannot leave
its group (seccomp), no child or daemon outlives the check. Meanwhile it measures the work folder
(``sandbox_files.watch``) and stops a program whose folder passes ``disk_mb`` or 10,000 entries (RLIMIT_FSIZE
caps each file, not their number). Afterwards the folder is removed whatever the program did to it
(``engine.rewards.sandbox_files``: iterative, descriptor-relative, permissions restored), and the reward never
raises.
"""
from __future__ import annotations

import logging
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import sysconfig
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from engine.rewards.sandbox_child import BOOTSTRAP
from engine.rewards.sandbox_files import remove_tree, watch
from engine.rewards.sandbox_kernel import landlock_abi

log = logging.getLogger(__name__)

CONFINE_EXIT = 96  # exit code of a program that was not run because the kernel confinement failed
REFUSED_EXIT = 97  # exit code of a program the audit hook stopped
MEMORY_EXIT = 98  # exit code of a program that ran out of its address space
MECHANISMS = ("landlock", "bwrap", "none")
_STDLIB = getattr(sys, "_stdlib_dir", None) or os.path.dirname(os.__file__)
_KERNEL = str(Path(__file__).with_name("sandbox_kernel.py"))

@dataclass
class SandboxResult:
    stdout: str
    stderr: str
    returncode: int | None
    timed_out: bool
    killed_reason: str  # "" | timeout | cpu | memory | output | refused | error (could not run or confine)
    duration_s: float

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.killed_reason


@lru_cache(maxsize=1)
def read_only_paths() -> tuple[str, ...]:
    """What a program may read (and execute): the interpreter's prefixes and standard library, the system library
    folders its extension modules load shared libraries from, the dynamic loader's cache and /dev/urandom.
    Nothing else — not $HOME, /etc, /proc, /tmp or the run store."""
    candidates = [sys.base_prefix, sys.prefix, sys.base_exec_prefix, sys.exec_prefix, _STDLIB,
                  sysconfig.get_config_var("LIBDIR") or "", "/lib", "/lib64", "/usr/lib", "/usr/lib64",
                  "/usr/local/lib", "/etc/ld.so.cache", "/dev/urandom"]
    too_wide = {os.sep, str(Path.home())}  # a prefix that is the whole disk or home would open everything
    return tuple(dict.fromkeys(p for p in candidates if p and p not in too_wide and os.path.exists(p)))


def _bwrap_works() -> bool:
    try:
        return subprocess.run(["bwrap", "--unshare-all", "--cap-drop", "ALL", "--ro-bind", "/", "/", "true"],
                              capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


@lru_cache(maxsize=1)
def mechanism() -> str:
    """The kernel boundary programs run behind: "landlock" (preferred), "bwrap" (bubblewrap, where the kernel
    has no Landlock), or "none" (only the audit hook and the limits: not a boundary)."""
    from engine.rewards.sandbox_kernel import _ARCH  # the seccomp filter needs the architecture's syscall table

    if os.uname().machine not in _ARCH:
        found = "none"
    elif landlock_abi() >= 1:
        found = "landlock"
    elif shutil.which("bwrap") and _bwrap_works():
        found = "bwrap"
    else:
        found = "none"
    log.info("code sandbox: %s%s", found, f" (Landlock ABI {landlock_abi()})" if found == "landlock" else "")
    return found


def _bwrap_argv(work: Path, files: list[Path]) -> list[str]:
    """New namespaces (user, pid, net, ipc, uts, cgroup), no capabilities, a filesystem of read-only binds of
    ``read_only_paths`` and ``files`` plus the work folder, a minimal /dev and no /proc."""
    argv = [shutil.which("bwrap") or "bwrap", "--unshare-all", "--die-with-parent", "--cap-drop", "ALL",
            "--dev", "/dev"]
    for path in [*read_only_paths(), *map(str, files)]:
        if path.startswith("/dev/"):
            continue  # --dev provides the device nodes
        argv += ["--symlink", os.readlink(path), path] if os.path.islink(path) else ["--ro-bind", path, path]
    return argv + ["--bind", str(work), str(work), "--chdir", str(work), "--"]


def _command(work: Path, program: Path, cpu_s: int, memory_mb: int, file_mb: int, max_processes: int,
             audit: bool, mode: str, new_root: Path | None, switch_to: tuple[int, int] | None) -> list:
    child = [sys.executable, "-I", "-S", "-B", "-c", BOOTSTRAP, str(int(cpu_s)), str(memory_mb * 2**20),
             str(file_mb * 2**20), str(max_processes), str(int(audit)), mode, str(work), str(program), _STDLIB,
             _KERNEL, os.pathsep.join(read_only_paths()), str(new_root or ""),
             "%d:%d" % switch_to if switch_to else ""]
    return _bwrap_argv(work, [program, Path(_KERNEL)]) + child if mode == "bwrap" else child


def _group_alive(pgid: int) -> bool:
    """Whether a process of group ``pgid`` is still running (zombies do not count: an init that reaps no orphans,
    as in some containers, leaves them in the group for good)."""
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()  # after "(comm)": state, ppid, pgrp, ...
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != b"Z":
            return True
    return False


def _end_group(proc: subprocess.Popen, settle_s: float = 1.0) -> None:
    """SIGKILL the program's process group (also after a normal exit: children left in the group die with it),
    reap the program, then wait up to ``settle_s`` until no member runs (bubblewrap's inner process dies with its
    pid namespace a moment after the outer one)."""
    deadline = time.monotonic() + settle_s
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()
    while time.monotonic() < deadline and _group_alive(proc.pid):
        time.sleep(0.002)


def _reason(returncode: int | None, timed_out: bool, stderr: str) -> str:
    if timed_out:
        return "timeout"
    if returncode == CONFINE_EXIT and "sandbox: could not confine" in stderr:
        return "error"
    if returncode == REFUSED_EXIT and "sandbox: refused" in stderr:
        return "refused"
    if returncode in (-signal.SIGXCPU, -signal.SIGKILL):
        return "cpu"
    if returncode == -signal.SIGXFSZ or "File too large" in stderr:
        return "output"
    if returncode == MEMORY_EXIT or "MemoryError" in stderr:
        return "memory"
    return ""


def _read_capped(path: Path, limit: int) -> str:
    with open(path, "rb") as f:
        return f.read(limit).decode("utf-8", "replace")


_PROBE = "import json, math, collections\nopen('probe.txt', 'w').write('ok')\nprint(open('probe.txt').read())\n"
_HIDDEN_PROBE = "import os, json\nprint(os.path.exists('/etc/passwd') or os.path.exists('/proc/self'), os.getuid())\n"
_Setup = tuple[tuple[int, int] | None, bool, bool]  # the user, whether the host is hidden, whether the child switches
_SETUPS: dict[tuple[str, str], _Setup] = {}
_SETUP_LOCK = threading.Lock()


def _unprivileged_ids() -> tuple[int, int]:
    try:
        entry = pwd.getpwnam("nobody")
        return entry.pw_uid, entry.pw_gid
    except KeyError:
        return 65534, 65534


def _probe(code: str, mode: str, user: tuple[int, int] | None, hide: bool, in_child: bool = False) -> SandboxResult:
    return _run(code, "", mode=mode, user=user, hide=hide, audit=True, timeout_s=30.0, cpu_s=10, memory_mb=256,
                output_kb=16, file_mb=1, disk_mb=4, max_processes=1, quiet=True, user_in_child=in_child)


def _last_line(result: SandboxResult) -> str:
    return (result.stderr.strip().splitlines() or ["no output"])[-1]


def _setup(mode: str) -> _Setup:
    """(``sandbox_user``, ``hides_host``, whether the child switches to the user itself) for ``mode``, probed once
    per boundary and temporary folder."""
    key = (mode, tempfile.gettempdir())
    with _SETUP_LOCK:  # the code reward runs programs from several threads: probe once, warn once
        if key not in _SETUPS:
            _SETUPS[key] = _probe_setup(mode)
    return _SETUPS[key]


def _probe_setup(mode: str) -> _Setup:
    """Probe which user programs run as and whether they get a root folder of their own (see the two below).
    Under Landlock a root engine's child first builds its own root, then becomes nobody (``hide_host``): that
    needs no user namespace and works with an interpreter nobody could not reach on the host."""
    ids = _unprivileged_ids()
    if mode == "landlock" and os.geteuid() == 0:
        probe = _probe(_HIDDEN_PROBE, mode, ids, hide=True, in_child=True)
        if probe.ok and probe.stdout.split() == ["False", str(ids[0])]:
            return ids, True, True
        log.debug("code sandbox: own root as root, then nobody, failed: %s", _last_line(probe))
    user = None
    if os.geteuid() == 0:
        probe = _probe(_PROBE, mode, _unprivileged_ids(), hide=False)
        if probe.ok and probe.stdout.strip() == "ok":
            user = _unprivileged_ids()
        else:
            log.warning("code sandbox (%s): programs run as root without capabilities, not as the unprivileged "
                        "user %d, who cannot run %s here (%s); install Python where other users can read it",
                        mode, _unprivileged_ids()[0], sys.executable, _last_line(probe))
    hide = mode == "bwrap"
    if mode == "landlock":
        probe = _probe(_HIDDEN_PROBE, mode, user, hide=True)
        hide = probe.ok and probe.stdout.split()[:1] == ["False"]
        if not hide:
            log.warning("code sandbox (landlock): programs can see which paths exist on this machine, with their "
                        "sizes and times (stat), since they cannot get a root folder of their own here (%s; "
                        "user namespaces disabled?); they still cannot read or change them", _last_line(probe))
    return user, hide, False


def sandbox_user(mode: str) -> tuple[int, int] | None:
    """(uid, gid) programs run as: ``nobody`` where the engine is root and a probe program works as nobody with
    ``mode``; None (the engine's own user) otherwise. As nobody a program owns nothing outside its folder, so no
    owner-only operation (chmod, utime, ACLs, chattr) can succeed there even past the seccomp filter. The probe
    fails with bubblewrap where nobody cannot reach the interpreter (one under /root), and under Landlock only where
    the child cannot build its own root: then programs run as root without capabilities, and the filter alone
    denies those operations; a warning says so once."""
    return _setup(mode)[0]


def hides_host(mode: str) -> bool:
    """Whether programs see only their own root folder (the interpreter, system libraries and their work folder):
    always with bubblewrap; with Landlock where a probe program could get a user and mount namespace of its own
    (``sandbox_kernel.hide_host``); a warning says so once where not."""
    return _setup(mode)[1]


def _prepare(root: Path, code: str, stdin: str, user: tuple[int, int] | None) -> Path:
    """The program's files: ``root`` (private to the engine but passable) holds the program, its stdin, its
    output files and the empty ``new-root`` the program's own root may be built on; ``root/work`` is the program's
    folder, owned by ``user`` where there is one."""
    work = root / "work"
    work.mkdir()
    (root / "new-root").mkdir(mode=0o755)
    (root / "program.py").write_text(code, encoding="utf-8")
    (root / "stdin").write_text(stdin, encoding="utf-8")
    if user is not None:  # nobody reads the program (0644) through the passable root (0711) and owns its folder
        os.chmod(root, 0o711)
        os.chmod(root / "program.py", 0o644)
        os.chown(work, *user)
    return work


def _run(code: str, stdin: str, *, mode: str, user: tuple[int, int] | None, hide: bool, audit: bool,
         timeout_s: float, cpu_s: int, memory_mb: int, output_kb: int, file_mb: int, disk_mb: int,
         max_processes: int, quiet: bool = False, user_in_child: bool = False) -> SandboxResult:
    start, root = time.monotonic(), None
    try:
        root = Path(tempfile.mkdtemp(prefix="cs-sandbox-"))
        work = _prepare(root, code, stdin, user)
        env = {"LC_ALL": "C.UTF-8", "LANG": "C.UTF-8", "HOME": str(work), "TMPDIR": str(work)}
        ids = {"user": user[0], "group": user[1], "extra_groups": []} if user and not user_in_child else {}
        with open(root / "stdin", "rb") as fin, open(root / "stdout", "wb") as fout, \
                open(root / "stderr", "wb") as ferr:
            proc = subprocess.Popen(_command(work, root / "program.py", cpu_s, memory_mb, file_mb, max_processes,
                                             audit, mode, root / "new-root" if hide and mode == "landlock" else None,
                                             user if user_in_child else None),
                                    stdin=fin, stdout=fout, stderr=ferr, cwd=work, env=env,
                                    start_new_session=True, close_fds=True, **ids)
            try:
                stopped = watch(proc, work, timeout_s, disk_mb * 2**20)
            finally:
                _end_group(proc)
        duration = time.monotonic() - start
        stdout = _read_capped(root / "stdout", output_kb * 1024)
        stderr = _read_capped(root / "stderr", 16 * 1024)
        timed_out = stopped == "timeout"
        returncode = None if stopped else proc.returncode
        return SandboxResult(stdout, stderr, returncode, timed_out,
                             stopped or _reason(returncode, timed_out, stderr), round(duration, 3))
    except OSError as exc:  # e.g. no more processes or disk: one failed test, never the run
        log.log(logging.DEBUG if quiet else logging.WARNING, "sandbox could not run a program: %s", exc)
        return SandboxResult("", str(exc), None, False, "error", round(time.monotonic() - start, 3))
    finally:
        if root is not None:
            remove_tree(str(root))  # whatever the program did to its folder; never raises


def run_program(code: str, stdin: str = "", *, timeout_s: float = 2.0, cpu_s: int = 2, memory_mb: int = 256,
                output_kb: int = 256, file_mb: int = 4, disk_mb: int = 32, max_processes: int = 1,
                _audit: bool = True, _mechanism: str | None = None) -> SandboxResult:
    """Run ``code`` with ``stdin``; never raises for anything the program does (see the module docstring).
    ``file_mb`` caps each file the program writes, ``disk_mb`` its whole folder. ``_audit=False`` drops the audit
    hook and ``_mechanism`` picks the boundary instead of ``mechanism()``; only tests use them, to check each
    layer on its own."""
    mode = _mechanism or mechanism()
    # FSIZE caps stdout too (the program dies with SIGXFSZ past it): output can never flood memory or disk.
    file_mb = max(file_mb, output_kb // 1024 + 1)
    user, hide, in_child = _setup(mode)
    return _run(code, stdin, mode=mode, user=user, hide=hide, audit=_audit, timeout_s=timeout_s, cpu_s=cpu_s,
                memory_mb=memory_mb, output_kb=output_kb, file_mb=file_mb, disk_mb=max(disk_mb, file_mb),
                max_processes=max_processes, user_in_child=in_child)


def normalize_output(text: str) -> str:
    """Outputs are compared line by line without trailing spaces and without blank lines at either end."""
    return "\n".join(line.rstrip() for line in str(text).strip().splitlines())


def run_tests(code: str, tests: list[dict], *, timeout_s: float = 2.0, cpu_s: int = 2, memory_mb: int = 256,
              stop_on_limit: bool = True) -> float:
    """Fraction of ``tests`` ({"input", "output"}) whose expected output the program prints exactly (after
    ``normalize_output``). With ``stop_on_limit`` a program stopped by a limit or a refusal is not run on the
    remaining tests (they count as failed): an endless loop costs one timeout, not one per test."""
    if not tests:
        return 0.0
    passed = 0
    for test in tests:
        result = run_program(code, str(test.get("input", "") or ""), timeout_s=timeout_s, cpu_s=cpu_s,
                             memory_mb=memory_mb)
        if result.ok and normalize_output(result.stdout) == normalize_output(test.get("output", "") or ""):
            passed += 1
        elif stop_on_limit and result.killed_reason in ("timeout", "cpu", "memory", "refused"):
            break
    return passed / len(tests)
