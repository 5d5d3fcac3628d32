"""The service's log lines: JSON objects or plain text, each carrying the id of the request it belongs to."""

from __future__ import annotations

import json
import json.encoder
import logging
import sys
import time
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any, TextIO

from app.settings import Settings

# Set by the HTTP layer for the length of one request; every line logged meanwhile carries it.
REQUEST_ID: ContextVar[str | None] = ContextVar("request_id", default=None)
TEXT_FORMAT = "%(levelname)s:     %(message)s"


class RequestIdFilter(logging.Filter):
    """Puts the current request's id (or None) on every record, for the formatters."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = REQUEST_ID.get()
        return True


class _Clock:
    """UTC timestamps to the millisecond; the date and time are formatted once a second, not once a line."""

    def __init__(self) -> None:
        self._second = -1
        self._text = ""

    def format(self, created: float) -> str:
        second = int(created)
        if second != self._second:
            self._second, self._text = second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._text}.{int((created - second) * 1000):03d}Z"


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, request_id, and a record's `fields`."""

    def __init__(self) -> None:
        super().__init__()
        self._clock = _Clock()

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": self._clock.format(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None)
        if request_id is not None:
            line["request_id"] = request_id
        fields = getattr(record, "fields", None)
        if fields:
            line.update(fields)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        try:
            return json.dumps(line)  # the module's shared encoder: the fast path
        except TypeError:
            return json.dumps(line, default=str)


class TextFormatter(logging.Formatter):
    """uvicorn's plain lines, with the request id at the end of those that belong to a request."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        request_id = getattr(record, "request_id", None)
        return f"{text} [{request_id}]" if request_id is not None else text


class AccessLog:
    """One line a request, as the formatters above would write it, but straight to stderr.

    A log record, its handlers and its formatter cost about a tenth of an authenticated read's CPU; this line costs
    a fraction of that. It is on while the `app.access` logger is enabled for INFO (LOG_LEVEL).
    """

    def __init__(self, log_format: str) -> None:
        self._json = log_format == "json"
        self._clock = _Clock()
        self._logger = logging.getLogger("app.access")

    @property
    def enabled(self) -> bool:
        return self._logger.isEnabledFor(logging.INFO)

    def write(
        self, method: str, route: str, path: str, status: int, seconds: float, client: str | None, request_id: str
    ) -> None:
        """The request's line: `method` and `request_id` come checked, the other strings are escaped."""
        ms = seconds * 1000
        if self._json:
            message = _quoted(f"{method} {path} {status} {ms:.1f} ms")
            line = (
                f'{{"time": "{self._clock.format(time.time())}", "level": "INFO", "logger": "app.access", '
                f'"message": {message}, "request_id": "{request_id}", "method": "{method}", "route": {_quoted(route)}, '
                f'"path": {_quoted(path)}, "status": {status}, "duration_ms": {ms:.2f}, '
                f'"client": {_quoted(client) if client is not None else "null"}}}\n'
            )
        else:
            # A decoded path can hold a newline: no client writes a line of its own into the log.
            shown = path if path.isprintable() else path.encode("unicode_escape").decode("ascii")
            line = f"INFO:     {method} {shown} {status} {ms:.1f} ms [{request_id}]\n"
        stream = sys.stderr  # whatever it is now (a test's capture, say)
        try:
            stream.write(line)
            stream.flush()
        except (OSError, ValueError):
            pass  # as logging's handlers do: a lost log line must not fail the request (stderr closed, a full disk)


_quoted: Callable[[str], str] = json.encoder.encode_basestring_ascii  # a JSON string literal, quoted (C)


def log_formatter(settings: Settings) -> logging.Formatter:
    return JsonFormatter() if settings.log_format == "json" else TextFormatter()


def log_handler(settings: Settings, stream: TextIO | None = None) -> logging.Handler:
    """A handler writing LOG_FORMAT lines to `stream` (stderr by default), with the request id on each."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(log_formatter(settings))
    handler.addFilter(RequestIdFilter())
    return handler


def configure_logging(settings: Settings) -> None:
    """Send every logger's lines (uvicorn's included) through one handler on the root logger, at LOG_LEVEL."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.addHandler(log_handler(settings))
    root.setLevel(settings.log_level)
