"""Work-arounds for reference-counting bugs of PySide6 6.12.0 on Python 3.11 (found by this project's tests).

On Python < 3.12 (where ``None``, ``True`` and ``False`` are not yet immortal) PySide6 6.12.0
  * returns ``None`` from every void method (``label.setText``, ``app.processEvents``…) without a reference,
  * returns ``True`` from ``SignalInstance.emit()`` without a reference,
  * takes a reference from every ``None`` inside a ``dict`` signal argument,
so after a few thousand calls CPython aborts ("none_dealloc" / "bool_dealloc: deallocating None/True"). PySide6
6.11.3 does not have the bug (pin ``PySide6-Essentials!=6.12.0``); when the buggy pair is installed anyway,
:func:`apply` gives these three singletons the huge reference count that Python 3.12 gives them (immortality),
which is exactly the behaviour the binding assumes. Signals that carry dicts are declared ``Signal(object)``.
"""
from __future__ import annotations

import ctypes
import importlib.metadata
import logging
import sys

log = logging.getLogger(__name__)
BUGGY_RELEASES = ("6.12.0",)
_IMMORTAL_BUMP = 1 << 40  # CPython 3.12 marks immortals with a refcount this large; nothing can reach zero


def binding_is_buggy() -> bool:
    if sys.version_info >= (3, 12) or sys.implementation.name != "cpython":
        return False
    for dist in ("PySide6-Essentials", "PySide6"):
        try:
            return importlib.metadata.version(dist) in BUGGY_RELEASES
        except importlib.metadata.PackageNotFoundError:
            continue
    return False


_applied = False


def apply() -> bool:
    """Make None/True/False immortal when the installed binding needs it; returns whether it did."""
    global _applied
    if _applied or not binding_is_buggy():
        return _applied
    for singleton in (None, True, False):
        ctypes.c_ssize_t.from_address(id(singleton)).value += _IMMORTAL_BUMP  # ob_refcnt is the first field
    _applied = True
    log.debug("PySide6 %s on Python %s: None/True/False made immortal", BUGGY_RELEASES, sys.version.split()[0])
    return True

