"""The database engine and sessions. SQLite is tuned so web, worker and beat can share one file."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Any

from sqlalchemy import Engine, event
from sqlmodel import Session, create_engine

from service.settings import get_settings


def make_engine(url: str) -> Engine:
    # hide_parameters: a failing statement's error (and any log of it) names the statement, never the
    # values — they are phone numbers, addresses and what patients wrote.
    if url.startswith("sqlite"):
        owner_only(url)
        # timeout: wait for another process's write lock instead of failing with "database is locked".
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": 30}, hide_parameters=True
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            # WAL lets readers (the web process) go on while a worker writes.
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        return engine
    settings = get_settings()
    idle_ms = int(settings.DATABASE_IDLE_TRANSACTION_SECONDS * 1000)
    # One connection per worker thread (WORKER_CONCURRENCY) without waiting; pre-ping so a restarted
    # PostgreSQL costs a reconnect, not a failed task.
    return create_engine(
        url,
        connect_args={
            # A process that vanished mid-transaction (a host cut off) would hold its row locks until the
            # server noticed, perhaps hours later: the server ends such a session after this long, and
            # keepalives let both sides notice a dead peer within a minute.
            "options": f"-c idle_in_transaction_session_timeout={idle_ms}",
            "keepalives": 1,
            "keepalives_idle": 15,
            "keepalives_interval": 5,
            "keepalives_count": 4,
        },
        pool_pre_ping=True,
        pool_size=settings.DATABASE_POOL_SIZE,
        max_overflow=settings.DATABASE_MAX_OVERFLOW,
        hide_parameters=True,
    )


def owner_only(url: str) -> None:
    """Create a SQLite file readable and writable by its owner alone, before SQLite creates it with the
    process's umask (its journal and WAL files take the same permissions)."""
    path = url.split("///", 1)[-1]
    if not path or path == ":memory:":
        return
    os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
    if not os.path.exists(path):
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    os.chmod(path, 0o600)


@lru_cache
def get_engine() -> Engine:
    settings = get_settings()
    if settings.database_url.startswith("sqlite"):
        settings.ensure_data_dir()
    return make_engine(settings.database_url)


def reset_engine() -> None:
    """Drop the cached engine (tests switch databases; a forked worker must not share sockets)."""
    if get_engine.cache_info().currsize:
        get_engine().dispose()
    get_engine.cache_clear()


@contextmanager
def session_scope() -> Iterator[Session]:
    """A session committed on success and rolled back on error: the unit of work of a task or command."""
    # One pooled connection for the whole unit of work: a send commits three times, and each commit
    # would otherwise hand the connection back and check it out (and pre-ping it) again.
    with get_engine().connect() as connection, Session(bind=connection, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


def is_postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"
