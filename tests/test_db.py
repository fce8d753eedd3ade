"""The webhook path's write connection: kept by its thread between transactions, dropped after a failure."""
from __future__ import annotations

import threading

import pytest
from sqlalchemy.exc import DBAPIError

from listener.db import Writer, make_engine
from tests.support.backends import end_from_the_server


@pytest.fixture
def writer(database_url):
    engine = make_engine(database_url, pre_ping=False)
    writer = Writer(engine)
    yield writer
    writer.close()
    engine.dispose()


def test_a_thread_keeps_its_connection_from_one_transaction_to_the_next(writer):
    with writer.transaction() as first:
        first.exec_driver_sql("SELECT 1")
    with writer.transaction() as second:
        second.exec_driver_sql("SELECT 1")
    assert second is first and not first.closed


def test_another_thread_gets_a_connection_of_its_own(writer):
    with writer.transaction() as mine:
        pass
    theirs = []

    def in_a_thread() -> None:
        with writer.transaction() as conn:
            theirs.append(conn)

    thread = threading.Thread(target=in_a_thread)
    thread.start()
    thread.join()
    assert theirs and theirs[0] is not mine


def test_a_failed_transaction_is_rolled_back_and_the_next_one_starts_on_a_fresh_connection(writer):
    with writer.transaction() as conn:
        conn.exec_driver_sql("CREATE TABLE writer_test (n INTEGER)")
    with pytest.raises(DBAPIError), writer.transaction() as failed:
        failed.exec_driver_sql("INSERT INTO writer_test (n) VALUES (1)")
        failed.exec_driver_sql("SELECT * FROM no_such_table")
    assert failed.closed  # back to the pool, not kept
    with writer.transaction() as fresh:
        assert fresh is not failed
        assert fresh.exec_driver_sql("SELECT count(*) FROM writer_test").scalar() == 0
        fresh.exec_driver_sql("DROP TABLE writer_test")


def test_run_tries_once_more_on_a_fresh_connection_when_the_database_dropped_the_kept_one(writer):
    if writer.engine.dialect.name != "postgresql":
        pytest.skip("a SQLite connection is a file the process holds: no server drops it")
    with writer.transaction() as kept:
        pass
    backend = end_from_the_server(writer.engine, kept)
    tries = []

    def work(conn):  # noqa: ANN001, ANN202
        tries.append(conn)
        return conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()

    assert writer.run(work) != backend
    assert len(tries) == 2 and tries[0] is kept and tries[1] is not kept


def test_run_does_not_repeat_a_transaction_the_database_refused(writer):
    tries = []

    def work(conn):  # noqa: ANN001, ANN202
        tries.append(conn)
        conn.exec_driver_sql("SELECT * FROM no_such_table")

    with pytest.raises(DBAPIError):
        writer.run(work)
    assert len(tries) == 1
