"""The service's log lines: JSON objects or plain text, each carrying the id of the request it belongs to."""

from __future__ import annotations

import json
import logging
import sys
import time
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


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, request_id, and a record's `fields`."""

    def __init__(self) -> None:
        super().__init__()
        self._second = -1
        self._second_text = ""

    def _time(self, created: float) -> str:
        # One access line per request: the timestamp's date and time are formatted once a second, not each time.
        second = int(created)
        if second != self._second:
            self._second, self._second_text = second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._second_text}.{int((created - second) * 1000):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": self._time(record.created),
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
    # No line shows the caller's file, thread or process: the logging module need not look them up for each one
    # (its documented optimisations; an access line per request makes them count).
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
