"""The code sandbox's side inside the program's process: the bootstrap ``python -I -S -c`` runs before the
program (``engine.rewards.sandbox`` builds its command line and explains the layers). In order: the rlimits, the
kernel confinement (``engine.rewards.sandbox_kernel``, executed from its file since the child has no
site-packages), the audit hook, then the program as ``__main__``.

argv: cpu seconds, address-space bytes, file-size bytes, processes, audit (0/1), mechanism, work folder, program
file, standard library folder, kernel file, readable paths (``os.pathsep``-joined), the empty folder to build
the program's own root in (empty: keep the host's tree), and "uid:gid" to become once there (empty: stay).
"""
from __future__ import annotations

BOOTSTRAP = r'''
import os, sys, resource
def _setup():
    cpu, mem, fsize, nproc, audit = (int(x) for x in sys.argv[1:6])
    mode, work, program, stdlib, kernel, readable, new_root, switch_to = sys.argv[6:14]
    limits = [(resource.RLIMIT_CPU, cpu, cpu + 1), (resource.RLIMIT_AS, mem, mem),
              (resource.RLIMIT_FSIZE, fsize, fsize), (resource.RLIMIT_NOFILE, 64, 64), (resource.RLIMIT_CORE, 0, 0)]
    # NPROC counts every process and thread of the user: with one process allowed the seccomp filter already
    # refuses forks, and a limit of 1 would refuse threads too (the big-stack thread many solutions recurse in).
    limits += [(resource.RLIMIT_NPROC, nproc, nproc)] if nproc > 1 else []
    for what, soft, hard in limits:
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
                               landlock=mode == "landlock", new_root=new_root or None,
                               switch_to=tuple(map(int, switch_to.split(":"))) if switch_to else None)
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
