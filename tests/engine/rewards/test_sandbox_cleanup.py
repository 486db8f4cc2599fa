"""A sandboxed program's folder is always removed and the reward never raises (issue 19, item 2): deep trees,
folders without rights, read-only files, links out, for a root engine and an unprivileged one; and a program
cannot fill the disk (its folder is capped, each file by RLIMIT_FSIZE, all of them by the engine's watch)."""
from __future__ import annotations

import fcntl
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
from engine.rewards import sandbox_files
from engine.rewards.sandbox_files import remove_tree, usage
from tests.engine.sandbox_helpers import mechanisms, reward, sandbox_processes

REPO = Path(sandbox.__file__).parents[2]
DEEP = 1500  # past Python's recursion limit, where shutil.rmtree raised RecursionError


@pytest.fixture(autouse=True)
def temp_root(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path_factory.mktemp("sandboxes")
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    return root


@pytest.fixture(params=mechanisms())
def boundary(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setattr(sandbox, "mechanism", lambda: request.param)
    return request.param


HOSTILE_TREE = f"""\
import os
top = os.getcwd()
try:
    os.chmod('.', 0)  # denied by the filter; the clean-up does not count on that
except OSError:
    pass
for _ in range({DEEP}):
    os.mkdir('d')
    os.chdir('d')
os.close(os.open('read-only', os.O_CREAT | os.O_WRONLY, 0o400))
os.mkdir('no-rights', 0)
os.mkfifo('fifo')
os.chdir(top)
os.mkdir('read-only-folder', 0o500)
os.close(os.open(b'\\xff-not-utf8', os.O_CREAT | os.O_WRONLY, 0o000))
print('ok')
"""


def test_a_hostile_tree_is_removed(boundary: str, temp_root: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("keep")
    code = HOSTILE_TREE.replace("print('ok')", f"os.symlink({str(outside)!r}, 'link-out')\nprint('ok')")
    result = run_program(code, _audit=False, _mechanism=boundary, timeout_s=60.0, cpu_s=60)
    assert result.ok and result.stdout == "ok\n", result.stderr  # the whole tree was built
    assert list(temp_root.iterdir()) == [] and sandbox_processes() == []
    assert [p.name for p in outside.iterdir()] == ["keep.txt"] and outside.stat().st_mode & 0o777 == 0o755


def test_the_reward_never_raises_and_leaves_nothing(temp_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # As shipped (audit hook on, 2 s): the hook's path checks make each level dearer, so the program may run out of
    # time part-way; whatever depth it reached, the reward is a score, never an exception.
    assert reward(HOSTILE_TREE) in (0.0, 1.0)
    assert list(temp_root.iterdir()) == []
    def unhurried(code: str, stdin: str = "", **limits: object) -> sandbox.SandboxResult:
        # the reward passes its own 2 s of time and CPU; 1,500 mkdirs can take more CPU than that on a busy machine
        return run_program(code, stdin, **{**limits, "_audit": False, "timeout_s": 60.0, "cpu_s": 60})

    monkeypatch.setattr(sandbox, "run_program", unhurried)
    assert reward(HOSTILE_TREE) == 1.0
    assert list(temp_root.iterdir()) == []


_REMOVER = r'''
import os, sys
sys.path.insert(0, sys.argv[1])
from engine.rewards.sandbox_files import remove_tree
base = sys.argv[2]
outside = os.path.join(base, "outside")
os.mkdir(outside, 0o755)
open(os.path.join(outside, "keep.txt"), "w").write("keep")
tree = os.path.join(base, "tree")
os.mkdir(tree)
os.chdir(tree)
os.symlink(outside, "link-out")
os.mkdir("read-only-folder")
open("read-only-folder/f", "w").write("x")
os.chmod("read-only-folder/f", 0o400)
os.chmod("read-only-folder", 0o500)
depth = int(sys.argv[3])
for level in range(depth):
    os.mkdir("d")
    os.chdir("d")
    open("f", "w").write("x")
for level in range(depth - 1, 0, -500):  # locked levels in the middle of the tree, deepest first
    os.chdir(tree)
    os.chdir("/".join(["d"] * level))
    os.chmod("d", 0)
os.chdir(base)
os.chmod(tree, 0)  # the program's own os.chmod('.', 0)
print(remove_tree(tree), os.path.lexists(tree), sorted(os.listdir(outside)), oct(os.stat(outside).st_mode & 0o777))
'''


def _remove_as(base: Path, python: str, ids: tuple[int, int] | None) -> list[str]:
    users = {"user": ids[0], "group": ids[1], "extra_groups": []} if ids else {}
    out = subprocess.run([python, "-c", _REMOVER, str(REPO), str(base), str(DEEP)], capture_output=True, text=True,
                         timeout=300, check=False, **users)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


def test_the_remover_undoes_chmod_zero_deep_trees_and_read_only_folders(tmp_path: Path) -> None:
    """As the engine's own user: for root its capabilities cover modes; for anyone else the remover gives the
    folders their owner's rights back first (chmod 0 left the folder behind before)."""
    assert _remove_as(tmp_path, sys.executable, None) == ["True", "False", "['keep.txt']", "0o755"]


_SYSTEM_PYTHON = shutil.which("python3", path="/usr/bin:/bin")


@pytest.mark.skipif(os.geteuid() != 0 or not _SYSTEM_PYTHON,
                    reason="a root test run switches to nobody to test an unprivileged engine (with the system "
                           "python3); as non-root the test above already is that engine")
def test_an_unprivileged_engine_removes_its_locked_folders_too(tmp_path: Path) -> None:
    base = Path(tempfile.mkdtemp(dir="/tmp", prefix="cs-remover-"))  # reachable by nobody, unlike tmp_path
    try:
        os.chown(base, 65534, 65534)
        assert _remove_as(base, _SYSTEM_PYTHON, (65534, 65534)) == ["True", "False", "['keep.txt']", "0o755"]
    finally:
        subprocess.run(["rm", "-rf", str(base)], check=False)  # root, whatever the test left


def test_what_cannot_be_removed_is_a_warning_not_an_exception(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """An immutable file (only root with CAP_LINUX_IMMUTABLE can make one, never a program) stays, with a warning."""
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    stuck = tree / "sub" / "immutable"
    stuck.write_text("x")
    fd = os.open(stuck, os.O_RDONLY)
    try:
        fcntl.ioctl(fd, 0x40086602, struct.pack("l", 0x10))  # FS_IOC_SETFLAGS FS_IMMUTABLE_FL
    except OSError as exc:
        pytest.skip(f"cannot make an immutable file here ({exc}): needs root and a filesystem with inode flags")
    try:
        with caplog.at_level(logging.WARNING, logger="engine.rewards.sandbox_files"):
            assert remove_tree(str(tree)) is False
        assert any("could not remove the sandbox folder" in r.getMessage() and str(tree) in r.getMessage()
                   for r in caplog.records)
    finally:
        fcntl.ioctl(fd, 0x40086602, struct.pack("l", 0))
        os.close(fd)
    assert remove_tree(str(tree)) is True and not tree.exists()
    assert remove_tree(str(tree)) is True  # already gone: nothing to do


def test_a_walk_never_wanders_above_its_folder_when_the_program_moves_folders(tmp_path: Path) -> None:
    """The usage walk runs while the program does: a folder moved up under it must not lead ``..`` elsewhere."""
    folder = tmp_path / "w"
    (folder / "a" / "b" / "c").mkdir(parents=True)
    seen: list[list[str]] = []

    def visit(fd: int) -> list[str]:
        names = sorted(os.listdir(fd))
        seen.append(names)
        if names == ["c"]:  # the walk is in a/b: move it to the top, as a program could meanwhile
            (folder / "a" / "b").rename(folder / "b")
        return [n for n in names if os.path.isdir(os.path.join(f"/proc/self/fd/{fd}", n))]

    with pytest.raises(OSError, match="changed during the walk"):
        sandbox_files._walk(str(folder), visit)
    assert seen == [["a"], ["b"], ["c"], []]  # went down to c, and stopped on the way up


def test_usage_counts_every_level(tmp_path: Path) -> None:
    folder = tmp_path / "w"
    deep = folder.joinpath(*["d"] * 300)
    deep.mkdir(parents=True)
    (deep / "big").write_bytes(b"x" * 2**20)
    (folder / "small").write_bytes(b"x" * 10)
    size, entries = usage(str(folder), 10_000)
    assert entries == 302 and 2**20 <= size < 2**20 + 310 * 8192
    assert usage(str(folder), 50)[1] == 51  # stops counting past the cap


_HIDDEN = r'''
import os, sys
sys.path.insert(0, sys.argv[1])
from engine.rewards.sandbox_files import usage
hidden = os.path.join(sys.argv[2], "w", "hidden")
os.makedirs(hidden)
open(os.path.join(hidden, "f"), "wb").write(b"x" * 4096)
os.chmod(hidden, 0o300)
print(usage(os.path.dirname(hidden), 100)[1])
os.chmod(hidden, 0o700)
'''


@pytest.mark.skipif(os.geteuid() == 0 and not _SYSTEM_PYTHON, reason="a root test run needs the system python3 to "
                    "test as nobody (root reads any folder)")
def test_a_folder_hidden_from_the_engine_counts_as_over_the_caps(tmp_path: Path) -> None:
    """Write and search rights without read (0o300): a program of the engine's own user could fill it unseen."""
    if os.geteuid() != 0:
        out = subprocess.run([sys.executable, "-c", _HIDDEN, str(REPO), str(tmp_path)], capture_output=True,
                             text=True, timeout=60, check=False)
        assert out.stdout.split() == ["101"], out.stderr
        return
    base = Path(tempfile.mkdtemp(dir="/tmp", prefix="cs-usage-"))
    try:
        os.chown(base, 65534, 65534)
        out = subprocess.run([_SYSTEM_PYTHON, "-c", _HIDDEN, str(REPO), str(base)], capture_output=True, text=True,
                             timeout=60, check=False, user=65534, group=65534, extra_groups=[])
        assert out.stdout.split() == ["101"], out.stderr
    finally:
        shutil.rmtree(base)


@pytest.mark.parametrize("program", [
    "i = 0\nwhile True:\n    open(f'f{i}', 'wb').write(b'x' * 2**20)\n    i += 1\n",  # big files, each under FSIZE
    "i = 0\nwhile True:\n    open(f'f{i}', 'wb').close()\n    i += 1\n",  # empty files: inodes, not bytes
])
def test_a_program_cannot_fill_the_disk(program: str, boundary: str, temp_root: Path) -> None:
    result = run_program(program, _audit=False, _mechanism=boundary, timeout_s=60.0, cpu_s=60, disk_mb=8)
    assert result.killed_reason == "output" and not result.timed_out, result
    assert result.duration_s < 30 and list(temp_root.iterdir()) == []


def test_three_hostile_programs_leave_nothing_behind(temp_root: Path) -> None:
    """The issue's case: three programs writing what they can and taking their folder's rights away."""
    program = ("import os\nos.mkdir('locked', 0o500)\ntry:\n    os.chmod('.', 0)\nexcept OSError:\n    pass\n"
               "i = 0\nwhile True:\n    open(f'f{i}', 'wb').write(b'x' * 2**20)\n    i += 1\n")
    for _ in range(3):
        result = run_program(program, _audit=False, timeout_s=60.0, cpu_s=60)
        assert result.killed_reason == "output"
    assert list(temp_root.iterdir()) == []
