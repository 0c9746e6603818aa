"""The settings object: one YAML file (``--config``) plus ``ROUTEKEEPER_*`` environment
variables, built in ``main()`` or the app factory and passed down. Nothing here runs at import.

Environment variables override the file and use ``__`` between levels, e.g.
``ROUTEKEEPER_STATE__MODE=shared`` or ``ROUTEKEEPER_SERVER__PORT=9000``. Relative paths (SQLite
files) resolve against the workspace directory (``--workspace``, default ``./.routekeeper/``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, TypeGuard
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from routekeeper.contract import SURFACES, BackendKind
from routekeeper.contract.errors import ConfigError
from routekeeper.routing.config import (
    DecisionConfig,
    EmbedderConfig,
    ModelConfig,
    SignalsConfig,
    routing_problems,
)
from routekeeper.sections.base import Section
from routekeeper.sections.replay import ReplaySettings

DEFAULT_WORKSPACE = Path(".routekeeper")
DEFAULT_BACKEND_NAME = "main"
ENV_PREFIX = "ROUTEKEEPER_"


class SQLiteBackend(Section):
    """An embedded SQLite database file in WAL mode, one serialized writer."""

    type: Literal["sqlite"] = "sqlite"
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

    type: Literal["postgres"] = "postgres"
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
    connect_timeout_seconds: float = Field(5.0, gt=0, le=300)

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

    type: Literal["memory"] = "memory"


BackendSettings = Annotated[
    SQLiteBackend | PostgresBackend | MemoryBackend, Field(discriminator="type")
]


def _default_backends() -> dict[str, SQLiteBackend | PostgresBackend | MemoryBackend]:
    return {DEFAULT_BACKEND_NAME: SQLiteBackend()}


class SurfaceBinding(Section):
    backend: str


class StateSettings(Section):
    mode: Literal["local", "shared"] = Field(
        "local", description="local: one node; shared: several replicas on one shared backend."
    )
    auto_migrate: bool = Field(
        True, description="Migrate an empty or older database at start; false refuses instead."
    )
    default_backend: str = DEFAULT_BACKEND_NAME
    backends: dict[str, BackendSettings] = Field(default_factory=_default_backends)
    surfaces: dict[str, SurfaceBinding] = Field(default_factory=dict)
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


class RuntimeSettings(Section):
    heartbeat_seconds: float = Field(
        2.0, gt=0, le=3600, description="Replica heartbeat (and crash sweep) period."
    )
    stale_after_seconds: float = Field(
        10.0,
        gt=0,
        le=86400,
        description="A replica whose heartbeat is older than this may be declared crashed.",
    )
    event_retention_days: int = Field(
        30, ge=1, le=3650, description="runtime_events older than this are pruned."
    )
    replica_retention_days: int = Field(
        7, ge=1, le=3650, description="Rows of stopped or failed replicas older than this go."
    )

    @model_validator(mode="after")
    def _stale_after_heartbeats(self) -> RuntimeSettings:
        if self.stale_after_seconds < 2 * self.heartbeat_seconds:
            raise ValueError(
                "@stale_after_seconds: must be at least twice heartbeat_seconds "
                f"({self.heartbeat_seconds}), or live replicas would be declared crashed"
            )
        return self


class ServerSettings(Section):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    graceful_timeout_seconds: float = Field(
        10.0, gt=0, le=3600, description="SIGTERM: time to drain before the replica stops."
    )
    drain_seconds: float = Field(
        0.0,
        ge=0,
        le=600,
        description=(
            "SIGTERM: keep accepting connections this long, answering /readyz 503, so a load "
            "balancer notices before the port closes (counts within graceful_timeout_seconds)."
        ),
    )
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    max_request_bytes: int = Field(
        16 * 1024 * 1024, ge=1024, description="Larger request bodies are refused (413)."
    )
    sse_ping_seconds: float = Field(
        15.0, gt=0, le=3600, description="A `: ping` comment after this much stream silence."
    )

    @model_validator(mode="after")
    def _drain_within_budget(self) -> ServerSettings:
        if self.drain_seconds >= self.graceful_timeout_seconds:
            raise ValueError(
                "@drain_seconds: must be shorter than graceful_timeout_seconds "
                f"({self.graceful_timeout_seconds})"
            )
        return self


class Settings(BaseSettings):
    """Everything routekeeper is configured with. Build it with :func:`load_settings`."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    workspace: Path = DEFAULT_WORKSPACE
    state: StateSettings = Field(default_factory=StateSettings)
    runtime: RuntimeSettings = Field(default_factory=RuntimeSettings)
    server: ServerSettings = Field(default_factory=ServerSettings)
    # Routing (see routing/config.py and the README's routing section).
    models: list[ModelConfig] = Field(default_factory=list)
    signals: SignalsConfig = Field(default_factory=SignalsConfig)
    decisions: list[DecisionConfig] = Field(default_factory=list)
    auto_model_names: list[str] = Field(default_factory=lambda: ["auto"])
    embedder: EmbedderConfig = Field(default_factory=EmbedderConfig)
    replay: ReplaySettings = Field(default_factory=ReplaySettings)

    @model_validator(mode="after")
    def _routing_references(self) -> Settings:
        problems = routing_problems(
            self.models, self.signals, self.decisions, self.auto_model_names
        )
        if problems:
            raise ValueError("; ".join(f"@{p}" for p in problems))
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The YAML file arrives as init kwargs; the environment overrides it.
        return (env_settings, init_settings)

    def resolve_path(self, path: Path) -> Path:
        """A configured path, absolute: relative ones live in the workspace."""
        path = path.expanduser()
        return path if path.is_absolute() else (self.workspace / path)


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


