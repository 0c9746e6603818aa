"""API keys, tenants and the audit of key events.

A key belongs to one tenant and has one role: ``member`` keys reach ``/v1`` and see only
their tenant's state; ``admin`` keys reach everything (``/api`` included) and see every
tenant. The secret is 32 random bytes shown once; only its SHA-256 is stored, so checking a
request costs one hash. Key events (created, revoked, expired, used after revoke) are typed
audit events, appended in the transaction of the change they describe."""

from __future__ import annotations

import base64
import enum
import hashlib
import re
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from routekeeper.contract.classes import StateClass
from routekeeper.contract.surface import Owner, Retention, Surface, WriteMode, Writes

DEFAULT_TENANT = "default"
"""The tenant of everything when auth is off, and of every row written before it was on."""

SECRET_PREFIX = "rk_"
SECRET_BYTES = 32
TENANT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
_TENANT = re.compile(TENANT_PATTERN)
LABEL_MAX = 200


class Role(enum.StrEnum):
    ADMIN = "admin"
    MEMBER = "member"


class Access(enum.StrEnum):
    """Who may call a route: anyone, any valid key, or an admin key (``auth.mode: none``
    opens everything)."""

    OPEN = "open"
    MEMBER = "member"
    ADMIN = "admin"


@dataclass(frozen=True)
class Principal:
    """Who a request acts for: a tenant, the key that proved it (None with auth off), and
    whether it may see every tenant."""

    tenant: str
    key_id: str | None
    role: Role
    requests_per_minute: int | None = None

    @property
    def admin(self) -> bool:
        return self.role is Role.ADMIN

    def tenant_filter(self, requested: str | None) -> str | None:
        """The tenant an ``/api`` read is limited to: an admin's ``tenant=`` (None: every
        tenant), a member's own tenant whatever it asked."""
        return requested if self.admin else self.tenant


ANONYMOUS = Principal(DEFAULT_TENANT, None, Role.ADMIN)
"""Every request with ``auth.mode: none``: tenant ``default``, everything open."""


@dataclass(frozen=True)
class ApiKeyRecord:
    """One API key. ``secret_hash`` is the SHA-256 (hex) of the secret; the secret itself is
    never stored. ``last_used_at`` is written at most once a minute per key."""

    id: str
    tenant_id: str
    label: str
    role: Role
    secret_hash: str
    created_at: datetime
    expires_at: datetime | None = None
    revoked_at: datetime | None = None
    last_used_at: datetime | None = None
    requests_per_minute: int | None = None

    def principal(self) -> Principal:
        return Principal(self.tenant_id, self.id, self.role, self.requests_per_minute)


class AuditEventKind(enum.StrEnum):
    KEY_CREATED = "key.created"
    KEY_REVOKED = "key.revoked"
    KEY_EXPIRED = "key.expired"
    KEY_USED_AFTER_REVOKE = "key.used_after_revoke"


@dataclass(frozen=True)
class AuditEvent:
    """A typed audit fact. ``key_id`` is the key it is about; ``actor_key_id`` the key that
    did it (None: the CLI on the state directly, or routekeeper itself)."""

    id: str
    kind: AuditEventKind
    occurred_at: datetime
    tenant_id: str
    key_id: str | None = None
    actor_key_id: str | None = None
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AuditFilters:
    """What ``GET /api/audit`` selects (every filter backed by an index)."""

    kind: AuditEventKind | None = None
    key_id: str | None = None
    tenant_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None


def new_secret() -> str:
    """A fresh key secret: ``rk_`` and 32 random bytes, URL-safe base64 (43 characters)."""
    raw = secrets.token_bytes(SECRET_BYTES)
    return SECRET_PREFIX + base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


SECRET_LENGTH = len(SECRET_PREFIX) + 43
_SECRET = re.compile(rf"^{SECRET_PREFIX}[A-Za-z0-9_-]{{43}}$")


def well_formed_secret(value: str) -> bool:
    return len(value) == SECRET_LENGTH and _SECRET.match(value) is not None


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("ascii")).hexdigest()


def check_tenant(value: str) -> str:
    """``value`` when it is a tenant name (1-64 letters, digits, ``.``, ``_``, ``-``,
    starting with a letter or digit), else ValueError saying so."""
    if not _TENANT.match(value):
        raise ValueError(
            f"tenant must be 1-64 letters, digits, '.', '_' or '-', starting with a letter "
            f"or digit (got {value!r})"
        )
    return value


_DURATION = re.compile(r"^([0-9]{1,6})([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
MAX_DURATION = timedelta(days=100 * 365)


def parse_duration(value: str) -> timedelta:
    """``30d``, ``12h``, ``90m``, ``2w``, ``45s`` as a timedelta (at most 100 years);
    ValueError otherwise."""
    match = _DURATION.match(value.strip())
    if not match or int(match.group(1)) == 0:
        raise ValueError(f"a duration is a positive number and s, m, h, d or w (got {value!r})")
    duration = timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])
    if duration > MAX_DURATION:
        raise ValueError(f"a duration is at most 100 years (got {value!r})")
    return duration


API_KEYS = Surface(
    name="api_keys",
    owner=Owner.DASHBOARD,
    state_class=StateClass.SHARED_DURABLE_WORKFLOW_STATE,
    stores=(
        "One row per API key: tenant, label, role, the SHA-256 of its secret (never the "
        "secret), created/expires/revoked/last-used times, its requests-per-minute limit."
    ),
    restart_expectation=(
        "Every key whose secret was shown is there after SIGTERM and SIGKILL, and every "
        "revocation that was answered stays revoked; last-used times may lag by a minute."
    ),
    recovery=(
        "Keys whose expiry passed while no replica ran get their key.expired audit event "
        "(also checked every minute while running)."
    ),
    id_prefix="key",
    tenant_scoped=True,
    writes=Writes(WriteMode.ACKNOWLEDGED),
    retention=None,
    recovery_step=True,
)
"""Kept until deleted: revoked and expired keys stay, so their audit trail keeps its key."""

AUDIT_EVENTS = Surface(
    name="audit_events",
    owner=Owner.DASHBOARD,
    state_class=StateClass.AUDIT_ANALYTICS_TELEMETRY,
    stores=(
        "Typed audit events: key created, revoked, expired, used after revoke; each with "
        "its tenant, the key it is about and the key that acted."
    ),
    restart_expectation="Every committed event is kept, in order, until retention removes it.",
    recovery="Nothing to repair: events are appended in the transaction of their change.",
    colocated_with="api_keys",
    id_prefix="aud",
    tenant_scoped=True,
    writes=Writes(WriteMode.ACKNOWLEDGED),
    retention=Retention(max_age_days="auth.audit_retention_days"),
)
