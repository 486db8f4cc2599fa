"""Kernel-enforced confinement of one sandboxed program: Landlock, no privileges, a seccomp filter.

The sandbox bootstrap (``engine.rewards.sandbox``) executes this file inside the child, after the rlimits and before the
program; the engine imports it only for ``landlock_abi``. The child runs ``python -I -S`` (no site-packages),
which is why this is a small ctypes binding on the standard library and not a PyPI package, and the child
confines itself (rather than a ``preexec_fn`` in the engine, unsafe in a process with threads, as a trainer is).

Why each layer — the kernel resolves every path and checks every syscall, so descriptor-relative calls
(``dir_fd``), symlinks, renames, ``/proc/<pid>`` and raw syscalls through ctypes meet the same rules:

* **Landlock** (every access right of the running ABI is handled, so anything not allowed is denied): read and
  execute only the interpreter's files and the system libraries, read and write only the work folder.
  ABI ≥ 4: TCP bind/connect handled with no rule that allows any. ABI ≥ 6: abstract unix sockets and signals
  scoped to the sandbox (it cannot kill the engine); on older kernels a program could still signal processes of
  the engine's own user.
* **no_new_privs and every capability dropped**: Landlock confines root's files, not root's other powers (loading
  a kernel module, rebooting, …), and the engine runs as root in CI and containers.
* **seccomp**: no sockets of any kind (UDP and unix sockets are outside Landlock's network rules), no io_uring
  (its operations bypass syscall filters), no leaving the process group (``setsid``/``setpgid``: the engine
  kills the whole group after each program, so no daemon outlives the check), no ptrace, namespaces, bpf or
  keyrings; with one process allowed, no fork/spawn (root is exempt from ``RLIMIT_NPROC``). No metadata changes
  anywhere: the chmod, chown, utime and xattr families (ACLs are xattrs), the inode-flag ioctls and
  ``file_setattr`` answer EPERM, since Landlock has no right for them and a program running as a file's owner
  (root without capabilities still owns root's files) passes every permission check for them; reading xattrs
  answers ENOTSUP. ``stat`` is not filtered: the interpreter needs it for every import.
* **its own root** (``hide_host``, where user namespaces allow): a fresh tmpfs with binds of only what the program
  may read and its folder, so that ``stat`` on any other path finds nothing (Landlock has no right for stat).
"""
from __future__ import annotations

import ctypes
import errno
import os
import stat
import struct

# include/uapi/linux/landlock.h; the syscall numbers are the same on x86_64 and aarch64.
_CREATE_RULESET, _ADD_RULE, _RESTRICT_SELF = 444, 445, 446
_CREATE_RULESET_VERSION = 1
_RULE_PATH_BENEATH = 1
FS_EXECUTE, FS_WRITE_FILE, FS_READ_FILE, FS_READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
FS_REFER, FS_TRUNCATE, FS_IOCTL_DEV = 1 << 13, 1 << 14, 1 << 15  # ABI 2, 3, 5
# the only rights a rule on a file (not a folder) may hold
FS_FILE_RIGHTS = FS_EXECUTE | FS_WRITE_FILE | FS_READ_FILE | FS_TRUNCATE | FS_IOCTL_DEV
FS_READ = FS_EXECUTE | FS_READ_FILE | FS_READ_DIR
NET_BIND_TCP, NET_CONNECT_TCP = 1 << 0, 1 << 1  # ABI 4
SCOPE_ABSTRACT_UNIX_SOCKET, SCOPE_SIGNAL = 1 << 0, 1 << 1  # ABI 6

