"""Integration tests drive the real ``compression-engine`` CLI in subprocesses, with a private data directory
(runs and the demo kit) per test session."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def studio_home(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("studio-home")
    os.environ["COMPRESSION_STUDIO_HOME"] = str(home)  # in-process helpers (RunStore, kit) agree with the CLI
    return home


def engine(home: Path, *args: str, stdin: str | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "COMPRESSION_STUDIO_HOME": str(home), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run([sys.executable, "-m", "engine", *args], input=stdin if stdin is not None else "",
                          capture_output=True, text=True, env=env, timeout=timeout)


def events_of(stdout: str) -> list[dict]:
    """Every stdout line must be one JSON event (the protocol's promise)."""
    return [json.loads(line) for line in stdout.splitlines()]
