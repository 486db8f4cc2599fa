"""The files an export writes into a folder the user owns, written so that nothing the user had there is lost.

Two rules, whatever happens (a failure, a cancel, a full disk):

- **Nothing is overwritten without consent.** Before any work, a target that already exists (``<name>-<fmt>.gguf``,
  ``Modelfile``) is refused with a sentence, unless the caller passed ``overwrite`` (the CLI's ``--overwrite``;
  the export stage, whose folder ``models/<stage>`` belongs to the run). And the final names are only claimed at
  the very end, without clobbering (a hard link, which fails if the name was taken meanwhile).
- **Only our own files are removed.** Every file is written under a fresh hidden name of its own
  (``.<final>.<random>.partial``, created exclusively) and renamed at the end, so a cancel or failure removes
  exactly those temporary files, the finals this export claimed, and the folders it created — never a file of
  the same name that was there before.

The output folder is probed before any work too (created if missing, a file written and removed), so an
unwritable ``--out`` (``/proc/…``, a read-only disk, no permission) is one sentence instead of a traceback.
"""
from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from pathlib import Path

from engine.contract.errors import shorten
from engine.core.context import EngineError


def _cannot_write(out_dir: Path, exc: OSError) -> EngineError:
    return EngineError(f"--out {shorten(out_dir, 120)}: cannot create or write files there ({exc.strerror or exc}); "
                       "give a folder you can write to.")


def probe_writable(out_dir: Path) -> None:
    """Create ``out_dir`` if missing and write a file in it, then undo both; EngineError (a sentence) if either
    fails. Nothing is left behind either way."""
    created = []
    try:
        for folder in reversed([out_dir, *out_dir.parents]):
            if not os.path.lexists(folder):
                folder.mkdir()
                created.append(folder)
        fd, probe = tempfile.mkstemp(dir=out_dir, prefix=".export-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise _cannot_write(out_dir, exc) from None
    finally:
        for folder in reversed(created):
            with contextlib.suppress(OSError):
                folder.rmdir()


def refuse_existing(targets: list[Path], overwrite: bool) -> None:
    """EngineError naming the first target that exists, unless ``overwrite`` (a link counts: it is a name too)."""
    if overwrite:
        return
    for target in targets:
        if os.path.lexists(target):
            raise EngineError(f"{shorten(target, 160)} already exists and this export did not write it; move it "
                              "away, give another --out or --name, or pass --overwrite to replace it.")


class StagedFiles:
    """Temporary files in ``out_dir`` that become final names only at :meth:`commit`; :meth:`discard` removes
    what this object made (temporary files, claimed finals, created folders) and nothing else."""

    def __init__(self, out_dir: Path, overwrite: bool = False) -> None:
        self.out_dir, self.overwrite = out_dir, overwrite
        self._created: list[Path] = []
        self._temporary: list[Path] = []
        self._claimed: list[Path] = []
        for folder in reversed([out_dir, *out_dir.parents]):
            if not os.path.lexists(folder):
                try:
                    folder.mkdir()
                except FileExistsError:
                    continue  # made meanwhile by someone else: not ours to remove
                except OSError as exc:
                    raise _cannot_write(out_dir, exc) from None
                self._created.append(folder)

    def temp(self, final_name: str) -> Path:
        """A fresh, empty file of our own to write ``final_name``'s content into."""
        fd, path = tempfile.mkstemp(dir=self.out_dir, prefix=f".{final_name}.", suffix=".partial")
        os.close(fd)
        self._temporary.append(Path(path))
        return Path(path)

    def commit(self, finals: dict[Path, str]) -> dict[Path, Path]:
        """Give each temporary file its final name (temporary → final path); a name that appeared since the
        check is refused (EngineError) unless overwriting. Callers discard() on any exception."""
        done = {}
        for temporary, name in finals.items():
            final = self.out_dir / name
            self._claim(temporary, final)
            self._temporary.remove(temporary)
            self._claimed.append(final)
            done[temporary] = final
        return done

    def _claim(self, temporary: Path, final: Path) -> None:
        if self.overwrite:
            os.replace(temporary, final)
            return
        try:
            os.link(temporary, final)  # fails with EEXIST instead of replacing: the user's file stays
        except FileExistsError:
            raise EngineError(f"{shorten(final, 160)} appeared while the export ran; it was left alone, and "
                              "this export's files were removed — move it away and export again.") from None
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.ENOSYS):
                raise
            if os.path.lexists(final):  # a file system without hard links (FAT, some network shares)
                raise EngineError(f"{shorten(final, 160)} appeared while the export ran; it was left alone.") \
                    from None
            os.rename(temporary, final)
            return
        os.unlink(temporary)

    def discard(self, *, finals_too: bool = True) -> None:
        """Remove our temporary files (and, on failure, the finals claimed and the folders created)."""
        for path in self._temporary + (self._claimed if finals_too else []):
            with contextlib.suppress(OSError):
                path.unlink()
        self._temporary = []
        if finals_too:
            self._claimed = []
            for folder in reversed(self._created):
                with contextlib.suppress(OSError):
                    folder.rmdir()  # only when empty: never a file that is not ours
