"""The code sandbox guards metadata outside the program's folder (issue 19, item 1): extended attributes (ACLs
included), modes, owners, times and inode flags stay as they were, with the audit hook off, under each kernel
boundary, and the engine's own code reward scores such a program 0. Programs run as an unprivileged user where the
engine is root and that user can run the interpreter."""
from __future__ import annotations

import errno
import fcntl
import functools
import logging
import os
import shutil
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from engine.rewards import sandbox
from engine.rewards.sandbox import run_program
from tests.engine.sandbox_helpers import mechanisms, reward, sandbox_processes

REPO = Path(sandbox.__file__).parents[2]
FS_IOC_GETFLAGS, FS_IOC_SETFLAGS, FS_NODUMP_FL = 0x80086601, 0x40086602, 0x40
# A POSIX ACL giving user 65534 (nobody) read and write: version 2, then (tag, permissions, id) entries.
_ACL = struct.pack("<I", 2) + b"".join(struct.pack("<HHI", tag, perm, uid) for tag, perm, uid in (
    (0x01, 6, 0xFFFFFFFF), (0x02, 6, 65534), (0x04, 4, 0xFFFFFFFF), (0x10, 6, 0xFFFFFFFF), (0x20, 0, 0xFFFFFFFF)))


@pytest.fixture(autouse=True)
def _own_temp_root(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path_factory.mktemp("sandboxes")))


