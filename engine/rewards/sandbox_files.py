"""The sandboxed program's work folder, from the engine's side: how much it holds while the program runs (``watch``
stops a program past its caps), and its removal afterwards, whatever the program did to it.

Both walk the tree iteratively and descriptor-relative: one open folder at a time, down by name and back up by
``..``, with a stack of names instead of a call stack. So a 1,500-level tree raises no ``RecursionError`` (as
``shutil.rmtree`` did), needs no more open files than a flat one, and never builds a path longer than ``PATH_MAX``.
Entries are inspected without following symbolic links, so a link the program planted never leads the engine out.

Removal first gives every folder back its owner's rwx (a program may have made a folder unreadable or read-only;
for a non-root engine the folder is its own, so it may). It runs once the program's process group is dead, so
nothing changes the tree under it.
"""
from __future__ import annotations

import errno
import logging
import os
import select
import stat
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

DISK_POLL_S = 0.01  # at most how often the engine measures a running program's folder
MAX_ENTRIES = 10_000  # files and folders a program may make (empty files cost inodes, not bytes)
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_OWNER_RWX = stat.S_IRWXU


def _enter(parent_fd: int, name: str, fix_modes: bool) -> int:
    """Open the subfolder ``name`` of ``parent_fd`` (known to be a folder, not a link) for listing."""
    try:
        fd = os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
    except PermissionError:
        if not fix_modes:
            raise
        # chmod 0 by the program: give the owner its rights back. The caller saw a folder with lstat and nothing
        # runs in the sandbox any more, so this chmod (which would follow a link) meets that same folder.
        os.chmod(name, _OWNER_RWX, dir_fd=parent_fd)
        fd = os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
    if fix_modes and os.fstat(fd).st_mode & _OWNER_RWX != _OWNER_RWX:
        try:  # a read-only folder (r-x): its entries cannot be unlinked until it is writable again
            os.fchmod(fd, _OWNER_RWX)
        except OSError:
            pass  # root needs no rights; anyone else gets the unlink error below, with the path
    return fd


def _inode(fd: int) -> tuple[int, int]:
    st = os.fstat(fd)
    return st.st_dev, st.st_ino


def _walk(path: str, visit: Callable[[int], list[str]], leave: Callable[[int, str], None] | None = None,
          fix_modes: bool = False) -> None:
    """Depth-first over the folder ``path``: ``visit(fd)`` handles one folder's entries and returns the names of
    its subfolders to descend into; ``leave(parent_fd, name)`` runs once a folder is done (post-order)."""
    parent, base = os.path.split(os.path.abspath(path))
    top = os.open(parent, _DIR_FLAGS)
    fd: int | None = None
    try:
        fd = _enter(top, base, fix_modes)
        names, pending, inodes = [base], [visit(fd)], [_inode(fd)]
        while names:
            if pending[-1]:
                name = pending[-1].pop()
                child = _enter(fd, name, fix_modes)
                os.close(fd)
                fd = child
                names.append(name)
                inodes.append(_inode(fd))
                pending.append(visit(fd))
                continue
            done = names.pop()
            pending.pop()
            inodes.pop()
            up = os.open("..", _DIR_FLAGS, dir_fd=fd) if names else None
            os.close(fd)
            fd = up
            if up is not None and _inode(up) != inodes[-1]:  # a folder moved while the walk was below it
                raise OSError(errno.ESTALE, f"{path} changed during the walk")
            if leave is not None:
                leave(top if up is None else up, done)
    finally:
        if fd is not None:
            os.close(fd)
        os.close(top)


def _entries(fd: int) -> list[tuple[str, bool]]:
    with os.scandir(fd) as found:  # listed before anything is unlinked: no entry is skipped
        return [(entry.name, entry.is_dir(follow_symlinks=False)) for entry in found]


def remove_tree(path: str) -> bool:
    """Remove the folder ``path`` and everything in it (links are removed, never followed). Never raises: returns
    False and logs a warning with the reason where something could not be removed."""
    def visit(fd: int) -> list[str]:
        folders = []
        for name, is_dir in _entries(fd):
            if is_dir:
                folders.append(name)
            else:
                os.unlink(name, dir_fd=fd)
        return folders

    try:
        _walk(path, visit, lambda parent_fd, name: os.rmdir(name, dir_fd=parent_fd), fix_modes=True)
        return True
    except FileNotFoundError:
        return not os.path.lexists(path)
    except Exception as exc:  # noqa: BLE001 - the reward must never raise for what a program left behind: say so instead
        log.warning("could not remove the sandbox folder %s (%s: %s); delete it by hand", path,
                    type(exc).__name__, exc)
        return False


def usage(path: str, max_entries: int) -> tuple[int, int]:
    """(bytes of disk the folder ``path`` takes, number of entries), counted up to ``max_entries`` entries (then the
    walk stops early: the caller only compares with its caps); a folder the engine may not read counts as past
    ``max_entries``. A program moving a folder while the walk is below it ends the walk (it notices that ``..``
    is no longer where it came from): what was counted stands."""
    total, count = 0, 0

    def visit(fd: int) -> list[str]:
        nonlocal total, count
        folders = []
        for name, is_dir in _entries(fd):
            count += 1
            if count > max_entries:
                return []
            try:
                total += os.stat(name, dir_fd=fd, follow_symlinks=False).st_blocks * 512
            except OSError:
                continue  # removed meanwhile
            if is_dir:
                folders.append(name)
        return folders

    try:
        _walk(path, visit)
    except PermissionError:  # a folder the program made unreadable to the engine hides its contents: over the caps
        return total, max_entries + 1
    except OSError:
        pass  # a folder that vanished mid-walk: what was counted stands
    return total, count


def _exited(proc: subprocess.Popen, pidfd: int | None, seconds: float) -> bool:
    """Whether the program ended within ``seconds``; a pidfd wakes the moment it does (Popen.wait's timed wait
    polls with growing sleeps, which would add up to tens of milliseconds to every program)."""
    if pidfd is None:
        try:
            proc.wait(timeout=seconds)
            return True
        except subprocess.TimeoutExpired:
            return False
    return bool(select.select([pidfd], [], [], seconds)[0])


def watch(proc: subprocess.Popen, work: Path, timeout_s: float, disk_bytes: int) -> str:
    """Wait for the program; "timeout", "output" (its folder grew past ``disk_bytes`` or ``MAX_ENTRIES`` entries:
    RLIMIT_FSIZE caps each file, this caps them all) or "". The folder is measured every ``DISK_POLL_S`` (a
    program writing at disk speed gets past the cap by what it writes meanwhile: 3–13 MB on the loaded 2-core test
    VM), or less often where one walk takes longer, so
    that the watch never takes more than a third of a core."""
    deadline = time.monotonic() + timeout_s
    try:
        pidfd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):  # before Linux 5.3
        pidfd = None
    step = DISK_POLL_S
    try:
        while True:
            left = deadline - time.monotonic()
            if _exited(proc, pidfd, max(min(step, left), 0.001)):
                return ""
            if left <= step:
                return "timeout"
            walk_start = time.monotonic()
            size, entries = usage(str(work), MAX_ENTRIES)
            if size > disk_bytes or entries > MAX_ENTRIES:
                return "output"
            step = max(DISK_POLL_S, 2 * (time.monotonic() - walk_start))
    finally:
        if pidfd is not None:
            os.close(pidfd)
