"""gunicorn.conf.py: how many workers, and its hooks for a preloaded app (what the master does before a fork and a
worker after it)."""
from __future__ import annotations

import gc
import multiprocessing
import runpy
from pathlib import Path

import pytest

from listener import db

CONF = Path(__file__).resolve().parent.parent / "gunicorn.conf.py"


@pytest.fixture
def read_conf(monkeypatch, tmp_path):
    """Runs gunicorn.conf.py as gunicorn does, in the environment of the moment; returns its settings."""
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "metrics"))
    return lambda: runpy.run_path(str(CONF))


@pytest.fixture
def conf(read_conf):
    return read_conf()


def test_one_worker_more_than_cores_unless_web_concurrency_says(read_conf, monkeypatch):
    monkeypatch.setattr(multiprocessing, "cpu_count", lambda: 4)
    monkeypatch.delenv("WEB_CONCURRENCY", raising=False)
    assert read_conf()["workers"] == 5
    monkeypatch.setenv("WEB_CONCURRENCY", "9")
    assert read_conf()["workers"] == 9


def test_the_app_is_preloaded_by_the_master(conf):
    assert conf["preload_app"] is True


def test_before_a_fork_the_masters_objects_are_frozen_out_of_the_workers_collections(conf):
    gc.unfreeze()
    try:
        conf["pre_fork"](None, None)
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


def test_after_a_fork_the_worker_forgets_connections_made_before_it(conf, monkeypatch):
    forgotten = []
    monkeypatch.setattr(db, "forget_connections_after_fork", lambda: forgotten.append(True))
    conf["post_fork"](None, None)
    assert forgotten == [True]
