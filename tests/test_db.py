"""The webhook path's write connection: kept by its thread between transactions, dropped after a failure."""
from __future__ import annotations

import os
import sqlite3
import threading

import pytest
from sqlalchemy.exc import DBAPIError, OperationalError

from listener import db
from listener.db import DriverCursor, Writer, make_engine
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
        driver_run(first, "SELECT 1")
    with writer.transaction() as second:
        driver_run(second, "SELECT 1")
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
        driver_run(conn, "CREATE TABLE writer_test (n INTEGER)")
    with pytest.raises(DBAPIError), writer.transaction() as failed:
        driver_run(failed, "INSERT INTO writer_test (n) VALUES (1)")
        driver_run(failed, "SELECT * FROM no_such_table")
    assert failed.closed  # back to the pool, not kept
    with writer.transaction() as fresh:
        assert fresh is not failed
        assert driver_run(fresh, "SELECT count(*) FROM writer_test")[0] == 0
        driver_run(fresh, "DROP TABLE writer_test")


def check_run_tries_once_more_when_the_database_dropped_the_kept_connection(writer, backend_pid,  # noqa: ANN001
                                                                           run=None) -> None:  # noqa: ANN001
    """``backend_pid(conn)`` asks PostgreSQL which backend serves ``conn``, the way the writer's work runs SQL;
    ``run``: the Writer's method that runs it (``writer.run`` unless given)."""
    if writer.engine.dialect.name != "postgresql":
        pytest.skip("a SQLite connection is a file the process holds: no server drops it")
    with writer.transaction() as kept:
        pass
    backend = end_from_the_server(writer.engine, kept)
    tries = []

    def work(conn):  # noqa: ANN001, ANN202
        tries.append(conn)
        return backend_pid(conn)

    assert (run or writer.run)(work) != backend
    # The second try is on a fresh connection. The first reaches the work unless the transaction's own BEGIN
    # (sent first on an autocommit connection) already found the connection gone.
    begins_first = run is None and writer.engine.get_execution_options().get("isolation_level") == "AUTOCOMMIT"
    assert len(tries) == (1 if begins_first else 2)
    assert tries[-1] is not kept and tries[:-1] in ([], [kept])


def test_run_tries_once_more_on_a_fresh_connection_when_the_database_dropped_the_kept_one(writer):
    check_run_tries_once_more_when_the_database_dropped_the_kept_connection(
        writer, lambda conn: driver_run(conn, "SELECT pg_backend_pid()")[0])


def test_run_does_not_repeat_a_transaction_the_database_refused(writer):
    tries = []

    def work(conn):  # noqa: ANN001, ANN202
        tries.append(conn)
        driver_run(conn, "SELECT * FROM no_such_table")

    with pytest.raises(DBAPIError):
        writer.run(work)
    assert len(tries) == 1


# --- transactions begun and committed on the driver's connection (the webhooks' record) -----------------

@pytest.fixture(params=["transactional", "autocommit"])
def driver_writer(request, database_url):
    """A driver-SQL Writer; on PostgreSQL also on an autocommit engine (the store's), whose transactions
    send BEGIN themselves."""
    engine = make_engine(database_url, pre_ping=False)
    if request.param == "autocommit":
        if engine.dialect.name != "postgresql":
            pytest.skip("the store's engine is in autocommit on PostgreSQL only")
        engine = engine.execution_options(isolation_level="AUTOCOMMIT")
    writer = Writer(engine)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE IF NOT EXISTS driver_test (n INTEGER)")
        conn.exec_driver_sql("DELETE FROM driver_test")
    yield writer
    writer.close()
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE driver_test")
    engine.dispose()


def driver_run(conn, sql: str):  # noqa: ANN001, ANN201
    """A statement sent as the store sends its own: on the driver's cursor, errors wrapped as SQLAlchemy's."""
    with DriverCursor(conn) as cursor:
        cursor.run(sql, {})
        return cursor.cursor.fetchone() if cursor.cursor.description else None


