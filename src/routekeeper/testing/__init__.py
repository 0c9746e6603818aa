"""Helpers for testing routekeeper and code built on it: fresh backends and a real server
process. See the README's "Testing" section."""

from routekeeper.testing.backends import (
    REQUIRE_SERVICES_ENV,
    TEST_POSTGRES_DSN_ENV,
    fresh_postgres_database,
    postgres_admin_dsn,
    postgres_unavailable_reason,
    services_required,
    shared_postgres_state,
)
from routekeeper.testing.fake_upstream import FakeUpstream
from routekeeper.testing.handler_server import HandlerServer, Reply, Seen
from routekeeper.testing.server import ServerProcess, free_port
from routekeeper.testing.tcpproxy import TcpProxy
from routekeeper.testing.worker import WorkerProcess

__all__ = [
    "REQUIRE_SERVICES_ENV",
    "TEST_POSTGRES_DSN_ENV",
    "FakeUpstream",
    "HandlerServer",
    "Reply",
    "Seen",
    "ServerProcess",
    "TcpProxy",
    "WorkerProcess",
    "free_port",
    "fresh_postgres_database",
    "postgres_admin_dsn",
    "postgres_unavailable_reason",
    "services_required",
    "shared_postgres_state",
]
