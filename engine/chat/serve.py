"""``compression-engine chat``: the service's command loop — read JSON-line commands from stdin on a thread, hand
each to :class:`engine.chat.service.ChatService`, and shut down cleanly on ``quit``, EOF or Ctrl-C — and its options."""
from __future__ import annotations

import argparse
import logging
import queue
import sys
import threading
from typing import IO

from engine.chat.service import ChatService
from engine.chat.requests import parse_preload
from engine.contract.protocol import EventWriter, ProtocolError, hello, parse_command
from engine.contract.vocabulary import DEVICES

log = logging.getLogger(__name__)
_EOF = object()  # the reader thread's last word: stdin ended


def _read_lines(stream: IO[str] | None, inbox: queue.Queue) -> None:
    try:
        for line in stream or ():  # a thread of its own: the dispatcher never blocks on stdin
            inbox.put(line)
    except (OSError, ValueError) as exc:  # stdin closed under us or undecodable: the same as its end
        log.warning("stdin unreadable (%s); stopping the chat service", exc)
    finally:
        inbox.put(_EOF)  # always: without it the service would wait for a line forever


def _import_eagerly() -> None:
    """transformers resolves its names lazily and that is not thread-safe: two loads starting together in two
    threads can fail with ImportError, so the names the workers use are imported once, here."""
    import torch  # noqa: F401 - imported for its side effect (see the docstring)
    from transformers import (  # noqa: F401 - imported for its side effect
        AutoModelForCausalLM,
        AutoTokenizer,
        StoppingCriteria,
        StoppingCriteriaList,
        TextIteratorStreamer,
    )

    import engine.models.memory
    import engine.models.loading  # noqa: F401 - imported for its side effect


def serve(stdin: IO[str], writer: EventWriter, device: str = "auto", preload: list[tuple[str, str]] = ()) -> int:
    """Run the service until ``quit`` or EOF; returns the exit code."""
    _import_eagerly()
    service = ChatService(writer, device)
    inbox: queue.Queue = queue.Queue()
    threading.Thread(target=_read_lines, args=(stdin, inbox), daemon=True).start()
    for name, source in preload:
        service.handle({"type": "load", "model": name, "source": source})
    while True:
        line = inbox.get()
        if line is _EOF:
            break
        if not line.strip():
            continue
        try:
            command = parse_command(line)
        except ProtocolError as exc:
            service._error(str(exc))
            continue
        try:
            if not service.handle(command):
                break
        except Exception as exc:  # the service never dies of one command
            log.debug("command failed", exc_info=True)
            service._error(f"bad {command.get('type')} command: {type(exc).__name__}: {exc}", command)
    service.shutdown()  # quit or EOF: stop generations, wait briefly for the workers
    writer.emit("status", state="finished", stage="chat", message="chat service stopped")
    return 0


def main(argv: list[str] | None = None, stdin: IO[str] | None = None, stdout: IO[str] | None = None) -> int:
    """``compression-engine chat [--model NAME=SOURCE ...] [--device auto|cpu|cuda|mps]``."""
    parser = argparse.ArgumentParser(prog="compression-engine chat",
                                     description="Load models once and stream their answers as JSON lines.")
    parser.add_argument("--model", action="append", default=[], metavar="NAME=SOURCE",
                        help="preload a model (repeatable), e.g. student=demo:student")
    parser.add_argument("--device", default=DEVICES[0], choices=DEVICES)
    args = parser.parse_args(argv)
    try:
        preload = parse_preload(args.model)
    except ValueError as exc:
        parser.error(str(exc))  # exit 2 with the sentence, before anything is loaded
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    writer = EventWriter(stream=stdout)  # None: the protocol stream (stdout, claimed by the CLI)
    from engine import __version__

    hello(writer, "chat", __version__)
    return serve(stdin if stdin is not None else sys.stdin, writer, args.device, preload)


if __name__ == "__main__":
    sys.exit(main())