def committed_rows(writer) -> int:  # noqa: ANN001
    with writer.engine.execution_options(sqlite_begin="DEFERRED").connect() as other:  # a reader
        return other.exec_driver_sql("SELECT count(*) FROM driver_test").scalar()


def test_a_driver_sql_writer_commits_its_work_without_a_sqlalchemy_transaction(driver_writer):
    with driver_writer.transaction() as conn:
        driver_run(conn, "INSERT INTO driver_test (n) VALUES (1)")
        assert not conn.in_transaction()  # BEGIN went to the driver, past SQLAlchemy's machinery
        assert committed_rows(driver_writer) == 0  # not before the commit
    assert committed_rows(driver_writer) == 1
    with driver_writer.transaction() as again:
        assert again is conn  # kept, as for any Writer


def test_a_failed_driver_sql_transaction_is_rolled_back_and_the_next_one_starts_on_a_fresh_connection(
        driver_writer):
    with pytest.raises(DBAPIError), driver_writer.transaction() as failed:
        driver_run(failed, "INSERT INTO driver_test (n) VALUES (1)")
        driver_run(failed, "SELECT * FROM no_such_table")
    assert failed.closed
    assert committed_rows(driver_writer) == 0
    with driver_writer.transaction() as fresh:
        assert fresh is not failed
        driver_run(fresh, "INSERT INTO driver_test (n) VALUES (2)")
    assert committed_rows(driver_writer) == 1


def test_a_driver_sql_transaction_on_sqlite_holds_the_write_lock_from_its_begin(driver_writer, database_url):
    """BEGIN IMMEDIATE, as writer() asks: two writers never deadlock upgrading a read lock."""
    if not database_url.startswith("sqlite"):
        pytest.skip("PostgreSQL locks rows, not the database")
    other = sqlite3.connect(driver_writer.engine.url.database, timeout=0, isolation_level=None)
    try:
        with driver_writer.transaction(), pytest.raises(sqlite3.OperationalError, match="locked"):
            other.execute("BEGIN IMMEDIATE")
        other.execute("BEGIN IMMEDIATE")  # free once committed
        other.execute("ROLLBACK")
    finally:
        other.close()


