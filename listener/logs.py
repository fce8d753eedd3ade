"""Logging: one line per event and per action attempt; JSON lines when LOG_FORMAT=json."""
from __future__ import annotations

import json
import logging
import sys
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


def configure_logging(settings: Settings) -> None:
    root = logging.getLogger()
    if getattr(root, "_listener_configured", False):
        return
    if settings.log_format == "json":
        formatter: logging.Formatter = JsonFormatter()
    else:
        formatter = logging.Formatter("%(asctime)s %(levelname)s %(process)d %(message)s")
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
