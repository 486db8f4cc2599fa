"""Run untrusted, model-written Python programs for the code-correctness reward, behind a boundary the kernel
enforces.

Each program runs in its own ``python -I -S`` process (isolated mode: no user site, no ``PYTHON*`` variables, no
site-packages) in a new session/process group, from a fresh temporary working directory that is removed
afterwards, with an almost empty environment (no inherited secrets), stdin fed from a file and stdout/stderr
written to size-capped files. Where the engine is root, the program runs as ``nobody`` (``sandbox_user``), so it
owns nothing outside its folder; where nobody cannot run the interpreter (one installed under /root) it runs as
root without capabilities, and a warning says so. The bootstrap inside the child, before the program starts, in
this order:

* sets ``RLIMIT_CPU``, ``RLIMIT_AS`` (memory), ``RLIMIT_FSIZE`` (output and each file), ``RLIMIT_NOFILE``,
  ``RLIMIT_CORE`` = 0 and ``RLIMIT_NPROC``;
* confines itself in the kernel (``engine.rewards.sandbox_kernel``): no_new_privs and no capabilities (root too),
  Landlock (read/execute only the interpreter and system libraries, read/write only the work folder, no TCP,
  no signals or abstract sockets outside), a seccomp filter (no sockets, io_uring, setsid/setpgid, ptrace,
  no fork when one process is allowed, and no metadata changes: chmod, chown, utime, extended attributes and
  ACLs, inode flags — Landlock has no rights for those). The kernel resolves every path, so ``dir_fd``-relative
  calls, symlinks, renames, ``/proc/<ppid>`` and raw syscalls through ctypes meet the same rules. If confinement
  fails the program does not run;
* installs an audit hook (``sys.addaudithook``) as a last layer: it refuses writes and reads outside the work
  folder, process creation, sockets, ``ctypes`` and introspection of itself, and ends the program with
  ``REFUSED_EXIT``. It runs in the interpreter it polices, so alone it is not a boundary, and nothing depends on
  it: the tests run every attack with it off.

Where the kernel has no Landlock, ``bwrap`` (bubblewrap, when installed) provides the boundary instead: new
user/pid/net/ipc namespaces and a filesystem of read-only binds plus the work folder; the seccomp filter and the
audit hook still apply. ``mechanism()`` says which one runs; with neither ("none") only the audit hook and the
limits are left, and the GRPO stage refuses code rewards unless ``grpo.allow_unsandboxed_code`` is set.

What is not covered: under Landlock the program still sees the host's file tree. ``os.stat``, ``os.path.exists``
and ``os.readlink`` reveal whether a path exists, its size, times, mode and owner, and where a link points, for
every path its user may traverse (Landlock has no right for stat; as nobody, folders like /root stay closed).
Contents, listings and extended attributes stay unread. bubblewrap's fresh mount namespace hides
the host instead: only the read-only binds and the work folder exist there.

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
import time
import sysconfig
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from engine.rewards.sandbox_files import remove_tree, watch
from engine.rewards.sandbox_kernel import landlock_abi

log = logging.getLogger(__name__)

CONFINE_EXIT = 96  # exit code of a program that was not run because the kernel confinement failed
REFUSED_EXIT = 97  # exit code of a program the audit hook stopped
MEMORY_EXIT = 98  # exit code of a program that ran out of its address space
MECHANISMS = ("landlock", "bwrap", "none")
_STDLIB = getattr(sys, "_stdlib_dir", None) or os.path.dirname(os.__file__)
_KERNEL = str(Path(__file__).with_name("sandbox_kernel.py"))

# Runs inside the child: limits, the kernel confinement, the audit hook, then the program. argv: see _command.
_BOOTSTRAP = r'''
import os, sys, resource
def _setup():
    cpu, mem, fsize, nproc, audit = (int(x) for x in sys.argv[1:6])
    mode, work, program, stdlib, kernel, readable = sys.argv[6:12]
    for what, soft, hard in ((resource.RLIMIT_CPU, cpu, cpu + 1), (resource.RLIMIT_AS, mem, mem),
                             (resource.RLIMIT_FSIZE, fsize, fsize), (resource.RLIMIT_NOFILE, 64, 64),
                             (resource.RLIMIT_CORE, 0, 0), (resource.RLIMIT_NPROC, nproc, nproc)):
        try:
            resource.setrlimit(what, (soft, hard))
        except (ValueError, OSError):
            pass
    os.chdir(work)
    with open(os.path.join("..", os.path.basename(program)), encoding="utf-8") as f:  # relative: no right needed
        source = f.read()                                                              # on the folders above
    try:  # the kernel boundary; the program never runs without it
        with open(kernel, encoding="utf-8") as f:
            confinement = {"__name__": "_sandbox_kernel"}
            exec(compile(f.read(), kernel, "exec"), confinement)
        confinement["confine"](readable.split(os.pathsep), [work, "/dev/null"], single_process=nproc <= 1,
                               landlock=mode == "landlock")
    except Exception as exc:
        if mode != "none":  # "none" was chosen knowing there is no boundary: seccomp alone is best effort
            os.write(2, f"sandbox: could not confine the program: {exc}\n".encode("utf-8", "replace"))
            os._exit(96)
    for name in [m for m in sys.modules if m.split(".")[0] in ("ctypes", "_ctypes")]:
        del sys.modules[name]  # so that the program's own import of ctypes meets the audit hook
    exit_, write = os._exit, os.write
    realpath, join, getcwd, fspath = os.path.realpath, os.path.join, os.getcwd, os.fspath
    readable = (stdlib + os.sep, "/dev/null", "/dev/urandom")
    writing = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
    forbidden = ("os.fork", "os.forkpty", "os.exec", "os.posix_spawn", "os.spawn", "os.system", "os.kill",
                 "os.killpg", "subprocess.Popen", "pty.spawn", "ctypes.", "socket.", "gc.get_referrers",
                 "gc.get_referents", "gc.get_objects", "sys.addaudithook", "os.setuid", "os.setgid",
                 "resource.setrlimit", "resource.prlimit")
    blocked_modules = {"ctypes", "_ctypes", "_posixsubprocess", "_socket", "socket", "subprocess",
                       "multiprocessing", "_multiprocessing", "pty", "resource"}
    path_events = {"os.remove": 1, "os.rename": 2, "os.replace": 2, "os.mkdir": 1, "os.rmdir": 1,
                   "os.chmod": 1, "os.chown": 1, "os.link": 2, "os.symlink": 2, "os.truncate": 1,
                   "os.utime": 1, "os.chdir": 1, "os.chroot": 1, "os.mkfifo": 1, "os.mknod": 1,
                   "os.listdir": 1, "os.scandir": 1, "shutil.rmtree": 1, "shutil.copyfile": 2, "shutil.move": 2,
                   "os.setxattr": 1, "os.removexattr": 1, "os.getxattr": 1, "os.listxattr": 1}

    def refuse(event, detail):
        write(2, f"sandbox: refused {event} {detail!r}\n".encode("utf-8", "replace"))
        exit_(97)

    def inside(path):
        if isinstance(path, int) or path is None:
            return True  # an already open descriptor / dir_fd-relative call on one
        full = realpath(join(getcwd(), fspath(path) if not isinstance(path, bytes) else os.fsdecode(path)))
        return full == work or full.startswith(work + os.sep)

    def hook(event, args):
        if event == "open":
            path, mode, flags = (tuple(args) + (None, None))[:3]
            if isinstance(path, int) or inside(path):
                return
            wants_write = bool((flags or 0) & writing) or any(c in str(mode or "") for c in "wax+")
            full = realpath(fspath(path) if not isinstance(path, bytes) else os.fsdecode(path))
            if wants_write or not (full.startswith(readable[0]) or full in readable[1:]):
                refuse(event, path)
        elif event.startswith(forbidden):
            refuse(event, args[:1] if args else "")
        elif event == "import" and args and str(args[0]).split(".")[0] in blocked_modules:
            refuse(event, args[0])
        elif event == "object.__setattr__" and len(args) > 1 and args[1] in ("__code__", "__globals__"):
            refuse(event, args[1])
        elif event in path_events:
            for path in args[:path_events[event]]:
                if event in ("os.listdir", "os.scandir") and path is not None and not isinstance(path, int) \
                        and realpath(fspath(path)).startswith(readable[0]):
                    continue  # the import system lists standard-library folders
                if not inside(path):
                    refuse(event, path)

    if audit:
        sys.addaudithook(hook)
    return source
_source = _setup()
del _setup
_main = type(sys)("__main__")
sys.modules["__main__"] = _main
sys.argv = ["main.py"]
try:
    exec(compile(_source, "<program>", "exec"), _main.__dict__)
except MemoryError:
    sys.stderr.write("MemoryError\n")
    os._exit(98)
'''


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
             audit: bool, mode: str) -> list:
    child = [sys.executable, "-I", "-S", "-B", "-c", _BOOTSTRAP, str(int(cpu_s)), str(memory_mb * 2**20),
             str(file_mb * 2**20), str(max_processes), str(int(audit)), mode, str(work), str(program), _STDLIB,
             _KERNEL, os.pathsep.join(read_only_paths())]
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
_USERS: dict[tuple[str, str], tuple[int, int] | None] = {}


def _unprivileged_ids() -> tuple[int, int]:
    try:
        entry = pwd.getpwnam("nobody")
        return entry.pw_uid, entry.pw_gid
    except KeyError:
        return 65534, 65534


def sandbox_user(mode: str) -> tuple[int, int] | None:
    """(uid, gid) programs run as: ``nobody`` where the engine is root and a probe program works as nobody with
    ``mode``; None (the engine's own user) otherwise. As nobody a program owns nothing outside its folder, so no
    owner-only operation (chmod, utime, ACLs, chattr) can succeed there even past the seccomp filter. The probe
    fails where nobody cannot run the interpreter (one under /root, a private temporary folder): then programs run
    as root without capabilities, and the filter alone denies those operations; a warning says so once."""
    key = (mode, tempfile.gettempdir())
    if key not in _USERS:
        _USERS[key] = None
        if os.geteuid() == 0:
            ids = _unprivileged_ids()
            probe = _run(_PROBE, "", mode=mode, user=ids, audit=True, timeout_s=30.0, cpu_s=10, memory_mb=256,
                         output_kb=16, file_mb=1, disk_mb=4, max_processes=1, quiet=True)
            if probe.ok and probe.stdout.strip() == "ok":
                _USERS[key] = ids
            else:
                log.warning("code sandbox (%s): programs run as root without capabilities, not as the unprivileged "
                            "user %d, who cannot run %s here (%s); install Python where other users can read it",
                            mode, ids[0], sys.executable, (probe.stderr.strip().splitlines() or ["no output"])[-1])
    return _USERS[key]


def _prepare(root: Path, code: str, stdin: str, user: tuple[int, int] | None) -> Path:
    """The program's files: ``root`` (private to the engine but passable) holds the program, its stdin and its
    output files; ``root/work`` is the program's folder, owned by ``user`` where there is one."""
    work = root / "work"
    work.mkdir()
    (root / "program.py").write_text(code, encoding="utf-8")
    (root / "stdin").write_text(stdin, encoding="utf-8")
    if user is not None:  # nobody reads the program (0644) through the passable root (0711) and owns its folder
        os.chmod(root, 0o711)
        os.chmod(root / "program.py", 0o644)
        os.chown(work, *user)
    return work


def _run(code: str, stdin: str, *, mode: str, user: tuple[int, int] | None, audit: bool, timeout_s: float,
         cpu_s: int, memory_mb: int, output_kb: int, file_mb: int, disk_mb: int, max_processes: int,
         quiet: bool = False) -> SandboxResult:
    start, root = time.monotonic(), None
    try:
        root = Path(tempfile.mkdtemp(prefix="cs-sandbox-"))
        work = _prepare(root, code, stdin, user)
        env = {"LC_ALL": "C.UTF-8", "LANG": "C.UTF-8", "HOME": str(work), "TMPDIR": str(work)}
        ids = {"user": user[0], "group": user[1], "extra_groups": []} if user else {}
        with open(root / "stdin", "rb") as fin, open(root / "stdout", "wb") as fout, \
                open(root / "stderr", "wb") as ferr:
            proc = subprocess.Popen(_command(work, root / "program.py", cpu_s, memory_mb, file_mb, max_processes,
                                             audit, mode),
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
    return _run(code, stdin, mode=mode, user=sandbox_user(mode), audit=_audit, timeout_s=timeout_s, cpu_s=cpu_s,
                memory_mb=memory_mb, output_kb=output_kb, file_mb=file_mb, disk_mb=max(disk_mb, file_mb),
                max_processes=max_processes)


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