@pytest.fixture(params=mechanisms())
def boundary(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setattr(sandbox, "mechanism", lambda: request.param)  # the reward path uses the same boundary
    return request.param


@pytest.fixture
def outside(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder outside the sandbox holding ``victim.txt`` (mode 0600, a ``user.keep`` attribute): readable by
    programs (added to the sandbox's read-only paths, so that descriptor attacks get a descriptor; bubblewrap binds
    it read-only), never changeable."""
    folder = tmp_path / "outside"
    folder.mkdir(mode=0o755)
    victim = folder / "victim.txt"
    victim.write_text("keep")
    victim.chmod(0o600)
    try:
        os.setxattr(victim, "user.keep", b"1")
    except OSError as exc:
        pytest.skip(f"the test folder's filesystem has no user xattrs ({exc})")
    readable = sandbox.read_only_paths() + (str(folder),)
    monkeypatch.setattr(sandbox, "read_only_paths", lambda: readable)
    return folder


def _state(path: Path) -> tuple:
    """Everything an attack could change, ctime first: the kernel moves it on any metadata change at all."""
    st = os.lstat(path)
    attrs = {name: os.getxattr(path, name, follow_symlinks=False) for name in os.listxattr(path, follow_symlinks=False)}
    fd = os.open(path, os.O_RDONLY)
    try:
        flags = struct.unpack("l", fcntl.ioctl(fd, FS_IOC_GETFLAGS, struct.pack("l", 0)))[0]
    except OSError:
        flags = None
    finally:
        os.close(fd)
    return st.st_ctime_ns, st.st_mtime_ns, st.st_mode, st.st_uid, st.st_gid, attrs, flags


# Each attack, with {f} the victim file and {d} its folder; every one prints "ok" once it got through.
_FD = "fd = os.open({f!r}, os.O_RDONLY)\n"
_DIR_FD = "d = os.open({d!r}, os.O_PATH)\n"
_RAW = "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\nassert libc.syscall({nr}, {args}) == 0, 'denied'\n"
ATTACKS = {
    "ACL on a file": "os.setxattr({f!r}, 'system.posix_acl_access', ACL)",
    "default ACL on a folder": "os.setxattr({d!r}, 'system.posix_acl_default', ACL)",
    "user attribute": "os.setxattr({f!r}, 'user.planted', b'1')",
    "lsetxattr": "os.setxattr({f!r}, 'user.planted', b'1', follow_symlinks=False)",
    "fsetxattr": _FD + "os.setxattr(fd, 'system.posix_acl_access', ACL)",
    "removexattr": "os.removexattr({f!r}, 'user.keep')",
    "lremovexattr": "os.removexattr({f!r}, 'user.keep', follow_symlinks=False)",
    "fremovexattr": _FD + "os.removexattr(fd, 'user.keep')",
    "chmod": "os.chmod({f!r}, 0o666)",
    "fchmod": _FD + "os.chmod(fd, 0o666)",
    "fchmodat": _DIR_FD + "os.chmod('victim.txt', 0o666, dir_fd=d)",
    "chmod of the folder": "os.chmod({d!r}, 0o777)",
    "chown": "os.chown({f!r}, os.getuid(), 65534)",
    "lchown": "os.lchown({f!r}, os.getuid(), 65534)",
    "fchown": _FD + "os.fchown(fd, os.getuid(), 65534)",
    "fchownat": _DIR_FD + "os.chown('victim.txt', os.getuid(), 65534, dir_fd=d)",
    "utime": "os.utime({f!r}, (0, 0))",
    "utime to now": "os.utime({f!r})",
    "futimens": _FD + "os.utime(fd, (0, 0))",
    "utimensat": _DIR_FD + "os.utime('victim.txt', ns=(0, 0), dir_fd=d, follow_symlinks=False)",
    "chattr": "import fcntl, struct\n" + _FD + f"fcntl.ioctl(fd, {FS_IOC_SETFLAGS}, struct.pack('l', {FS_NODUMP_FL}))",
}
RAW_X86_64 = {  # the old calls glibc no longer makes for Python, and the newest ones (6.6, 6.13, 6.17)
    "utime (raw)": (132, "{f!r}.encode(), None"), "utimes (raw)": (235, "{f!r}.encode(), None"),
    "futimesat (raw)": (261, "-100, {f!r}.encode(), None"), "fchmodat2 (raw)": (452, "-100, {f!r}.encode(), 0o666, 0"),
    "removexattrat (raw)": (466, "-100, {f!r}.encode(), 0, b'user.keep'"),
}
if os.uname().machine == "x86_64":
    ATTACKS.update({name: _RAW.format(nr=nr, args=args) for name, (nr, args) in RAW_X86_64.items()})


def _attack(name: str, folder: Path) -> str:
    body = ATTACKS[name].format(f=str(folder / "victim.txt"), d=str(folder))
    return f"import os\nACL = {_ACL!r}\n{body}\nprint('ok')\n"


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_metadata_outside_the_folder_cannot_change(attack: str, boundary: str, outside: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    code = _attack(attack, outside)
    before = [_state(outside / "victim.txt"), _state(outside)]
    result = run_program(code, _audit=False, _mechanism=boundary, timeout_s=10.0)
    assert not result.ok and "ok" not in result.stdout.split(), (result.stdout, result.stderr)
    assert [_state(outside / "victim.txt"), _state(outside)] == before
    # The engine's own code reward: as shipped (audit hook on), and with the hook off, it earns nothing.
    assert reward(code) == 0.0
    monkeypatch.setattr(sandbox, "run_program", functools.partial(run_program, _audit=False))
    assert reward(code) == 0.0
    assert [_state(outside / "victim.txt"), _state(outside)] == before and sandbox_processes() == []


_FILTER_ONLY = r'''
import errno, os, struct, sys
from engine.rewards import sandbox_kernel as k
victim, folder = sys.argv[1], os.path.dirname(sys.argv[1])
fd, dfd = os.open(victim, os.O_RDONLY), os.open(folder, os.O_PATH)
k.install_seccomp(k._ARCH[os.uname().machine], single_process=True)  # the filter alone, with root's capabilities
import ctypes, fcntl
libc = ctypes.CDLL(None, use_errno=True)
def raw(nr, *args):
    if libc.syscall(nr, *args) < 0:
        raise OSError(ctypes.get_errno(), "")
calls = {
    "setxattr": lambda: os.setxattr(victim, "user.x", b"1"), "fsetxattr": lambda: os.setxattr(fd, "user.x", b"1"),
    "removexattr": lambda: os.removexattr(victim, "user.keep"), "fremovexattr": lambda: os.removexattr(fd, "user.keep"),
    "chmod": lambda: os.chmod(victim, 0o666), "fchmod": lambda: os.chmod(fd, 0o666),
    "fchmodat": lambda: os.chmod("victim.txt", 0o666, dir_fd=dfd), "chown": lambda: os.chown(victim, 1, 1),
    "fchown": lambda: os.fchown(fd, 1, 1), "lchown": lambda: os.lchown(victim, 1, 1),
    "utime": lambda: os.utime(victim, (0, 0)), "futimens": lambda: os.utime(fd, (0, 0)),
    "chattr": lambda: fcntl.ioctl(fd, 0x40086602, struct.pack("l", 0x40)),
    "getxattr": lambda: os.getxattr(victim, "user.keep"), "listxattr": lambda: os.listxattr(victim),
}
if os.uname().machine == "x86_64":
    calls.update({"fchmodat2": lambda: raw(452, -100, victim.encode(), 0o666, 0),
                  "setxattrat": lambda: raw(463, -100, victim.encode(), 0, b"user.x", None, 0),
                  "removexattrat": lambda: raw(466, -100, victim.encode(), 0, b"user.keep"),
                  "file_setattr": lambda: raw(469, -100, victim.encode(), None, 0, 0),
                  "utimes": lambda: raw(235, victim.encode(), None),
                  "futimesat": lambda: raw(261, -100, victim.encode(), None)})
for name, call in calls.items():
    try:
        call()
        print(name, "allowed")
    except OSError as exc:
        print(name, errno.errorcode.get(exc.errno, exc.errno))
'''


def test_the_seccomp_filter_alone_denies_every_metadata_call(outside: Path) -> None:
    """Without Landlock, bubblewrap, a user switch or the audit hook, and with every capability of the engine's
    user: the filter answers EPERM to changes and "not supported" to reads of extended attributes."""
    victim = outside / "victim.txt"
    before = _state(victim)
    env = {"PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", _FILTER_ONLY, str(victim)], capture_output=True, text=True, env=env,
                         timeout=60, check=False)
    answers = dict(line.split() for line in out.stdout.splitlines())
    assert len(answers) >= 15, out.stderr
    reads = {"getxattr", "listxattr"}
    assert {name: code for name, code in answers.items() if name not in reads} == \
        dict.fromkeys(set(answers) - reads, "EPERM")
    assert {answers[name] for name in reads} == {errno.errorcode[errno.ENOTSUP]}
    assert _state(victim) == before


def test_the_audit_hook_refuses_extended_attributes_outside_too(outside: Path) -> None:
    """The last layer knows the xattr events as well (the filter already denies the calls)."""
    for attack in ("user attribute", "removexattr"):
        result = run_program(_attack(attack, outside))
        assert result.killed_reason == "refused" and "os." in result.stderr, result.stderr
    assert run_program("import os\nopen('f', 'w').close()\nprint(os.listxattr('f'))\n").stderr.endswith(
        "Operation not supported: 'f'\n")  # inside: the hook lets it through, the filter answers


THREADED = ("import sys, threading\nsys.setrecursionlimit(10 ** 6)\nthreading.stack_size(64 * 2 ** 20)\n"
            "def depth(n):\n    return n if n == 0 else 1 + depth(n - 1)\n"
            "t = threading.Thread(target=lambda: print('ok' if depth(20000) == 20000 else 'no'))\n"
            "t.start()\nt.join()\n")


def test_a_program_may_recurse_in_a_big_stack_thread(boundary: str) -> None:
    """The usual trick for deep recursion: threads stay allowed with one process, whoever the program runs as."""
    result = run_program(THREADED, _audit=False, _mechanism=boundary)
    assert result.ok and result.stdout == "ok\n", result.stderr
    assert reward(THREADED) == 1.0


def test_a_program_in_its_own_folder_still_writes_and_earns(boundary: str) -> None:
    code = ("import os, tempfile\nos.makedirs('a/b', exist_ok=True)\nopen('a/b/f.txt', 'w').write('x')\n"
            "with tempfile.TemporaryDirectory() as t:\n    open(os.path.join(t, 'g'), 'w').write('y')\n"
            "os.replace('a/b/f.txt', 'a/g.txt')\nos.remove('a/g.txt')\nprint('ok')\n")
    result = run_program(code, _audit=False, _mechanism=boundary)
    assert result.ok and result.stdout == "ok\n", result.stderr
    assert reward(code) == 1.0


_SYSTEM_PYTHON = shutil.which("python3", path="/usr/bin:/bin")


def _usable_by_nobody(python: str | None) -> bool:
    if not python or os.geteuid() != 0:
        return False
    probe = subprocess.run([python, "-I", "-S", "-c", "import json, ctypes"], user=65534, group=65534,
                           extra_groups=[], capture_output=True, timeout=60, check=False)
    return probe.returncode == 0


@pytest.mark.skipif(not _usable_by_nobody(_SYSTEM_PYTHON),
                    reason="needs a root test run and a system python3 that user nobody (65534) can run")
def test_a_root_engine_runs_programs_as_nobody(boundary: str, outside: Path) -> None:
    """The engine is root; its interpreter (the system python3 here: the test venv's may sit under /root, where
    nobody cannot reach it) is usable by nobody, so programs run as nobody and own nothing outside their folder."""
    script = (f"import sys\nsys.path.insert(0, {str(REPO)!r})\nfrom engine.rewards import sandbox\n"
              f"print(sandbox.sandbox_user({boundary!r}), sandbox.hides_host({boundary!r}))\n"
              f"print(sandbox.run_program(\"import os\\nopen('f', 'w').write('x')\\nprint(os.getuid(), os.getgid(), "
              f"os.getgroups(), os.stat('f').st_uid)\", _mechanism={boundary!r}).stdout)\n"
              f"print(sandbox.run_program({_attack('ACL on a file', outside)!r}, _audit=False, "
              f"_mechanism={boundary!r}).stderr)\n"
              f"print(sandbox.run_program({THREADED!r}, _mechanism={boundary!r}).stdout.strip())\n")
    before = _state(outside / "victim.txt")
    out = subprocess.run([_SYSTEM_PYTHON, "-c", script], capture_output=True, text=True, timeout=120, check=False,
                         env={"TMPDIR": "/tmp"})
    lines = out.stdout.splitlines()
    assert lines[:2] == ["(65534, 65534) True", "65534 65534 [] 65534"], out.stdout + out.stderr
    assert "Operation not permitted" in out.stdout and _state(outside / "victim.txt") == before
    assert lines[-1] == "ok"  # threads work as nobody too


def test_the_user_probe_says_why_programs_stay_root(caplog: pytest.LogCaptureFixture,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Where the engine is root but nobody cannot run its interpreter, the programs run as root without
    capabilities (the filter denies metadata calls) and a warning names the reason; as non-root: no switch."""
    monkeypatch.setattr(sandbox, "_SETUPS", {})
    with caplog.at_level(logging.WARNING, logger="engine.rewards.sandbox"):
        user = sandbox.sandbox_user(sandbox.mechanism())
    if os.geteuid() != 0:
        assert user is None and caplog.records == []
    elif user is None:
        assert any("run as root without capabilities" in r.getMessage() for r in caplog.records)
    else:
        assert user == sandbox._unprivileged_ids()
        assert run_program("import os\nprint(os.getuid())\n").stdout.strip() == str(user[0])


def test_the_hosts_tree_is_hidden(boundary: str, tmp_path: Path) -> None:
    """stat, exists and readlink find nothing of the host but the interpreter's files and the program's folder:
    bubblewrap and, under Landlock, a user and mount namespace of the program's own with a fresh root."""
    if not sandbox.hides_host(boundary):
        pytest.skip("this machine gives programs no namespace of their own (user namespaces disabled?): the host's "
                    "paths stay visible to stat, as the engine's warning says")
    secret = tmp_path / "secret.txt"
    secret.write_text("x" * 1234)
    (tmp_path / "link").symlink_to(secret)
    probes = [str(secret), str(tmp_path), "/etc/passwd", "/proc/self", str(REPO / "studio")]
    code = (f"import os\nprint([os.path.lexists(p) for p in {probes!r}])\n"
            f"for probe in (lambda: os.stat({str(secret)!r}).st_size,\n"
            f"              lambda: os.readlink({str(tmp_path / 'link')!r})):\n"
            "    try:\n        print(probe())\n    except OSError as exc:\n        print(type(exc).__name__)\n"
            "print(os.path.exists('.'), os.path.exists(os.__file__))\n")
    result = run_program(code, _audit=False, _mechanism=boundary)
    assert result.ok, result.stderr
    assert result.stdout.splitlines() == [str([False] * len(probes)), "FileNotFoundError", "FileNotFoundError",
                                          "True True"]


def test_where_the_host_cannot_be_hidden_a_warning_says_so(monkeypatch: pytest.MonkeyPatch,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(sandbox, "_SETUPS", {})
    monkeypatch.setattr(sandbox, "_HIDDEN_PROBE", "print(True)\n")  # as if /etc/passwd were still there
    with caplog.at_level(logging.WARNING, logger="engine.rewards.sandbox"):
        assert sandbox.hides_host("landlock") is False
    assert any("can see which paths exist" in r.getMessage() for r in caplog.records)
    assert sandbox.hides_host("bwrap") is True  # bubblewrap's own mount namespace


@pytest.mark.skipif(os.geteuid() != 0 or sandbox.landlock_abi() < 1, reason="needs a root test run and Landlock")
def test_under_landlock_a_root_engine_runs_programs_as_nobody_with_its_own_python() -> None:
    """The child builds its own root first (tmpfs folders open to all lead to the interpreter), then becomes nobody:
    this works even where the engine's interpreter sits under /root, as this project's venv may."""
    if not sandbox.hides_host("landlock"):
        pytest.skip("the child cannot build its own root here (see the engine's warning)")
    code = "import os, json\nopen('f', 'w').write('x')\nprint(os.getuid(), os.getgid(), os.stat('f').st_uid)\n"
    result = run_program(code, _audit=False, _mechanism="landlock")
    assert result.ok and result.stdout.split() == ["65534", "65534", "65534"], result.stderr
    assert sandbox.sandbox_user("landlock") == sandbox._unprivileged_ids()


_UNPRIVILEGED_ENGINE = r'''
import os, sys, tempfile
sys.path.insert(0, sys.argv[1])
tempfile.tempdir = sys.argv[2]
from engine.rewards import sandbox
outside = os.path.join(sys.argv[2], "outside")
os.mkdir(outside, 0o755)
victim = os.path.join(outside, "victim.txt")
open(victim, "w").write("keep")
os.chmod(victim, 0o600)
readable = sandbox.read_only_paths() + (outside,)
sandbox.read_only_paths = lambda: readable  # visible to the program, so that only the filter stands in the way
for mode in sys.argv[3:]:
    print(mode, sandbox.sandbox_user(mode), sandbox.hides_host(mode))
    probe = "import os\nprint(os.path.exists('/etc/passwd'), os.getuid())"
    print(sandbox.run_program(probe, _mechanism=mode).stdout.strip())
    for attack in (f"os.chmod({victim!r}, 0o666)", f"os.setxattr({victim!r}, 'user.x', b'1')",
                   f"os.utime({victim!r}, (0, 0))"):
        result = sandbox.run_program(f"import os\n{attack}\nprint('ok')", _audit=False, _mechanism=mode)
        print(result.stdout.strip() or result.stderr.strip().splitlines()[-1].split(":")[0])
st = os.stat(victim)
print(oct(st.st_mode & 0o777), st.st_mtime > 0, os.listxattr(victim), sorted(os.listdir(sys.argv[2])))
'''


@pytest.mark.skipif(not _usable_by_nobody(_SYSTEM_PYTHON),
                    reason="needs a root test run and a system python3 that user nobody (65534) can run")
def test_an_unprivileged_engine_guards_its_own_files(tmp_path: Path) -> None:
    """The engine runs as nobody here, so its programs run as its own user and own what it owns: only the filter
    keeps them from the engine's files' metadata; its own root comes from an unprivileged user namespace."""
    base = Path(tempfile.mkdtemp(dir="/tmp", prefix="cs-engine-"))
    modes = [m.values[0] for m in mechanisms() if not any(mark.args and mark.args[0] for mark in m.marks)]
    try:
        os.chown(base, 65534, 65534)
        out = subprocess.run([_SYSTEM_PYTHON, "-c", _UNPRIVILEGED_ENGINE, str(REPO), str(base), *modes],
                             capture_output=True, text=True, timeout=300, check=False, user=65534, group=65534,
                             extra_groups=[], env={"PATH": "/usr/bin:/bin"})
        lines = out.stdout.splitlines()
        assert len(lines) == 5 * len(modes) + 1, out.stdout + out.stderr
        for i, mode in enumerate(modes):
            assert lines[5 * i: 5 * i + 5] == [f"{mode} None True", "False 65534", "PermissionError",
                                               "PermissionError", "PermissionError"], out.stdout + out.stderr
        assert lines[-1] == "0o600 True [] ['outside']"  # nothing changed, and no sandbox folder left behind
    finally:
        shutil.rmtree(base)
