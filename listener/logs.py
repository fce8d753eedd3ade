"""Logging: one line per event and per action attempt; JSON lines when LOG_FORMAT=json."""
from __future__ import annotations

import json
import logging
import sys
import time
from datetime import UTC, datetime

from config import Settings


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": message,
        }
        # "listener.<source>.<what> k=v k=v": the key and its fields, for log search.
        head, _, rest = message.partition(" ")
        if head.startswith("listener."):
            entry["log_key"] = head
            for pair in rest.split(" "):
                name, sep, value = pair.partition("=")
                if sep and name.isidentifier():
                    entry.setdefault(name, value)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    """``time LEVEL pid message``, with logging's own timestamp format, its date and time formatted once a second.

    Every webhook and every job writes a line: strftime() for each was a measurable part of a webhook's CPU.
    """

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(process)d %(message)s")
        self._second: tuple[int, str] = (-1, "")  # replaced whole, so threads never see half an update

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802 - logging's
        second, text = self._second
        if int(record.created) != second:
            second = int(record.created)
            text = time.strftime(self.default_time_format, self.converter(second))
            self._second = (second, text)
        return self.default_msec_format % (text, record.msecs)


def configure_logging(settings: Settings) -> None:
    root = logging.getLogger()
    if getattr(root, "_listener_configured", False):
        return
    # Neither format shows where a line was logged from or by which thread: logging then skips walking the
    # stack for the caller and looking up the thread on every line (its documented optimisations).
    logging._srcfile = None  # noqa: SLF001
    logging.logThreads = False
    logging.logMultiprocessing = False
    formatter: logging.Formatter = JsonFormatter() if settings.log_format == "json" else TextFormatter()
    if root.handlers:
        # Someone configured logging first (gunicorn's logconfig_dict): same handlers, our format.
        for handler in root.handlers:
            handler.setFormatter(formatter)
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(formatter)
        root.addHandler(handler)
    root.setLevel(settings.log_level)
    root._listener_configured = True  # type: ignore[attr-defined]
