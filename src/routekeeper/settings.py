"""The settings object: one YAML file (``--config``) plus ``ROUTEKEEPER_*`` environment
variables, built in ``main()`` or the app factory and passed down. Nothing here runs at import.

Environment variables override the file and use ``__`` between levels, e.g.
``ROUTEKEEPER_STATE__MODE=shared`` or ``ROUTEKEEPER_SERVER__PORT=9000``. Relative paths (SQLite
files) resolve against the workspace directory (``--workspace``, default ``./.routekeeper/``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeGuard

import yaml
from pydantic import BaseModel, Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from routekeeper.contract.errors import ConfigError
from routekeeper.routing.config import (
    DecisionConfig,
    EmbedderConfig,
    ModelConfig,
    SignalsConfig,
    routing_problems,
)
from routekeeper.sections.base import Section
from routekeeper.sections.jobs import JobsSettings
from routekeeper.sections.redis import RedisSettings
from routekeeper.sections.replay import ReplaySettings
from routekeeper.sections.responses import ResponsesSettings
from routekeeper.storage.config import StateSettings, redact_dsn

DEFAULT_WORKSPACE = Path(".routekeeper")
ENV_PREFIX = "ROUTEKEEPER_"


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
    host: str = Field("127.0.0.1", description="Address to listen on; `--host` overrides it.")
    port: int = Field(
        8080,
        ge=0,
        le=65535,
        description="TCP port to listen on; `--port` overrides it (0: a free port the OS picks).",
    )
    workers: int = Field(
        1,
        ge=1,
        le=64,
        description="Processes serving the one port, each its own replica (own id, liveness "
        "lock, heartbeat); `--workers` overrides it. Several workers may share the "
        "workspace's SQLite in `state.mode: local`; a memory backend needs 1.",
    )
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
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info",
        description="Level of the log on stderr (every logger, uvicorn's too); `debug` also "
        "logs each request (the access log).",
    )
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

    workspace: Path = Field(
        DEFAULT_WORKSPACE,
        description="Directory that relative paths (SQLite files) and replica lock files live "
        "in; made absolute at load.",
    )
    state: StateSettings = Field(
        default_factory=StateSettings,
        description="Where state lives: backends, surface bindings and the mode.",
    )
    runtime: RuntimeSettings = Field(
        default_factory=RuntimeSettings,
        description="Replica heartbeats, crash detection and runtime retention.",
    )
    server: ServerSettings = Field(
        default_factory=ServerSettings,
        description="The HTTP listener: address, shutdown, request limits and logging.",
    )
    # Routing (see routing/config.py and the README's routing section).
    models: list[ModelConfig] = Field(
        default_factory=list,
        description="The models requests can reach, each by name with its upstream backend.",
    )
    signals: SignalsConfig = Field(
        default_factory=SignalsConfig,
        description="What decisions' rules test in a request, by family.",
    )
    decisions: list[DecisionConfig] = Field(
        default_factory=list,
        description="Routing decisions, exactly one of them the default (without `when`); "
        "empty: nothing is routed and only configured model names are served.",
    )
    auto_model_names: list[str] = Field(
        default_factory=lambda: ["auto"],
        description="Model names a client asks for to be routed (served while a default "
        "decision exists); none may be a configured model's name.",
    )
    embedder: EmbedderConfig = Field(
        default_factory=EmbedderConfig,
        description="Where embedding signals get their vectors (used only when there are any).",
    )
    replay: ReplaySettings = Field(
        default_factory=ReplaySettings,
        description="Router replay: the record of every chat completion, its durability and "
        "retention.",
    )
    responses: ResponsesSettings = Field(
        default_factory=ResponsesSettings,
        description="Stored responses of /v1/responses: how long they are kept.",
    )
    jobs: JobsSettings = Field(
        default_factory=JobsSettings,
        description="Durable workflow jobs: job slots per process, heartbeats, leases, "
        "attempts, retention and the dataset directory.",
    )
    redis: RedisSettings = Field(
        default_factory=RedisSettings,
        description="The optional Redis server for live fan-out between replicas.",
    )

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

    @property
    def dataset_dir(self) -> Path:
        """Where server-side datasets live (``jobs.dataset_dir``, default
        ``<workspace>/datasets``)."""
        configured = self.jobs.dataset_dir
        return self.resolve_path(configured) if configured else self.workspace / "datasets"

    def resolve_path(self, path: Path) -> Path:
        """A configured path, absolute: relative ones live in the workspace."""
        path = path.expanduser()
        return path if path.is_absolute() else (self.workspace / path)


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
