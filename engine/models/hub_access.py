"""Is the Hugging Face hub reachable? Decided once per process — ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``)
when set, else one TCP connection to the hub's host that must answer within :data:`PROBE_TIMEOUT_S` — and said
once. Offline, huggingface_hub's offline mode is switched on for the rest of the process, so a hub id that is not
in the local cache fails at once with one sentence instead of after ~48 s of retries, and ``preflight``,
``inspect`` and ``run`` give the same answer about it (:func:`check_hub_id`).
"""
from __future__ import annotations

import logging
import os
import socket
import threading
from urllib.parse import urlparse

from engine.contract.errors import EngineError

log = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 2.0
_verdict: dict[str, str | None] = {}  # "reason" → None (online) or why the hub is not reachable


def _flag_set() -> bool:
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.strip().lower() in ("1", "on", "yes", "true")


def _probe(host: str, port: int) -> str | None:
    """None when ``host:port`` accepts a connection within the timeout, else why not. On a thread, because a
    name look-up has no timeout of its own and may hang far longer than the connection would."""
    result: dict[str, str | None] = {}

    def connect() -> None:
        try:
            socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S).close()
            result["error"] = None
        except OSError as exc:
            result["error"] = f"{host} cannot be reached: {exc.strerror or exc}"

    thread = threading.Thread(target=connect, name="hub-probe", daemon=True)
    thread.start()
    thread.join(PROBE_TIMEOUT_S + 0.5)
    return result.get("error", f"{host} did not answer within {PROBE_TIMEOUT_S:g} s")


def _probe_target() -> tuple[str, int]:
    """Where a hub request would connect first: the HTTPS proxy when one is set (a machine that reaches the hub
    only through its proxy is online), else the hub endpoint itself."""
    from huggingface_hub import constants

    proxy = next((os.environ[k] for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")
                  if os.environ.get(k)), "")
    url = urlparse(proxy if "://" in proxy else f"http://{proxy}") if proxy else urlparse(constants.ENDPOINT)
    default_port = 443 if url.scheme == "https" else 80 if not proxy else 3128
    return url.hostname or "huggingface.co", url.port or default_port


def offline_reason() -> str | None:
    """None when the hub is reachable; otherwise why not (decided and logged once per process)."""
    if "reason" not in _verdict:
        if _flag_set():
            reason: str | None = "HF_HUB_OFFLINE is set"
        else:
            host, port = _probe_target()
            reason = _probe(host, port)
        if reason:
            go_offline()
            log.warning("offline (%s): hub models are read from the local Hugging Face cache only", reason)
        _verdict["reason"] = reason
    return _verdict["reason"]


def go_offline() -> None:
    """Offline mode for this process (huggingface_hub reads the flag at every call) and its children."""
    from huggingface_hub import constants

    constants.HF_HUB_OFFLINE = True
    os.environ["HF_HUB_OFFLINE"] = "1"


def in_local_cache(repo_id: str, revision: str = "") -> bool:
    """The hub id's config.json is in the local Hugging Face cache (what an offline load needs first)."""
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(repo_id, "config.json", revision=revision or None)
    except Exception:  # noqa: BLE001 - an id the cache layout cannot even name: not cached
        return False
    return isinstance(found, str)


def check_hub_id(repo_id: str, revision: str = "") -> None:
    """EngineError (one sentence) when ``repo_id`` cannot be read here: offline and not in the local cache."""
    reason = offline_reason()
    if reason and not in_local_cache(repo_id, revision):
        raise EngineError(f"{repo_id} is a hub id, but this machine is offline ({reason}) and the model is not in "
                          f"the local Hugging Face cache; download it where there is network (hf download "
                          f"{repo_id}) and copy the cache here, or give the model's local folder instead.")


def known_offline() -> str | None:
    """Why the hub is unreachable, if this process already found out (never probes)."""
    return _verdict.get("reason")


def unreadable_hub_ids(sources: list[str]) -> list[str]:
    """One sentence per hub id among ``sources`` that cannot be read here (offline and not cached)."""
    sentences = []
    for source in sources:
        try:
            check_hub_id(source)
        except EngineError as exc:
            sentences.append(str(exc))
    return sentences