_PR_SET_NO_NEW_PRIVS, _PR_CAPBSET_DROP, _PR_SET_SECCOMP, _SECCOMP_MODE_FILTER = 38, 24, 22, 2
_CAP_VERSION_3 = 0x20080522
_RET_KILL_PROCESS, _RET_ERRNO, _RET_ALLOW = 0x80000000, 0x00050000, 0x7FFF0000
_CLONE_THREAD = 0x00010000
# Per architecture: the seccomp audit arch and the syscall numbers (None: the syscall does not exist there).
_ARCH = {
    "x86_64": dict(audit=0xC000003E, capset=126, socket=41, io_uring_setup=425, io_uring_enter=426,
                   io_uring_register=427, setsid=112, setpgid=109, ptrace=101, process_vm_readv=310,
                   process_vm_writev=311, unshare=272, setns=308, bpf=321, perf_event_open=298, userfaultfd=323,
                   keyctl=250, add_key=248, request_key=249, clone=56, clone3=435, fork=57, vfork=58, ioctl=16,
                   chmod=90, fchmod=91, fchmodat=268, chown=92, fchown=93, lchown=94, fchownat=260, utime=132,
                   utimes=235, futimesat=261, utimensat=280, setxattr=188, lsetxattr=189, fsetxattr=190,
                   removexattr=197, lremovexattr=198, fremovexattr=199, getxattr=191, lgetxattr=192,
                   fgetxattr=193, listxattr=194, llistxattr=195, flistxattr=196),
    "aarch64": dict(audit=0xC00000B7, capset=91, socket=198, io_uring_setup=425, io_uring_enter=426,
                    io_uring_register=427, setsid=157, setpgid=154, ptrace=117, process_vm_readv=270,
                    process_vm_writev=271, unshare=97, setns=268, bpf=280, perf_event_open=241, userfaultfd=282,
                    keyctl=219, add_key=217, request_key=218, clone=220, clone3=435, fork=None, vfork=None, ioctl=29,
                    chmod=None, fchmod=52, fchmodat=53, chown=None, fchown=55, lchown=None, fchownat=54, utime=None,
                    utimes=None, futimesat=None, utimensat=88, setxattr=5, lsetxattr=6, fsetxattr=7, removexattr=14,
                    lremovexattr=15, fremovexattr=16, getxattr=8, lgetxattr=9, fgetxattr=10, listxattr=11,
                    llistxattr=12, flistxattr=13),
}
# Numbers from 424 on are the same on every architecture (the unified table).
for _table in _ARCH.values():
    _table.update(fchmodat2=452, setxattrat=463, getxattrat=464, listxattrat=465, removexattrat=466,
                  file_getattr=468, file_setattr=469)
_DENIED = {"socket": errno.EACCES, "io_uring_setup": errno.ENOSYS, "io_uring_enter": errno.ENOSYS,
           "io_uring_register": errno.ENOSYS, "setsid": errno.EPERM, "setpgid": errno.EPERM, "ptrace": errno.EPERM,
           "process_vm_readv": errno.EPERM, "process_vm_writev": errno.EPERM, "unshare": errno.EPERM,
           "setns": errno.EPERM, "bpf": errno.EPERM, "perf_event_open": errno.EPERM, "userfaultfd": errno.EPERM,
           "keyctl": errno.EPERM, "add_key": errno.EPERM, "request_key": errno.EPERM}
# Metadata: Landlock has no right for modes, owners, times or extended attributes (ACLs are xattrs), and a program
# running as the files' owner (root without capabilities is still their owner) passes every DAC check for them. A
# program that only writes files in its own folder needs none of these; shutil.copy (copymode) is the one casualty.
_DENIED.update(dict.fromkeys(("chmod", "fchmod", "fchmodat", "fchmodat2", "chown", "fchown", "lchown", "fchownat",
                              "utime", "utimes", "futimesat", "utimensat", "setxattr", "lsetxattr", "fsetxattr",
                              "removexattr", "lremovexattr", "fremovexattr", "setxattrat", "removexattrat",
                              "file_setattr"), errno.EPERM))
# Reading xattrs would leak ACLs and labels of files the program may not read; "not supported" is what a
# filesystem without xattrs answers, which programs already handle.
_DENIED.update(dict.fromkeys(("getxattr", "lgetxattr", "fgetxattr", "listxattr", "llistxattr", "flistxattr",
                              "getxattrat", "listxattrat", "file_getattr"), errno.ENOTSUP))
