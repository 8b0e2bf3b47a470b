"""Logging set-up shared by the entry points: readable on a terminal, JSON lines otherwise."""

from __future__ import annotations

import atexit
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TextIO

# Structured fields travel in `extra={"fields": {...}}`; they are rendered
# key=value on a terminal and as JSON members otherwise.
FIELDS = "fields"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and the record's fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(getattr(record, FIELDS, None) or {})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """'12:00:01.123 INFO  txverify.hub.verification verify request_id=... outcome=OK'."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s.%(msecs)03d %(levelname)-5s %(name)s %(message)s", "%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields = getattr(record, FIELDS, None)
        if fields:
            text += " " + " ".join(f"{k}={v}" for k, v in fields.items())
        return text


class BufferedStreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A StreamHandler that writes what it gathered every `interval` seconds, not every line.

    A server logging one line per RPC paid one write() system call per line
    (profiled: the largest single cost the hub added to a Verify). Lines now
    reach the stream at most `interval` seconds late, in order, and at once
    for WARNING and above; close() and interpreter exit write the rest. A
    SIGKILL loses at most the last `interval` seconds of lines: the log is for
    people; what must survive a crash is in the audit database.
    """

    def __init__(self, stream: TextIO, interval: float = 0.2) -> None:
        super().__init__(stream)
        # A line, or what makes one: (render, arg) is formatted by the flusher (defer).
        self._lines: list[str | tuple[Callable[[Any], str], Any]] = []
        self._interval = interval
        self._start()
        # A forked child (hub workers) has no threads but the forking one: start its own.
        os.register_at_fork(after_in_child=self._start)
        atexit.register(self.close)

    def _start(self) -> None:
        self._flushing = threading.Lock()  # anew in a forked child: held there by no one
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="log-flusher", daemon=True)
        self._thread.start()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + self.terminator
        except Exception:
            self.handleError(record)
            return
        with self.lock:  # type: ignore[union-attr]
            self._lines.append(line)
        if record.levelno >= logging.WARNING:
            self.flush()

    def defer(self, render: Callable[[Any], str], arg: Any) -> None:
        """A line that `render(arg)` makes, formatted later by the flusher, not by the caller.

        For a server's line per request: the event loop hands over the record and
        goes on; the flusher thread formats the lines it gathered, in order with the
        others. `arg` must not change afterwards.
        """
        with self.lock:  # type: ignore[union-attr]
            self._lines.append((render, arg))

    def flush(self) -> None:
        # One flush at a time, so that lines reach the stream in order; the lock that
        # emit() and defer() take is held only to take the gathered lines.
        with self._flushing:
            with self.lock:  # type: ignore[union-attr]
                lines, self._lines = self._lines, []
            if not lines:
                return
            text = []
            for n, line in enumerate(lines, 1):
                if isinstance(line, str):
                    text.append(line)
                    continue
                try:
                    text.append(line[0](line[1]) + self.terminator)
                except Exception:  # a bad record loses its own line only
                    text.append(f"unrenderable log line {line!r}{self.terminator}")
                if n % 64 == 0:
                    time.sleep(0)  # let the event loop have the GIL between chunks
            try:
                self.stream.write("".join(text))
                self.stream.flush()
            except (OSError, ValueError):
                pass  # stderr closed or gone: nowhere to say so

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.flush()

    def close(self) -> None:
        self._stop.set()
        self.flush()
        super().close()


def deferring_handler(logger: logging.Logger) -> BufferedStreamHandler | None:
    """The handler to `defer` `logger`'s INFO lines to, when it writes them all as JSON
    (the only handler on the way to the root, no filters); else None: log as usual."""
    node: logging.Logger | None = logger
    while node is not None and node is not logging.root:
        if node.handlers or node.filters or not node.propagate:
            return None
        node = node.parent
    handlers = logging.root.handlers
    if len(handlers) != 1 or logging.root.filters:
        return None
    handler = handlers[0]
    if (
        type(handler) is BufferedStreamHandler
        and type(handler.formatter) is JsonFormatter
        and not handler.filters
        and handler.level <= logging.INFO
    ):
        return handler
    return None


def configure(level: str = "INFO", *, json_lines: bool | None = None) -> None:
    """Configure the root logger once, in an entry point; JSON unless stderr is a terminal.

    Lines are written in batches (BufferedStreamHandler). Records carry no
    caller location, thread or process: none is printed, and finding them
    cost a stack walk and system calls per line.
    """
    if json_lines is None:
        json_lines = not sys.stderr.isatty()
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    logging._srcfile = None  # no findCaller() stack walk (see the logging module's source)
    handler = BufferedStreamHandler(sys.stderr) if json_lines else logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if json_lines else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
