"""llama.cpp's own quantizer (k-quant mixes such as Q4_K_M, which gguf-py cannot write), reached through
llama-cpp-python, an optional extra that compiles llama.cpp when installed."""
from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path
from typing import Any

from engine.core.context import EngineError

log = logging.getLogger(__name__)
LLAMA_CPP_INSTALL = "pip install 'compression-studio[gguf]' (llama-cpp-python, which compiles llama.cpp)"


def llama_cpp_available() -> bool:
    return importlib.util.find_spec("llama_cpp") is not None


_LLAMA_LOG_CALLBACK: Any = None  # kept referenced: llama.cpp calls it from C


def _route_llama_cpp_logs() -> None:
    """llama.cpp's log lines go to this module's logger (debug), decoded leniently: llama-cpp-python's own
    callback fails on the UTF-8 fragments of byte-level tokens that llama.cpp logs."""
    global _LLAMA_LOG_CALLBACK
    import ctypes

    import llama_cpp

    if _LLAMA_LOG_CALLBACK is None:
        @llama_cpp.llama_log_callback
        def callback(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
            log.debug("llama.cpp: %s", text.decode("utf-8", errors="replace").rstrip())

        _LLAMA_LOG_CALLBACK = callback
    llama_cpp.llama_log_set(_LLAMA_LOG_CALLBACK, ctypes.c_void_p(0))


def quantize_with_llama_cpp(source: Path, target: Path, fmt: str) -> None:
    """llama.cpp's own quantizer (k-quant mixes, fallbacks for rows that do not split into 256-blocks)."""
    import ctypes

    import llama_cpp

    _route_llama_cpp_logs()

    ftype = {"q4_k_m": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M}[fmt]
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = os.cpu_count() or 1
    code = llama_cpp.llama_model_quantize(str(source).encode(), str(target).encode(), ctypes.byref(params))
    if code != 0 or not target.is_file():
        raise EngineError(f"llama.cpp's quantizer failed on {source.name} (code {code}); run with -v to see "
                          "its log.")
