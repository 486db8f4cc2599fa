"""Studio settings (data directory, default device, engine Python), stored as JSON next to the user's config.

Plain Python, no Qt: the settings dialog presents a :class:`StudioSettings` and :func:`save_settings` writes it.
With ``$COMPRESSION_STUDIO_HOME`` set (tests, portable installs) the file lives in that folder; otherwise in the
platformdirs config directory, so that the data directory itself can be a setting.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from engine.contract.runs import APP_NAME, HOME_ENV
from engine.contract.safe_json import load_json_file

log = logging.getLogger(__name__)
SETTINGS_FILE = "studio-settings.json"


@dataclass
class StudioSettings:
    data_dir: str = ""  # empty: engine.contract.runs.data_dir() decides (platformdirs or $COMPRESSION_STUDIO_HOME)
    device: str = "auto"
    engine_python: str = field(default_factory=lambda: default_engine_python())
    first_run_done: bool = False
    smoothing: float = 0.6


def default_engine_python() -> str:
    """The studio's own Python for a pip/pipx/uv install; in the frozen bundle (whose executable is the app, not a
    Python) the environment the engine-environment manager made or the user picked, or "" if there is none yet."""
    if getattr(sys, "frozen", False):
        from studio.model.engine_env import chosen_python

        chosen = chosen_python()
        return str(chosen) if chosen and chosen.exists() else ""
    return sys.executable


def settings_path() -> Path:
    """Where the settings file lives."""
    override = os.environ.get(HOME_ENV)
    if override:
        return Path(override).expanduser() / SETTINGS_FILE
    import platformdirs

    return Path(platformdirs.user_config_dir(APP_NAME, appauthor=False)) / SETTINGS_FILE


def load_settings(path: Path | None = None) -> StudioSettings:
    """Settings from disk; unknown keys are ignored and a broken file falls back to the defaults."""
    path = path or settings_path()
    try:
        values = load_json_file(path)
    except FileNotFoundError:
        return StudioSettings()
    except (OSError, ValueError) as exc:
        log.warning("ignoring unreadable settings %s: %s", path, exc)
        return StudioSettings()
    names = {f.name for f in dataclasses.fields(StudioSettings)}
    settings = StudioSettings(**{k: v for k, v in values.items() if k in names})
    if not settings.engine_python or not Path(settings.engine_python).exists():
        settings.engine_python = default_engine_python()  # a moved or deleted environment must not block the app
    return settings


def save_settings(settings: StudioSettings, path: Path | None = None) -> Path:
    path = path or settings_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(dataclasses.asdict(settings), indent=2), encoding="utf-8")
    tmp.replace(path)
    return path


def apply_data_dir(settings: StudioSettings) -> None:
    """Point the run store (here and in engine processes, which inherit the environment) at the chosen folder,
    unless the environment already chose one."""
    if settings.data_dir and not os.environ.get(HOME_ENV):
        os.environ[HOME_ENV] = str(Path(settings.data_dir).expanduser())
