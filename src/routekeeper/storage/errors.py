"""Translate driver and SQLAlchemy errors into the contract's error tree, at the storage edge.

Callers above the storage layer only ever see ``routekeeper.contract.errors.StorageError`` and
its subclasses; the original exception stays chained as ``__cause__`` for logs."""

from __future__ import annotations

from typing import NoReturn

from sqlalchemy import exc as sa_exc

from routekeeper.contract.errors import (
    InvalidValue,
    SchemaNotReady,
    StorageBusy,
    StorageConflict,
    StorageError,
    StorageUnavailable,
)
from routekeeper.tasks import raise_if_cancelling

_SQLITE_BUSY = ("database is locked", "database table is locked", "database schema is locked")
_SQLITE_UNAVAILABLE = (
    "unable to open database file",
    "disk i/o error",
    "readonly database",
    "database or disk is full",
)


def raise_translated(exc: BaseException) -> NoReturn:
    """Raise ``exc`` as the contract error it stands for (chained), or as it is. While the
    current task is being cancelled, a driver error is the cancellation (``raise_if_cancelling``:
    a cancelled query often surfaces as a connection error)."""
    if isinstance(exc, Exception):
        raise_if_cancelling(exc)
        translated = translate_storage_error(exc)
        if translated is not None and translated is not exc:
            raise translated from exc
    raise exc


def translate_storage_error(exc: BaseException) -> StorageError | None:
    """The contract error for ``exc``, or None when it is not a storage failure."""
    if isinstance(exc, StorageError):
        return exc
    if isinstance(exc, sa_exc.TimeoutError):  # pool exhausted
        return StorageUnavailable("no database connection became free in time")
    if isinstance(exc, sa_exc.PendingRollbackError):
        # The connection was lost inside a transaction (SQLAlchemy invalidated it): the
        # database went away, nothing is wrong with the values written.
        return StorageUnavailable(f"database unavailable: the connection was lost ({exc})")
    if isinstance(exc, sa_exc.DBAPIError):
        return _translate_dbapi(exc)
    if isinstance(exc, sa_exc.StatementError):
        # Raised while binding parameters, before the driver saw the statement: a column
        # type refused a value (InvalidValue) or the driver could not convert one.
        orig = exc.orig
        if isinstance(orig, InvalidValue):
            return orig
        if isinstance(orig, OverflowError | ValueError | TypeError):
            return InvalidValue(f"the database cannot hold a value: {orig}")
        return None
    if isinstance(exc, OverflowError):  # sqlite3: an int beyond 64 bits
        return InvalidValue(f"the database cannot hold a value: {exc}")
    return None


def _translate_dbapi(exc: sa_exc.DBAPIError) -> StorageError:
    orig = exc.orig
    text = str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
    sqlstate = getattr(orig, "sqlstate", None)
    if isinstance(sqlstate, str):
        return _translate_sqlstate(sqlstate, text, exc)
    lowered = text.lower()
    if isinstance(exc, sa_exc.DataError):
        return InvalidValue(f"the database refused a value: {text}")
    if isinstance(exc, sa_exc.IntegrityError):
        return StorageConflict(f"the write conflicts with stored data: {text}")
    if any(s in lowered for s in _SQLITE_BUSY):
        return StorageBusy(f"SQLite stayed locked past busy_timeout: {text}")
    if "no such table" in lowered or "no such column" in lowered:
        return SchemaNotReady(f"the database schema is not migrated: {text}")
    if exc.connection_invalidated or any(s in lowered for s in _SQLITE_UNAVAILABLE):
        return StorageUnavailable(f"database unavailable: {text}")
    if isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError):
        return StorageUnavailable(f"database unavailable: {text}")
    return StorageError(f"database error: {text}")


def _translate_sqlstate(sqlstate: str, text: str, exc: sa_exc.DBAPIError) -> StorageError:
    klass = sqlstate[:2]
    if klass in ("22", "54"):  # data exception; program limit exceeded (a tsvector too long)
        return InvalidValue(f"the database refused a value: {text}")
    if klass == "23":
        return StorageConflict(f"the write conflicts with stored data: {text}")
    if sqlstate in ("40001", "40P01", "55P03"):
        return StorageBusy(f"the database refused the transaction, retry it: {text}")
    if sqlstate in ("42P01", "42703", "3F000"):
        return SchemaNotReady(f"the database schema is not migrated: {text}")
    if klass in ("08", "53", "57") or exc.connection_invalidated:
        return StorageUnavailable(f"database unavailable: {text}")
    return StorageError(f"database error: {text}")