# ioctl commands that change inode flags (chattr: no-dump, no-atime, …) or the generation: owner-only checks too.
# The kernel compares the command as a 32-bit value, as the filter does.
# FS_IOC_SETFLAGS, FS_IOC32_SETFLAGS, FS_IOC_FSSETXATTR, FS_IOC_SETVERSION, FS_IOC32_SETVERSION:
_DENIED_IOCTLS = (0x40086602, 0x40046602, 0x401C5820, 0x40087602, 0x40047602)
# clone3 passes its flags in memory a filter cannot read: ENOSYS makes glibc fall back to clone, whose flags it can.
_NO_FORK = {"fork": errno.EAGAIN, "vfork": errno.EAGAIN, "clone3": errno.ENOSYS}


_LIBC: list[ctypes.CDLL] = []


def _libc() -> ctypes.CDLL:
    if not _LIBC:
        _LIBC.append(ctypes.CDLL(None, use_errno=True))
        _LIBC[0].syscall.restype = ctypes.c_long
    return _LIBC[0]


def _check(result: int, what: str) -> int:
    if result < 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{what}: {os.strerror(code)}")
    return result


def landlock_abi() -> int:
    """The kernel's Landlock ABI version, 0 where Landlock is missing or disabled (or not Linux)."""
    try:
        version = _libc().syscall(ctypes.c_long(_CREATE_RULESET), None, ctypes.c_size_t(0),
                                  ctypes.c_uint32(_CREATE_RULESET_VERSION))
    except (OSError, AttributeError):
        return 0
    return max(int(version), 0)


def _handled_fs(abi: int) -> int:
    rights = (1 << 13) - 1  # ABI 1: EXECUTE … MAKE_SYM
    rights |= FS_REFER if abi >= 2 else 0
    rights |= FS_TRUNCATE if abi >= 3 else 0
    rights |= FS_IOCTL_DEV if abi >= 5 else 0
    return rights


def restrict_landlock(read_paths: list[str], rw_paths: list[str], abi: int | None = None) -> int:
    """Handle every access right of the running ABI and allow only ``read_paths`` (read/execute) and ``rw_paths``
    (everything); paths that do not exist are skipped. Returns the ABI used."""
    libc, abi = _libc(), abi or landlock_abi()
    if abi < 1:
        raise OSError(errno.EOPNOTSUPP, "Landlock is not available")
    handled = _handled_fs(abi)
    attr = struct.pack("=QQQ", handled, NET_BIND_TCP | NET_CONNECT_TCP if abi >= 4 else 0,
                       SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL if abi >= 6 else 0)
    attr = attr[:24 if abi >= 6 else 16 if abi >= 4 else 8]  # older kernels reject fields they do not know
    ruleset = _check(libc.syscall(ctypes.c_long(_CREATE_RULESET), ctypes.c_char_p(attr), ctypes.c_size_t(len(attr)),
                                  ctypes.c_uint32(0)), "landlock_create_ruleset")
    try:
        for path, rights in [(p, FS_READ) for p in read_paths] + [(p, handled) for p in rw_paths]:
            try:
                fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                allowed = rights & handled if stat.S_ISDIR(os.fstat(fd).st_mode) else rights & handled & FS_FILE_RIGHTS
                rule = struct.pack("=Qi", allowed, fd)  # struct landlock_path_beneath_attr is packed
                _check(libc.syscall(ctypes.c_long(_ADD_RULE), ctypes.c_long(ruleset), ctypes.c_long(_RULE_PATH_BENEATH),
                                    ctypes.c_char_p(rule), ctypes.c_uint32(0)), f"landlock_add_rule {path}")
            finally:
                os.close(fd)
        _check(libc.syscall(ctypes.c_long(_RESTRICT_SELF), ctypes.c_long(ruleset), ctypes.c_uint32(0)),
               "landlock_restrict_self")
    finally:
        os.close(ruleset)
    return abi


