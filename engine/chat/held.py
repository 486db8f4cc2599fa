"""What the chat service (engine/chat/service.py) holds: a loaded model with its per-model lock and prompt limits,
and a running generation's request with its stop event and optional draft model; split from service.py, which
dispatches the commands."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from engine.chat.prompt_limits import CHARS_PER_TOKEN, PromptLimits


@dataclass
class LoadedModel:
    name: str
    source: str
    model: Any
    tokenizer: Any
    device: str
    # how long a prompt may be (engine/chat/prompt_limits.py)
    limits: PromptLimits = field(default_factory=lambda: PromptLimits(None, CHARS_PER_TOKEN))
    lock: threading.Lock = field(default_factory=threading.Lock)  # one generation at a time per model


@dataclass
class Request:
    request_id: str
    model: str
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    draft: str | None = None  # another loaded model drafting for this one (speculative decoding)