def test_a_locked_sqlite_database_at_begin_is_a_dbapi_error(driver_writer, database_url):
    """What the webhook answers 503 to: the driver's error, wrapped as SQLAlchemy's would be."""
    if not database_url.startswith("sqlite"):
        pytest.skip("SQLite's database lock")
    with driver_writer.transaction() as conn:
        conn.connection.dbapi_connection.execute("PRAGMA busy_timeout=0")  # fail at once, not in 10 s
    holder = sqlite3.connect(driver_writer.engine.url.database, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(OperationalError, match="locked"), driver_writer.transaction():
            pass
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_run_with_driver_sql_tries_once_more_when_the_database_dropped_the_kept_connection(driver_writer):
    check_run_tries_once_more_when_the_database_dropped_the_kept_connection(
        driver_writer, lambda conn: driver_run(conn, "SELECT pg_backend_pid()")[0])


def autocommit_only(writer) -> None:  # noqa: ANN001
    """run_alone is for a connection where a statement is a transaction by itself."""
    if writer.engine.dialect.name == "postgresql" and \
            writer.engine.get_execution_options().get("isolation_level") != "AUTOCOMMIT":
        pytest.skip("run_alone needs an autocommit connection (psycopg opens a transaction otherwise)")


def test_run_alone_commits_its_statement_on_the_kept_connection(driver_writer):
    autocommit_only(driver_writer)
    seen = []

    def insert(conn):  # noqa: ANN001, ANN202
        seen.append(conn)
        driver_run(conn, "INSERT INTO driver_test (n) VALUES (1)")

    driver_writer.run_alone(insert)
    assert committed_rows(driver_writer) == 1
    with driver_writer.transaction() as conn:
        assert conn is seen[0]


def test_run_alone_tries_once_more_when_the_database_dropped_the_kept_connection(driver_writer):
    autocommit_only(driver_writer)
    check_run_tries_once_more_when_the_database_dropped_the_kept_connection(
        driver_writer, lambda conn: driver_run(conn, "SELECT pg_backend_pid()")[0], run=driver_writer.run_alone)


@pytest.fixture
def sqlite_file_writer(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'wal.db'}", pre_ping=False)
    writer = Writer(engine)
    with writer.transaction() as conn:
        driver_run(conn, "CREATE TABLE wal_test (n INTEGER)")
    yield writer
    writer.close()
    engine.dispose()


@pytest.fixture
def writebacks_started(monkeypatch):
    """The descriptors whose writeback the write path starts, each with the inode it had at that moment."""
    started: list[tuple[int, int]] = []
    monkeypatch.setattr(db, "start_fd_writeback", lambda fd: started.append((fd, os.fstat(fd).st_ino)))
    return started


def insert_rows(writer: Writer, count: int) -> None:
    for n in range(count):
        with writer.transaction() as conn:
            driver_run(conn, f"INSERT INTO wal_test (n) VALUES ({n})")


def test_sqlite_write_transactions_start_the_wals_writeback_every_few_transactions(sqlite_file_writer,
                                                                                  writebacks_started):
    """Outside the write lock, so that the checkpoint's fdatasync inside it finds the WAL written already."""
    wal = f"{sqlite_file_writer.engine.url.database}-wal"
    insert_rows(sqlite_file_writer, 2 * db._WalWriteback.EVERY - 2)  # with the CREATE TABLE: one short of two
    assert [inode for _fd, inode in writebacks_started] == [os.stat(wal).st_ino]
    insert_rows(sqlite_file_writer, 1)
    assert len(writebacks_started) == 2


def test_the_wal_is_reopened_once_sqlite_has_deleted_it(tmp_path, sqlite_file_writer, writebacks_started):
    database = sqlite_file_writer.engine.url.database
    insert_rows(sqlite_file_writer, db._WalWriteback.EVERY)
    first_fd, first_inode = writebacks_started[-1]
    sqlite_file_writer.close()
    sqlite_file_writer.engine.dispose()  # the last connection closed: SQLite checkpoints and deletes the WAL
    assert not os.path.exists(f"{database}-wal")
    again = Writer(make_engine(f"sqlite:///{database}", pre_ping=False))
    try:
        insert_rows(again, db._WalWriteback.EVERY)
        fd, inode = writebacks_started[-1]
        assert inode == os.stat(f"{database}-wal").st_ino
        assert os.fstat(fd).st_nlink == 1  # the WAL in use, not the deleted one
    finally:
        again.close()
        again.engine.dispose()


def test_no_wal_to_write_back_is_no_failure(tmp_path, writebacks_started):
    writeback = db._WalWriteback(str(tmp_path / "never-opened.db"))
    for _ in range(2 * writeback.EVERY):
        writeback.after_transaction()
    assert writebacks_started == []


def test_after_a_fork_the_engines_pools_forget_the_parents_connections_without_closing_them(tmp_path):
    """gunicorn forks its workers from a master that imported the app: a worker must open connections of its
    own, and must not close the master's under it."""
    engine = db.get_engine(f"sqlite:///{tmp_path / 'fork.db'}", pre_ping=False)
    with engine.connect() as conn:
        parents = conn.connection.dbapi_connection
    assert engine.pool.checkedin() == 1
    db.forget_connections_after_fork()
    assert engine.pool.checkedin() == 0
    assert parents.execute("SELECT 1").fetchone() == (1,)  # still open, for the parent
    with engine.connect() as conn:
        assert conn.connection.dbapi_connection is not parents
    parents.close()
    engine.dispose()
