"""Database engines: SQLite in WAL mode by default, PostgreSQL through DATABASE_URL."""
from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from config.settings import sqlite_pragmas
from listener.writeback import start_fd_writeback

_engines: dict[tuple[int, str, bool], Engine] = {}
Result = TypeVar("Result")


def make_engine(url: str, pre_ping: bool = True) -> Engine:
    if url.startswith("sqlite"):
        return _sqlite_engine(url)
    # pre_ping: after the database restarts, the next use reconnects instead of failing. It costs a
    # round trip per checkout, so the webhook path turns it off and retries a dropped connection instead.
    return create_engine(url, pool_pre_ping=pre_ping, pool_size=5, max_overflow=10, pool_timeout=5,
                         connect_args={"connect_timeout": 5})


def get_engine(url: str, pre_ping: bool = True) -> Engine:
    """One engine per process, URL and ping setting; a forked child (a gunicorn worker) gets its own."""
    key = (os.getpid(), url, pre_ping)
    if key not in _engines:
        _engines[key] = make_engine(url, pre_ping)
    return _engines[key]


def forget_connections_after_fork() -> None:
    """In a forked child: the pools of the engines made before the fork start empty, their connections left to
    the parent (SQLAlchemy's ``dispose(close=False)``)."""
    for engine in _engines.values():
        engine.dispose(close=False)


