"""Fresh, isolated backends for tests: every PostgreSQL test gets its own database."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

REQUIRE_SERVICES_ENV = "ROUTEKEEPER_REQUIRE_SERVICES"
TEST_POSTGRES_DSN_ENV = "ROUTEKEEPER_TEST_POSTGRES_DSN"
DEFAULT_TEST_POSTGRES_DSN = "postgresql://127.0.0.1:5432/test"
TEST_REDIS_URL_ENV = "ROUTEKEEPER_TEST_REDIS_URL"
DEFAULT_TEST_REDIS_URL = "redis://127.0.0.1:6379/0"


def services_required() -> bool:
    """True when PostgreSQL/Redis tests must fail instead of skipping (CI sets it)."""
    return os.environ.get(REQUIRE_SERVICES_ENV, "").strip().lower() in ("1", "true", "yes")


def postgres_admin_dsn() -> str:
    """A DSN with the right to CREATE DATABASE (``ROUTEKEEPER_TEST_POSTGRES_DSN``)."""
    return os.environ.get(TEST_POSTGRES_DSN_ENV, DEFAULT_TEST_POSTGRES_DSN)


def _connect(dsn: str):  # type: ignore[no-untyped-def]
    import psycopg

    return psycopg.connect(dsn, connect_timeout=3, autocommit=True)


def postgres_unavailable_reason(dsn: str | None = None) -> str | None:
    """None when the test server answers, else why not."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed (pip install 'routekeeper[postgres]')"
    try:
        with _connect(dsn or postgres_admin_dsn()) as conn:
            conn.execute("SELECT 1")
    except Exception as exc:  # any failure means: not usable for tests
        return f"PostgreSQL at {dsn or postgres_admin_dsn()} is not reachable: {exc}"
    return None


def _with_database(dsn: str, name: str) -> str:
    return urlunsplit(urlsplit(dsn)._replace(path=f"/{name}"))


@contextmanager
def fresh_postgres_database(
    admin_dsn: str | None = None, *, prefix: str = "rk_test"
) -> Iterator[str]:
    """Create an empty database, yield its DSN, drop it afterwards (even if still in use).
    Its name is random, with the pytest-xdist worker's id when there is one (``rk_test_gw1_…``):
    tests on parallel workers, and runs side by side, never share a database."""
    admin = admin_dsn or postgres_admin_dsn()
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    worker = "".join(c for c in worker if c.isalnum())[:8]
    name = f"{prefix}_{worker + '_' if worker else ''}{secrets.token_hex(6)}"
    with _connect(admin) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield _with_database(admin, name)
    finally:
        with _connect(admin) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def shared_postgres_state(dsn: str, **backend: Any) -> dict[str, Any]:
    """A ``state`` config section: every surface on PostgreSQL at ``dsn`` in ``mode: shared``
    (``backend`` adds keys such as ``connect_timeout_seconds``)."""
    return {
        "mode": "shared",
        "default_backend": "pg",
        "backends": {"pg": {"type": "postgres", "dsn": dsn, **backend}},
    }


def redis_url() -> str:
    """The Redis the tests use (``ROUTEKEEPER_TEST_REDIS_URL``). Tests share it: what they
    write there is named by random ids (a key's id), never by a fixed name."""
    return os.environ.get(TEST_REDIS_URL_ENV, DEFAULT_TEST_REDIS_URL)


def redis_unavailable_reason(url: str | None = None) -> str | None:
    """None when the test Redis answers PING, else why not."""
    try:
        import redis
    except ImportError:
        return "redis is not installed (pip install 'routekeeper[redis]')"
    url = url or redis_url()
    try:
        with redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=3) as client:
            client.ping()
    except Exception as exc:  # any failure means: not usable for tests
        return f"Redis at {url} is not reachable: {exc}"
    return None