_SECRET_KEYS = {"dsn", "password", "api_key"}
_UNION_TAGS = {"sqlite", "postgres", "memory", "openai", "echo"}


def _format_problem(error: dict[str, Any]) -> list[str]:
    loc = [str(part) for part in error.get("loc", ())]
    # Discriminated unions add the tag (e.g. "sqlite", "openai") to the location: drop it.
    loc = [
        part
        for i, part in enumerate(loc)
        if not (
            part in _UNION_TAGS
            and i > 0
            and (loc[i - 1] == "backend" or (i > 1 and loc[i - 2] == "backends"))
        )
    ]
    message = str(error.get("msg", "invalid value"))
    if message.startswith("Value error, "):
        message = message.removeprefix("Value error, ")
    if message.startswith("@"):
        # A model validator reporting several paths under its own location.
        base = ".".join(loc)
        out = []
        for part in message.split("; @"):
            path, _, text = part.removeprefix("@").partition(": ")
            full = ".".join(p for p in (base, path) if p) or "(top level)"
            out.append(f"{full}: {text}")
        return out
    path = ".".join(loc) or "(top level)"
    if error.get("type") == "extra_forbidden":
        return [f"{path}: unknown key"]
    value = error.get("input")
    shown = ""
    if error.get("type") not in ("missing",) and not isinstance(value, dict | list):
        if loc and loc[-1] in _SECRET_KEYS and isinstance(value, str):
            value = redact_dsn(value) if "://" in value else "***"
        shown = f" (got {value!r})"
    return [f"{path}: {message}{shown}"]


def read_config_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([f"config file {path} does not exist"]) from None
    except OSError as exc:
        raise ConfigError([f"cannot read config file {path}: {exc.strerror}"]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(
            [f"not valid YAML{where}: {getattr(exc, 'problem', exc)}"], source=str(path)
        ) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(["(top level): must be a mapping of keys"], source=str(path))
    return data


def environment_problems(environ: Mapping[str, str]) -> list[str]:
    """``ROUTEKEEPER_<SECTION>__<KEY>`` variables naming a section or key that does not exist
    (pydantic-settings would silently ignore an unknown section). Names without ``__`` are
    not settings keys (``ROUTEKEEPER_CONFIG``, ``ROUTEKEEPER_URL``, ...) and are never
    refused; keys below the second level are checked by the models themselves."""
    problems = []
    sections = Settings.model_fields
    for name in sorted(environ):
        if not name.upper().startswith(ENV_PREFIX) or "__" not in name:
            continue
        section, _, rest = name[len(ENV_PREFIX) :].lower().partition("__")
        key = rest.partition("__")[0]
        field = sections.get(section)
        if field is None:
            known = ", ".join(sorted(n for n, f in sections.items() if _is_model(f.annotation)))
            problems.append(f"{section}: unknown key (from {name}; the sections are {known})")
            continue
        model = field.annotation
        if not _is_model(model):
            problems.append(f"{section}: has no keys below it (from {name})")
        elif key not in model.model_fields:
            known = ", ".join(model.model_fields)
            problems.append(f"{section}.{key}: unknown key (from {name}; {section} has {known})")
    return problems


def _is_model(annotation: Any) -> TypeGuard[type[BaseModel]]:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def config_problems(exc: ValidationError, *, under: tuple[str, ...] = ()) -> list[str]:
    """A validation error's problems as ``key.path: message`` lines, the way a refused
    configuration file reports them; ``under`` is the path of the validated section."""
    return [
        line
        for err in exc.errors()
        for line in _format_problem({**err, "loc": (*under, *err.get("loc", ()))})
    ]


def load_settings(
    config: Path | None = None,
    *,
    workspace: Path | None = None,
    overrides: dict[str, Any] | None = None,
) -> Settings:
    """Build the settings: the YAML file, then ``ROUTEKEEPER_*`` variables, then ``workspace``
    (the ``--workspace`` flag wins over both). Raises :class:`ConfigError` listing every
    offending key path."""
    data: dict[str, Any] = read_config_file(config) if config is not None else {}
    if "workspace" in data:
        raise ConfigError(
            [
                "workspace: unknown key (the workspace is chosen with --workspace or "
                "ROUTEKEEPER_WORKSPACE, not in the file)"
            ],
            source=str(config),
        )
    if overrides:
        data = {**data, **overrides}
    from_environment = environment_problems(os.environ)
    if from_environment:
        raise ConfigError(from_environment, source="the environment")
    try:
        settings = Settings(**data)
    except ValidationError as exc:
        problems = [line for err in exc.errors() for line in _format_problem(dict(err))]
        raise ConfigError(problems, source=str(config) if config else None) from None
    if workspace is not None:
        settings = settings.model_copy(update={"workspace": workspace})
    return settings.model_copy(update={"workspace": settings.workspace.expanduser().absolute()})
