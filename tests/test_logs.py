"""Log lines: the text format's timestamps, the JSON format's fields, and what a line costs to make."""
from __future__ import annotations

import json
import logging

import pytest

from config import Settings
from listener.logs import JsonFormatter, TextFormatter, configure_logging


def record_at(created: float, message: str = "listener.iconik.accepted endpoint=/create key=a1 event=7"):
    record = logging.LogRecord("listener", logging.INFO, __file__, 1, message, None, None)
    record.created, record.msecs = created, (created - int(created)) * 1000
    return record


@pytest.mark.parametrize("moments", [
    [1700000000.0, 1700000000.25, 1700000000.999],  # one second, formatted once
    [1700000000.5, 1700000001.001, 1700000000.75, 1700086400.0],  # the next second, back, the next day
])
def test_the_text_format_is_loggings_own_line_for_line(moments):
    ours, logging_own = TextFormatter(), logging.Formatter("%(asctime)s %(levelname)s %(process)d %(message)s")
    for created in moments:
        assert ours.format(record_at(created)) == logging_own.format(record_at(created))


def test_the_json_format_gives_the_log_key_and_its_fields():
    line = json.loads(JsonFormatter().format(record_at(1700000000.5)))
    assert line["time"] == "2023-11-14T22:13:20.500000+00:00"
    assert (line["level"], line["log_key"], line["key"], line["event"]) == ("info", "listener.iconik.accepted",
                                                                              "a1", "7")


def test_configured_logging_does_not_look_up_the_caller_or_the_thread_of_a_line(monkeypatch):
    root = logging.getLogger()
    monkeypatch.setattr(root, "_listener_configured", False, raising=False)
    monkeypatch.setattr(root, "handlers", [])
    for name in ("_srcfile", "logThreads", "logMultiprocessing"):
        monkeypatch.setattr(logging, name, getattr(logging, name))  # put back after the test
    monkeypatch.setattr(root, "level", root.level)
    configure_logging(Settings())
    assert isinstance(root.handlers[0].formatter, TextFormatter)
    seen = []
    monkeypatch.setattr(root.handlers[0], "emit", seen.append)
    logging.getLogger("listener").info("listener.test.line")
    assert seen[0].funcName == "(unknown function)"  # else found by walking the stack
    assert seen[0].threadName is None and seen[0].processName is None
    assert seen[0].process  # the text format shows it