def drop_privileges(arch: dict) -> None:
    """no_new_privs (nothing exec'd regains privileges), then an empty bounding set and no capabilities."""
    libc = _libc()
    _check(libc.prctl(_PR_SET_NO_NEW_PRIVS, ctypes.c_ulong(1), ctypes.c_ulong(0), ctypes.c_ulong(0),
                      ctypes.c_ulong(0)), "PR_SET_NO_NEW_PRIVS")
    for cap in range(64):  # fails (harmlessly) without CAP_SETPCAP or past the last capability
        libc.prctl(_PR_CAPBSET_DROP, ctypes.c_ulong(cap), ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0))
    header = struct.pack("=Ii", _CAP_VERSION_3, 0)
    data = ctypes.create_string_buffer(24)  # two empty __user_cap_data_struct: effective, permitted, inheritable
    _check(libc.syscall(ctypes.c_long(arch["capset"]), ctypes.c_char_p(header), data), "capset")


def _filter(arch: dict, single_process: bool) -> list[tuple[int, int, int, int]]:
    ld, jeq, jge, jset, ret = 0x20, 0x15, 0x35, 0x45, 0x06  # BPF_LD|W|ABS, BPF_JMP|JEQ/JGE/JSET|K, BPF_RET|K
    prog = [(ld, 0, 0, 4), (jeq, 1, 0, arch["audit"]), (ret, 0, 0, _RET_KILL_PROCESS), (ld, 0, 0, 0)]
    if arch["audit"] == 0xC000003E:  # x32 syscalls (nr | 0x40000000) reach the same kernel code: refuse them
        prog += [(jge, 0, 1, 0x40000000), (ret, 0, 0, _RET_ERRNO | errno.EPERM)]
    denied = dict(_DENIED, **(_NO_FORK if single_process else {}))
    for name, code in denied.items():
        if arch.get(name) is not None:
            prog += [(jeq, 0, 1, arch[name]), (ret, 0, 0, _RET_ERRNO | code)]
    # ioctl: compare its command (args[1], low word) with each denied one; other ioctls pass on to ALLOW.
    count = len(_DENIED_IOCTLS)
    prog += [(jeq, 0, count + 2, arch["ioctl"]), (ld, 0, 0, 24)]
    prog += [(jeq, count - 1 - i, 0, cmd) if i < count - 1 else (jeq, 0, 1, cmd)
             for i, cmd in enumerate(_DENIED_IOCTLS)]
    prog += [(ret, 0, 0, _RET_ERRNO | errno.EPERM), (ld, 0, 0, 0)]
    if single_process:  # clone without CLONE_THREAD is a fork; threads stay allowed
        prog += [(jeq, 0, 3, arch["clone"]), (ld, 0, 0, 16), (jset, 1, 0, _CLONE_THREAD),
                 (ret, 0, 0, _RET_ERRNO | errno.EAGAIN)]
    return prog + [(ret, 0, 0, _RET_ALLOW)]


def install_seccomp(arch: dict, single_process: bool) -> None:
    prog = _filter(arch, single_process)
    filters = ctypes.create_string_buffer(b"".join(struct.pack("=HBBI", *insn) for insn in prog))

    class _Fprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    fprog = _Fprog(len(prog), ctypes.addressof(filters))
    _check(_libc().prctl(_PR_SET_SECCOMP, ctypes.c_ulong(_SECCOMP_MODE_FILTER), ctypes.byref(fprog),
                         ctypes.c_ulong(0), ctypes.c_ulong(0)), "seccomp")


_CLONE_NEWUSER, _CLONE_NEWNS = 0x10000000, 0x00020000
_MS_NOSUID, _MS_NODEV, _MS_BIND, _MS_REC, _MS_PRIVATE, _MNT_DETACH = 2, 4, 4096, 16384, 1 << 18, 2
_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}


