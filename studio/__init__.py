"""Compression Studio's desktop app (PySide6 + pyqtgraph).

The studio only presents: every run happens in an engine process (``python -m engine``) that it talks to over
the JSON-lines protocol. It imports nothing heavier than ``engine.contract.spec``, ``engine.contract.protocol``,
``engine.contract.runs``
and ``engine.contract.data.preview`` (all stdlib-only), so the window opens fast and survives any engine crash.
"""
from __future__ import annotations

from studio import qt_compat as _qt_compat

__version__ = "0.1.0"

_qt_compat.apply()  # before any Qt call: PySide6 6.12.0 on Python 3.11 miscounts None/True (see qt_compat)
