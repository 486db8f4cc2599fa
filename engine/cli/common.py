"""What every compression-engine command shares: logging on stderr, the one-sentence failure (stderr + an
``error`` event, exit 2), a terminal progress bar, and listening for ``cancel`` (stdin line or Ctrl-C)."""
from __future__ import annotations

import logging
import signal
import sys
import threading

from engine.contract.errors import shorten
from engine.contract.protocol import (
    MAX_ERROR_CHARS,
    EventWriter,
    ProtocolError,
    parse_command,
)
from engine.contract.streams import command_stdin


log = logging.getLogger("engine")


def setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("httpx", "urllib3", "filelock", "datasets", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def fail(message: str, code: int = 2) -> int:
    """A user error: one sentence on stderr and one error event on stdout, nothing else touched."""
    message = shorten(message, MAX_ERROR_CHARS)  # a sentence that echoes a 10,000-character value is cut
    print(f"error: {message}", file=sys.stderr)  # noqa: T201 - the user's terminal, not a log
    try:
        EventWriter().error(message)
    except OSError:
        pass  # stdout is gone: stderr said it
    return code


class TerminalProgress:
    """A one-line progress bar with ETA on stderr, only when stderr is a terminal."""

    def __call__(self, event) -> None:
        if event.type == "progress":
            d = event.data
            width = 30
            filled = int(width * (d.get("fraction") or 0))
            eta = f"ETA {d['eta_s']:.0f}s" if d.get("eta_s") is not None else ""
            sys.stderr.write(f"\r{d['stage']:<14} [{'#' * filled}{'.' * (width - filled)}] "
                             f"{d['step']}/{d['total']} {eta}   ")
            sys.stderr.flush()
        elif event.type in ("status", "done", "error"):
            sys.stderr.write("\n")


def _obey(line: str | bytes, cancel: threading.Event) -> None:
    """One stdin line: ``cancel`` sets the event; anything else is logged and ignored (the run goes on)."""
    try:
        command = parse_command(line)
    except ProtocolError as exc:
        log.warning("ignored stdin line: %s", exc)
        return
    if command["type"] == "cancel":
        log.info("cancel requested")
        cancel.set()


def listen_for_cancel(cancel: threading.Event) -> None:
    """Read commands from stdin on a daemon thread; ``cancel`` stops the run at the next step."""

    stream = command_stdin()

    def reader() -> None:
        # raw bytes, decoded line by line: one line that is not UTF-8 must not end the loop (a text stream would
        # raise UnicodeDecodeError out of the for), nor may any other bad line, so the next cancel is obeyed
        try:
            for line in stream:
                _obey(line, cancel)
        except (OSError, ValueError) as exc:  # stdin closed under us: nothing more will come
            log.warning("stdin unreadable (%s); Ctrl-C still cancels", exc)

    if stream is not None:
        threading.Thread(target=reader, name="stdin-commands", daemon=True).start()

    def on_sigint(signum, frame):  # first Ctrl-C cancels cleanly (checkpoint saved), the second one kills
        if cancel.is_set():
            raise KeyboardInterrupt
        log.info("interrupted: cancelling at the next step (press Ctrl-C again to stop at once)")
        cancel.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, on_sigint)