def _encoded(text: str | None) -> bytes | None:
    return None if text is None else text.encode()


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    _check(_libc().mount(_encoded(source), _encoded(target), _encoded(fstype), ctypes.c_ulong(flags),
                         _encoded(data)), f"mount {target}")


def hide_host(read_paths: list[str], rw_paths: list[str], new_root: str,
              switch_to: tuple[int, int] | None = None) -> None:
    """A user and mount namespace of our own whose root is a fresh tmpfs (mounted on the empty folder
    ``new_root``) holding only binds of ``read_paths`` and ``rw_paths`` at their usual places (links are copied as
    links): the rest of the host's tree no longer exists for the program, so ``stat`` cannot probe it. Access
    rights stay with Landlock. Root (``switch_to`` given) needs only a mount namespace, and becomes ``switch_to``
    (uid, gid) once the new root is in place: the tmpfs folders leading to the interpreter are open to all, so
    nobody can run an interpreter installed under /root. Raises OSError (no user namespaces, …)."""
    libc, uid, gid = _libc(), os.geteuid(), os.getegid()
    if switch_to is None:
        _check(libc.unshare(ctypes.c_int(_CLONE_NEWUSER | _CLONE_NEWNS)), "unshare")
        for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"), ("gid_map", f"{gid} {gid} 1")):
            with open(f"/proc/self/{name}", "w") as f:
                f.write(text)
    else:
        _check(libc.unshare(ctypes.c_int(_CLONE_NEWNS)), "unshare")
    _mount(None, "/", None, _MS_REC | _MS_PRIVATE)  # nothing below propagates back to the host
    _mount("tmpfs", new_root, "tmpfs", _MS_NOSUID | _MS_NODEV, "mode=0755,size=1m")
    for path in list(dict.fromkeys(read_paths + rw_paths)):
        target = new_root + path
        if os.path.islink(path):
            os.makedirs(os.path.dirname(target), exist_ok=True)
            if not os.path.lexists(target):
                os.symlink(os.readlink(path), target)
            continue
        if not os.path.exists(path) or os.path.lexists(target) and not os.path.isdir(target):
            continue
        if os.path.isdir(path):
            os.makedirs(target, exist_ok=True)
        else:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            open(target, "a").close()  # a file to bind the file onto
        _mount(path, target, None, _MS_BIND | _MS_REC)
    cwd = os.getcwd()
    os.mkdir(new_root + "/.old")
    _check(libc.syscall(ctypes.c_long(_PIVOT_ROOT[os.uname().machine]), new_root.encode(),
                        (new_root + "/.old").encode()), "pivot_root")
    os.chdir("/")
    _check(libc.umount2(b"/.old", ctypes.c_int(_MNT_DETACH)), "umount the host's root")
    os.rmdir("/.old")
    os.chdir(cwd)
    if switch_to is not None:
        os.setgroups([])
        os.setresgid(switch_to[1], switch_to[1], switch_to[1])
        os.setresuid(switch_to[0], switch_to[0], switch_to[0])  # clears every capability too


def confine(read_paths: list[str], rw_paths: list[str], *, single_process: bool, landlock: bool,
            new_root: str | None = None, switch_to: tuple[int, int] | None = None) -> str:
    """All layers, in the only order that works: the host's tree hidden first where ``new_root`` is given (it needs
    the capabilities a new user namespace grants), then privileges (restrict_self needs no_new_privs), Landlock,
    then seccomp (which forbids nothing Landlock needs, and forbids unshare). Raises OSError; the caller must then
    not run the program. Returns a short description of what was applied."""
    arch = _ARCH.get(os.uname().machine)
    if arch is None:
        raise OSError(errno.ENOTSUP, f"no seccomp table for {os.uname().machine}")
    if new_root:
        hide_host(read_paths, rw_paths, new_root, switch_to)
    drop_privileges(arch)
    abi = restrict_landlock(read_paths, rw_paths) if landlock else 0
    install_seccomp(arch, single_process)
    return f"landlock ABI {abi}" if abi else "seccomp"