def _sqlite_engine(url: str) -> Engine:
    path = url.split("///", 1)[-1]
    if path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    pragmas = sqlite_pragmas()
    engine = create_engine(url, connect_args={"timeout": int(pragmas["busy_timeout"]) / 1000,
                                              "check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):  # noqa: ANN001
        # Let SQLAlchemy, not the sqlite3 module, decide when transactions begin.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        if pragmas["synchronous"] in ("OFF", "NORMAL", "FULL", "EXTRA"):
            cursor.execute(f"PRAGMA synchronous={pragmas['synchronous']}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(pragmas['busy_timeout'])}")
        cursor.close()

    event.listen(engine, "begin", _sqlite_begin)
    return engine


def _sqlite_begin(conn: Connection) -> None:
    """BEGIN in the mode the connection's ``sqlite_begin`` option asks: IMMEDIATE for writers (``writer()``),
    which take the lock up front, so two writers never deadlock upgrading a read lock.

    Sent on the driver's connection: SQLAlchemy's execution machinery cost more than the BEGIN, inside the
    write lock. Its errors (a locked database) are wrapped as SQLAlchemy's would be.
    """
    begin = f"BEGIN {conn.get_execution_options().get('sqlite_begin', 'DEFERRED')}"
    try:
        conn.connection.dbapi_connection.execute(begin)
    except conn.dialect.loaded_dbapi.Error as error:
        raise driver_error(conn, begin, None, error) from error


_thread_locks: dict[str, threading.Lock] = {}
_lock_files: dict[tuple[int, str], int] = {}


class Writer:
    """Write transactions on one engine, each on a connection kept by its thread between transactions.

    The work sends its statements on the driver's connection (``DriverCursor``), and BEGIN and COMMIT are
    sent there too, past SQLAlchemy's transaction (its events and context objects), which cost about a
    twentieth of a webhook's CPU. Such work must not call conn.execute().

    Checking a Connection out of the pool and back in for every webhook cost
    about a tenth of the listener's own CPU per webhook in the benchmark. A kept
    connection that fails is dropped, so the next transaction starts on a fresh
    one: an outage never leaves a process with a broken connection. A Writer
    belongs to the process that made it, like its engine.
    """

    def __init__(self, engine: Engine, *, file_lock: bool = True) -> None:
        self.engine = writer(engine)
        # On a SQLite file, each transaction behind its write lock (the webhooks' path); None elsewhere.
        self.lock = _FileLock.of(self.engine) if file_lock else None
        self._kept = threading.local()

    def kept_connection(self) -> Connection:
        """The thread's kept connection, made if it has none."""
        conn = getattr(self._kept, "conn", None)
        if conn is None:
            conn = self._kept.conn = self.engine.connect()
        return conn

    def drop(self, conn: Connection) -> None:
        """After a failure, whatever it was (the database went away, a statement was refused): the next transaction
        starts on a connection from the pool; one the database dropped was invalidated, and the pool discards it."""
        self._kept.conn = None
        conn.close()

    @contextmanager
    def connection(self) -> Iterator[Connection]:
        """The kept connection, outside any transaction of the Writer's."""
        conn = self.kept_connection()
        try:
            yield conn
        except BaseException:
            self.drop(conn)
            raise

    def transaction(self) -> _Transaction:
        """A ``with`` block in a transaction on the kept connection (behind the file lock, if the Writer has one)."""
        return _Transaction(self)

    def run(self, work: Callable[[Connection], Result]) -> Result:
        """``work`` in a transaction, run once more on a fresh connection if the database had dropped the
        kept one (a restart): a webhook is then still answered 200, and a job's finish is not lost.

        Run again, a write whose first commit did reach the database finds its effect there: the store's
        duplicate check and the claim's ``status = 'queued'`` see to that.
        """
        return self._once_more_if_dropped(self.transaction, work)

    def run_alone(self, work: Callable[[Connection], Result]) -> Result:
        """``work`` on the kept connection outside any transaction, run once more as ``run`` does.

        For one statement on an autocommit engine (PostgreSQL), which is then a transaction by itself: no
        BEGIN and COMMIT round trips. Not for SQLite's webhook path: it takes no write lock.
        """
        return self._once_more_if_dropped(self.connection, work)

    @staticmethod
    def _once_more_if_dropped(context: Callable[[], contextlib.AbstractContextManager[Connection]],
                              work: Callable[[Connection], Result]) -> Result:
        try:
            with context() as conn:
                return work(conn)
        except DBAPIError as error:
            if not error.connection_invalidated:
                raise
        with context() as conn:
            return work(conn)

    def close(self) -> None:
        conn, self._kept.conn = getattr(self._kept, "conn", None), None
        if conn is not None:
            conn.close()


class _Transaction:
    """One transaction of a Writer: the kept connection, then the file lock, then BEGIN; at the end COMMIT (or
    ROLLBACK), the lock released, and the connection dropped after any failure.

    A class, not three nested generator context managers: on the webhook path their making, entering and
    leaving was a twentieth of a webhook's instructions.
    """

    __slots__ = ("writer", "conn", "locked")

    def __init__(self, writer: Writer) -> None:
        self.writer = writer
        self.locked = False

    def __enter__(self) -> Connection:
        writer = self.writer
        self.conn = conn = writer.kept_connection()
        try:
            if writer.lock is not None:
                writer.lock.acquire()
                self.locked = True
            _driver_begin(conn)
        except BaseException:
            self._end(failed=True)
            raise
        return conn

    def __exit__(self, exc_type: type[BaseException] | None, *_exc: object) -> None:
        failed = exc_type is not None
        try:
            if failed:
                # Inside the write lock; a connection the database dropped cannot roll back.
                with contextlib.suppress(Exception):
                    self.conn.connection.dbapi_connection.rollback()
            else:
                _driver_commit(self.conn)
        except BaseException:
            failed = True
            raise
        finally:
            self._end(failed)

    def _end(self, failed: bool) -> None:
        if self.locked:
            self.locked = False
            self.writer.lock.release()  # type: ignore[union-attr] - locked only with a lock
        if failed:
            self.writer.drop(self.conn)


def _driver_begin(conn: Connection) -> None:
    """BEGIN on the driver's connection, its errors wrapped as SQLAlchemy's would be.

    SQLite: BEGIN in the mode ``writer()`` asks (IMMEDIATE). psycopg (3) begins a transaction by itself
    at the first statement, but not on an autocommit connection (the store's, for its single statements): there
    BEGIN is sent here.
    """
    if conn.dialect.name == "sqlite":
        _sqlite_begin(conn)
        return
    dbapi_connection = conn.connection.dbapi_connection
    if dbapi_connection.autocommit:
        try:
            dbapi_connection.execute("BEGIN")
        except conn.dialect.loaded_dbapi.Error as error:
            raise driver_error(conn, "BEGIN", None, error) from error


def _driver_commit(conn: Connection) -> None:
    try:
        conn.connection.dbapi_connection.commit()
    except conn.dialect.loaded_dbapi.Error as error:
        raise driver_error(conn, "COMMIT", None, error) from error


def driver_error(conn: Connection, statement: str, params: Any, error: Exception,
                 cursor: Any = None) -> DBAPIError:
    """A driver's error as SQLAlchemy's DBAPIError, ``conn`` invalidated when the error says it was lost
    (``Writer.run`` then tries once more on a fresh connection)."""
    dialect = conn.dialect
    invalidated = dialect.is_disconnect(error, conn.connection.dbapi_connection, cursor)
    if invalidated:
        conn.invalidate(error)
    return DBAPIError.instance(statement, params, error, dialect.loaded_dbapi.Error,
                               connection_invalidated=invalidated, dialect=dialect)


class DriverCursor:
    """The driver's cursor on a Writer's connection, for statements written as the driver's SQL (the hot paths:
    a webhook's record, a job's claim and finish); its errors become SQLAlchemy's DBAPIError, a dropped
    connection's invalidated as SQLAlchemy's own would be. Closes itself at the end of a ``with`` block."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.dialect = conn.dialect
        self.cursor = conn.connection.dbapi_connection.cursor()

    def __enter__(self) -> DriverCursor:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def run(self, sql: str, params: dict[str, Any]) -> None:
        try:
            self.cursor.execute(sql, params)
        except self.dialect.loaded_dbapi.Error as error:
            raise driver_error(self.conn, sql, params, error, self.cursor) from error

    def one(self, sql: str, params: dict[str, Any]) -> tuple | None:
        self.run(sql, params)
        return self.cursor.fetchone()

    def one_or_integrity_error(self, sql: str, params: dict[str, Any]) -> tuple | None:
        """``one``, or None if the statement broke a constraint (outside a transaction: nothing to roll back)."""
        try:
            return self.one(sql, params)
        except IntegrityError:
            return None

    def close(self) -> None:
        with contextlib.suppress(self.dialect.loaded_dbapi.Error):  # an invalidated connection's is gone
            self.cursor.close()


class _FileLock:
    """A SQLite file's write lock, taken before BEGIN IMMEDIATE by every transaction of the webhooks' path.

    SQLite's own busy handler polls with growing sleeps, so under load writers
    slept on after the lock was free (p99 near a second in the benchmark). A
    flock() waiter is woken the moment the lock is released, in any process.
    The connection is checked out before the lock is taken: while writers queue
    for the lock, what each holds it for is the transaction alone. Once it is
    released, the WAL's writeback may be started (``_WalWriteback``).
    """

    def __init__(self, path: str) -> None:
        self.path = path
        # flock() excludes other processes; threads of this one share the descriptor, so also a thread lock.
        self.thread_lock = _thread_locks.setdefault(path, threading.Lock())

    @classmethod
    def of(cls, engine: Engine) -> _FileLock | None:
        """The lock of the engine's SQLite file; None for PostgreSQL or an in-memory database."""
        if engine.dialect.name != "sqlite" or not engine.url.database or engine.url.database == ":memory:":
            return None
        return cls(engine.url.database)

    def acquire(self) -> None:
        self.thread_lock.acquire()
        try:
            fcntl.flock(self._descriptor(), fcntl.LOCK_EX)
        except BaseException:
            self.thread_lock.release()
            raise

    def release(self) -> None:
        key = (os.getpid(), self.path)
        try:
            fcntl.flock(_lock_files[key], fcntl.LOCK_UN)  # opened by acquire(), in this process
            if key not in _wal_writebacks:
                _wal_writebacks[key] = _WalWriteback(self.path)
            _wal_writebacks[key].after_transaction()
        finally:
            self.thread_lock.release()

    def _descriptor(self) -> int:
        # One per process: a forked child (a gunicorn worker of a preloaded app) opens its own, since a flock()
        # on a descriptor inherited from the parent would be the parent's lock too.
        key = (os.getpid(), self.path)
        if key not in _lock_files:
            _lock_files[key] = os.open(f"{self.path}.write-lock", os.O_RDWR | os.O_CREAT, 0o600)
        return _lock_files[key]


class _WalWriteback:
    """Starts writing a SQLite file's WAL to disk every few write transactions, outside the write lock.

    With ``synchronous=NORMAL`` a commit does not sync the WAL; the checkpoint does,
    every thousand pages or so, and it runs inside a commit, so inside the write
    lock, while every other web worker waits. Left to the kernel, the WAL's pages
    were still dirty then, and that fdatasync wrote them all: 2.6 ms at the median
    in the ingest benchmark, 4.5 at the p90. Their writeback started as they pile
    up, the checkpoint's fdatasync has only the last few to write (0.7 ms and 1.8).
    The WAL is opened read-only here and reopened once SQLite has deleted it (when
    its last connection closes). Called under the thread lock, after the file lock.
    """

    # This process's transactions between two starts; with five web workers, one start every three or four
    # transactions in all. Each start is one system call that returns at once.
    EVERY = 16

    def __init__(self, database_path: str) -> None:
        self.path = f"{database_path}-wal"
        self.fd: int | None = None
        self.transactions = 0

    def after_transaction(self) -> None:
        self.transactions += 1
        if self.transactions % self.EVERY:
            return
        if self.fd is not None and os.fstat(self.fd).st_nlink == 0:
            os.close(self.fd)
            self.fd = None
        if self.fd is None:
            try:
                self.fd = os.open(self.path, os.O_RDONLY)
            except OSError:  # no WAL yet, or no longer: nothing to write (and never a failed transaction)
                return
        start_fd_writeback(self.fd)


_wal_writebacks: dict[tuple[int, str], _WalWriteback] = {}


def placeholder(dialect: str) -> Callable[[str], str]:
    """How the dialect's driver marks a named parameter in SQL written for it: psycopg's ``%(name)s``, the
    sqlite3 module's (and SQLAlchemy's ``text()``) ``:name``."""
    if dialect == "postgresql":
        return lambda name: f"%({name})s"
    return lambda name: f":{name}"


def moment_value(dialect: str) -> Callable[[datetime], Any]:
    """How the dialect's driver is given a moment for a DateTime column in SQL written for it: psycopg takes the
    datetime; on SQLite, the naive UTC text SQLAlchemy's DateTime stores (and reads back)."""
    if dialect == "postgresql":
        return lambda moment: moment
    return _sqlite_time


@functools.lru_cache(maxsize=8)  # a delivery's time is written three times
def _sqlite_time(moment: datetime) -> str:
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


def writer(engine: Engine) -> Engine:
    """The engine to use for a read-modify-write transaction."""
    if engine.dialect.name == "sqlite":
        return engine.execution_options(sqlite_begin="IMMEDIATE")
    return engine


def is_unavailable(error: BaseException) -> bool:
    """Whether a database error means "cannot take the event now" (answered 503)."""
    if isinstance(error, OperationalError):
        return True
    return isinstance(error, DBAPIError) and bool(error.connection_invalidated)


def as_utc(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; everything we store is UTC."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value
