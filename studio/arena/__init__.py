"""The chat arena: teacher, student and 4-bit student answer the same conversation side by side.

Pure-Python logic (no Qt) lives in :mod:`session`, :mod:`catalog`, :mod:`presets`, :mod:`votes` and
:mod:`export`; :mod:`chat_client` wraps the engine's chat service in a ``QProcess`` (which also scores ROUGE-L
with the evaluation's own function);
:mod:`panes` and :mod:`arena_widget` only present the session. Mount it with::

    from studio.arena.arena_widget import ArenaWidget
    tabs.addTab(ArenaWidget(store=RunStore(), engine_python=sys.executable), "Chat arena")

Importing this package pulls in neither Qt nor torch.
"""
from __future__ import annotations
