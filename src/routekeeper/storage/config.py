"""The storage section of the settings (``state``): named backends, the surface bindings and
the mode. Storage reads its configuration through :class:`StorageConfig`, which
``routekeeper.settings.Settings`` satisfies; storage never imports the settings object (which
also holds the routing configuration)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from routekeeper.contract import SURFACES, BackendKind
from routekeeper.sections.base import Section

DEFAULT_BACKEND_NAME = "main"


class StorageConfig(Protocol):
    """What storage needs of the settings: the ``state`` section and the workspace."""

    @property
    def state(self) -> StateSettings: ...

    @property
    def workspace(self) -> Path: ...

    def resolve_path(self, path: Path) -> Path: ...


class SQLiteBackend(Section):
    """An embedded SQLite database file in WAL mode, one serialized writer."""

    type: Literal["sqlite"] = Field(
        "sqlite", description="`sqlite` selects an embedded SQLite database file."
    )
    path: Path = Field(Path("state.db"), description="Database file; relative to the workspace.")
    synchronous: Literal["OFF", "NORMAL", "FULL", "EXTRA"] = Field(
        "FULL",
        description=(
            "PRAGMA synchronous on every connection. FULL (the default) fsyncs the WAL at each "
            "commit, so an acknowledged write survives power loss; NORMAL is faster and "
            "survives a process crash but may lose the last commits on power loss."
        ),
    )
    busy_timeout_ms: int = Field(
        5000, ge=0, le=600_000, description="How long a writer waits for another one's lock."
    )
    read_pool_size: int = Field(
        4,
        ge=1,
        le=64,
        description="Connections for reads (API requests). Writes use the one writer "
        "connection and the crash sweep a reader connection of its own.",
    )
    pool_timeout_seconds: float = Field(
        10.0,
        gt=0,
        le=300,
        description="How long a read waits for a free connection before a 503 storage_busy "
        "with retry-after.",
    )

    @field_validator("synchronous", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value


class PostgresBackend(Section):
    """A PostgreSQL database shared by every replica."""

    type: Literal["postgres"] = Field(
        "postgres",
        description="`postgres` selects a PostgreSQL database (needs the `postgres` extra).",
    )
    dsn: str = Field(description="postgresql://user:password@host:port/database")
    pool_size: int = Field(
        10,
        ge=1,
        le=200,
        description="Connections for reads (API requests), at most. Writes (heartbeat, replay "
        "writer, phase changes) use a pool of their own (2, up to 4), the liveness lock one "
        "more session.",
    )
    pool_timeout_seconds: float = Field(
        10.0,
        gt=0,
        le=300,
        description="How long a read or write waits for a free pooled connection before a "
        "503 storage_busy with retry-after.",
    )
    connect_timeout_seconds: float = Field(
        5.0,
        gt=0,
        le=300,
        description="libpq's connect timeout, in whole seconds (cut down, at least 1); twice it "
        "bounds how long sent data may stay unacknowledged (tcp_user_timeout).",
    )

    @field_validator("dsn")
    @classmethod
    def _check_dsn(cls, value: str) -> str:
        scheme = urlsplit(value).scheme
        if scheme not in ("postgresql", "postgres", "postgresql+psycopg"):
            raise ValueError("must start with postgresql:// (or postgres://)")
        return value

    @property
    def redacted_dsn(self) -> str:
        return redact_dsn(self.dsn)


class MemoryBackend(Section):
    """In-memory SQLite on one connection: lost when the process exits."""

    type: Literal["memory"] = Field(
        "memory", description="`memory` selects an in-memory SQLite database, lost at exit."
    )


BackendSettings = Annotated[
    SQLiteBackend | PostgresBackend | MemoryBackend, Field(discriminator="type")
]


def _default_backends() -> dict[str, SQLiteBackend | PostgresBackend | MemoryBackend]:
    return {DEFAULT_BACKEND_NAME: SQLiteBackend()}


class SurfaceBinding(Section):
    backend: str = Field(description="The name of a backend in state.backends.")


class StateSettings(Section):
    mode: Literal["local", "shared"] = Field(
        "local", description="local: one node; shared: several replicas on one shared backend."
    )
    auto_migrate: bool = Field(
        True, description="Migrate an empty or older database at start; false refuses instead."
    )
    default_backend: str = Field(
        DEFAULT_BACKEND_NAME,
        description="The backend (a name in backends) of every surface not bound in surfaces.",
    )
    backends: dict[str, BackendSettings] = Field(
        default_factory=_default_backends,
        description="Backends by name (a letter, then up to 62 letters, digits, _ or -); at "
        "least one. Setting it replaces the default `main`.",
    )
    surfaces: dict[str, SurfaceBinding] = Field(
        default_factory=dict,
        description="Backend of a registered surface (e.g. router_replay), by surface name; "
        "others use default_backend.",
    )
    allow_ephemeral: list[str] = Field(
        default_factory=list,
        description="Durable surfaces the operator explicitly accepts on a memory backend.",
    )

    @field_validator("backends")
    @classmethod
    def _backend_names(cls, value: dict[str, Any]) -> dict[str, Any]:
        for name in value:
            if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]{0,62}", name):
                raise ValueError(f"backend name {name!r} must be a letter then letters/digits/_-")
        if not value:
            raise ValueError("at least one backend is required")
        return value

    @model_validator(mode="after")
    def _references(self) -> StateSettings:
        problems: list[tuple[tuple[str | int, ...], str]] = []
        if self.default_backend not in self.backends:
            problems.append(
                (("default_backend",), f"names unknown backend {self.default_backend!r}")
            )
        for surface, binding in self.surfaces.items():
            if surface not in SURFACES:
                problems.append((("surfaces", surface), _unknown_surface(surface)))
            elif binding.backend not in self.backends:
                problems.append(
                    (("surfaces", surface, "backend"), f"names unknown backend {binding.backend!r}")
                )
        for index, surface in enumerate(self.allow_ephemeral):
            if surface not in SURFACES:
                problems.append((("allow_ephemeral", index), _unknown_surface(surface)))
        if problems:
            # Raised as one error; load_settings() re-joins the paths.
            raise ValueError("; ".join(f"@{'.'.join(map(str, p))}: {m}" for p, m in problems))
        return self

    def backend_name_for(self, surface: str) -> str:
        binding = self.surfaces.get(surface)
        return binding.backend if binding else self.default_backend

    def backend_for(self, surface: str) -> SQLiteBackend | PostgresBackend | MemoryBackend:
        return self.backends[self.backend_name_for(surface)]

    def backend_kind(self, name: str) -> BackendKind:
        return BackendKind(self.backends[name].type)


def _unknown_surface(name: str) -> str:
    return f"unknown surface {name!r} (registered: {', '.join(SURFACES)})"


_USERINFO_PASSWORD = re.compile(
    r"^(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:@/?#]*:)(?P<secret>.*)@(?P<tail>[^@]*)$", re.DOTALL
)
_QUERY_PASSWORD = re.compile(r"(?i)([?&]password=)[^&]*")


def redact_dsn(dsn: str) -> str:
    """The DSN with any password replaced by ``***``: everything between ``user:`` and the
    last ``@`` (so unencoded ``#``, ``?``, ``/`` or ``@`` in a password stay hidden), and a
    ``password=`` query parameter."""
    match = _USERINFO_PASSWORD.match(dsn)
    if match:
        dsn = f"{match['head']}***@{match['tail']}"
    return _QUERY_PASSWORD.sub(r"\1***", dsn)
