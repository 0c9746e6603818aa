"""pytest fixtures: run a store's tests on every backend.

``backend_kind`` is parametrized over ``sqlite`` and ``postgres``; ``state_settings`` builds
settings whose default backend is a fresh SQLite file (in ``tmp_path``) or a fresh PostgreSQL
database; ``state_storage`` opens and migrates it. ``any_backend_kind``, ``any_state_settings``
and ``any_state_storage`` add the ``memory`` backend (every surface opted in with
``state.allow_ephemeral``), for suites that must hold on every backend kind. Without a
reachable PostgreSQL the postgres cases skip, unless ``ROUTEKEEPER_REQUIRE_SERVICES=1`` makes
them fail. Under pytest-xdist, a test marked ``exclusive`` runs alone on the machine
(:mod:`routekeeper.testing.parallel`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from routekeeper.settings import Settings, load_settings
from routekeeper.testing import parallel
from routekeeper.testing.backends import (
    fresh_postgres_database,
    postgres_unavailable_reason,
    redis_unavailable_reason,
    redis_url,
    services_required,
    shared_postgres_state,
)
from routekeeper.testing.server import ServerProcess


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "restart(surface): a kill-and-restart test of a registered state surface; it must "
        "take the restart_backend fixture so it runs on sqlite and postgres",
    )
    config.addinivalue_line("markers", "postgres: needs the PostgreSQL server")
    config.addinivalue_line("markers", parallel.MARKER_HELP)


def pytest_unconfigure(config: pytest.Config) -> None:
    parallel.unconfigure(config)


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """pytest-xdist (controller): hand each worker the run's lock directory."""
    parallel.configure_node(node.config, node.workerinput)


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item) -> Generator[None, None, None]:
    with parallel.turn(item):
        yield


def require_postgres() -> None:
    """Skip (or fail, when services are required) unless PostgreSQL answers."""
    reason = postgres_unavailable_reason()
    if reason is None:
        return
    if services_required():
        pytest.fail(f"{reason} (ROUTEKEEPER_REQUIRE_SERVICES=1)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture
def postgres_dsn() -> Iterator[str]:
    """The DSN of a fresh, empty PostgreSQL database, dropped after the test."""
    require_postgres()
    with fresh_postgres_database() as dsn:
        yield dsn


@pytest.fixture(name="redis_url")
def redis_url_fixture() -> str:
    """The URL of the test Redis (skips without it, unless ``ROUTEKEEPER_REQUIRE_SERVICES=1``
    makes it fail). Mark such tests ``redis``."""
    reason = redis_unavailable_reason()
    if reason is not None:
        if services_required():
            pytest.fail(f"{reason} (ROUTEKEEPER_REQUIRE_SERVICES=1)", pytrace=False)
        pytest.skip(reason)
    return redis_url()


@pytest.fixture(
    params=[pytest.param("sqlite"), pytest.param("postgres", marks=pytest.mark.postgres)]
)
def backend_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(
    params=[
        pytest.param("sqlite"),
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("memory"),
    ]
)
def any_backend_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _settings_on(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> Settings:
    from routekeeper.contract import SURFACES

    state: dict[str, Any]
    if kind == "postgres":
        dsn = request.getfixturevalue("postgres_dsn")
        state = {"backends": {"main": {"type": "postgres", "dsn": dsn}}}
    elif kind == "memory":
        state = {"backends": {"main": {"type": "memory"}}, "allow_ephemeral": list(SURFACES)}
    else:
        state = {"backends": {"main": {"type": "sqlite", "path": "state.db"}}}
    return load_settings(None, workspace=tmp_path / "workspace", overrides={"state": state})


@pytest.fixture
def state_settings(backend_kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> Settings:
    """Settings whose every surface is on one fresh backend of ``backend_kind``."""
    return _settings_on(backend_kind, tmp_path, request)


@pytest.fixture
def any_state_settings(
    any_backend_kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Settings:
    """Settings whose every surface is on one fresh backend of ``any_backend_kind``."""
    return _settings_on(any_backend_kind, tmp_path, request)


async def _opened(settings: Settings) -> AsyncIterator[Any]:
    from routekeeper.storage.state import StateStorage

    storage = StateStorage(settings)
    await storage.open()
    try:
        await storage.migrate()
        yield storage
    finally:
        await storage.close()


@pytest.fixture
async def state_storage(state_settings: Settings) -> AsyncIterator[Any]:
    """An opened, migrated StateStorage on the parametrized backend."""
    async for storage in _opened(state_settings):
        yield storage


@pytest.fixture
async def any_state_storage(any_state_settings: Settings) -> AsyncIterator[Any]:
    """An opened, migrated StateStorage on any backend kind (memory included)."""
    async for storage in _opened(any_state_settings):
        yield storage


@pytest.fixture(
    params=[pytest.param("sqlite"), pytest.param("postgres", marks=pytest.mark.postgres)]
)
def restart_backend(request: pytest.FixtureRequest) -> str:
    """The backend a restart test runs on: a SQLite workspace or a fresh PostgreSQL database
    (``state.mode: shared``)."""
    return str(request.param)


ServerFactory = Callable[..., ServerProcess]


@pytest.fixture
def server_factory(
    restart_backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[ServerFactory]:
    """Build ``routekeeper serve`` processes that all share one state on ``restart_backend``.

    ``server_factory(**config_sections)`` writes a config (the backend's ``state`` section
    plus the given sections, e.g. ``runtime={"heartbeat_seconds": 0.5}``) and returns a
    :class:`ServerProcess`, not yet started; ``workers=N`` makes it ``serve --workers N``.
    Every process (every worker too) is killed at teardown."""
    state: dict[str, Any]
    if restart_backend == "postgres":
        dsn = request.getfixturevalue("postgres_dsn")
        state = shared_postgres_state(dsn)
    else:
        state = {"backends": {"main": {"type": "sqlite", "path": "state.db"}}}
    workspace = tmp_path / "workspace"
    servers: list[ServerProcess] = []

    def make(*, workers: int | None = None, **sections: Any) -> ServerProcess:
        config = tmp_path / f"config-{len(servers)}.yaml"
        config.write_text(yaml.safe_dump({"state": state, **sections}))
        server = ServerProcess(workspace=workspace, config=config, workers=workers)
        servers.append(server)
        return server

    try:
        yield make
    finally:
        for server in servers:
            server.stop_quietly()
