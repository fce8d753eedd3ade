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


@pytest.mark.parametrize(("database_url", "cores", "workers"), [
    (None, 4, 4),  # unset: SQLite in var/
    ("", 4, 4),
    ("sqlite:////srv/listener/var/listener.db", 4, 4),
    ("sqlite:////srv/listener/var/listener.db", 1, 2),  # two at least
    ("postgresql://listener@db.internal/listener", 4, 5),
    ("postgres://u:p@db.example.com:5432/d", 2, 3),  # as a PaaS hands it over
])
def test_a_worker_per_core_on_sqlite_and_one_more_on_postgresql(read_conf, monkeypatch, database_url, cores,
                                                               workers):
    monkeypatch.setattr(multiprocessing, "cpu_count", lambda: cores)
    monkeypatch.delenv("WEB_CONCURRENCY", raising=False)
    if database_url is None:
        monkeypatch.delenv("DATABASE_URL", raising=False)
    else:
        monkeypatch.setenv("DATABASE_URL", database_url)
    assert read_conf()["workers"] == workers


@pytest.mark.parametrize("database_url", ["sqlite:////srv/listener/var/listener.db", "postgresql://db/listener"])
def test_web_concurrency_sets_the_workers_whatever_the_database(read_conf, monkeypatch, database_url):
    monkeypatch.setattr(multiprocessing, "cpu_count", lambda: 4)
    monkeypatch.setenv("DATABASE_URL", database_url)
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
