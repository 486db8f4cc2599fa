"""What the code-sandbox test modules share: the boundaries this machine has, the engine's own code reward, and a
look for programs left running."""
from __future__ import annotations

import shutil
import tempfile

import psutil
import pytest

from engine.rewards import sandbox
from engine.rewards.functions import make_code_tests
from engine.rewards.sandbox_kernel import landlock_abi


def sandbox_processes() -> list[psutil.Process]:
    """Live processes whose command line names this test's temporary root (see the modules' ``_own_temp_root``)."""
    root = tempfile.gettempdir()
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        cmdline = proc.info.get("cmdline") or []
        if proc.info.get("status") != psutil.STATUS_ZOMBIE and any(root in part for part in cmdline):
            found.append(proc)
    return found


def mechanisms() -> list:
    """Each kernel boundary as a pytest parameter, skipped with the reason (and the install command) where missing."""
    params = [pytest.param("landlock", marks=pytest.mark.skipif(
        landlock_abi() < 1, reason="needs a kernel with Landlock (CONFIG_SECURITY_LANDLOCK, lsm=landlock)"))]
    bwrap_reason = "needs bubblewrap: apt-get install bubblewrap" if not shutil.which("bwrap") else \
        "bubblewrap cannot create namespaces here (user namespaces disabled?)"
    params.append(pytest.param("bwrap", marks=pytest.mark.skipif(
        not (shutil.which("bwrap") and sandbox._bwrap_works()), reason=bwrap_reason)))
    return params


def reward(code: str) -> float:
    """The engine's own code_tests reward for ``code`` on one test whose expected output is "ok"."""
    completion = f"<think>solve it</think>\n```python\n{code}```\n"
    return make_code_tests()([""], [completion], tests=[[{"input": "", "output": "ok"}]])[0]
