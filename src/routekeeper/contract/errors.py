"""The error tree. Drivers and frameworks raise their own exceptions; the storage and HTTP
edges translate them into these, and the API layers turn these into one envelope per surface.

    RoutekeeperError
    ├── ConfigError                 bad configuration file or environment (path of the key)
    ├── ContractViolation           configuration breaks the state contract
    ├── NotFound                    a named entity does not exist              (404)
    │   └── ModelNotFound           a model neither configured nor an auto name (404)
    ├── InvalidRequest              bad input from a client                    (400)
    ├── Unauthenticated             no usable API key                          (401)
    ├── Forbidden                   the key's role may not call this route     (403)
    ├── RateLimited                 the key's requests per minute are used up  (429)
    ├── NotReady                    the replica is not ready to serve yet      (503)
    ├── ShuttingDown                the shutdown budget ended the request      (503)
    ├── UpstreamError               an upstream model failed (its own status, 502, 504;
    │                               ``routekeeper.upstream.errors``)
    ├── EmbedderUnavailable         an embedder cannot embed (503; ``routing.embedders``)
    └── StorageError                anything the storage layer could not do    (500)
        ├── StorageUnavailable      the database cannot be reached right now   (503)
        │   └── StorageBusy         SQLite stayed locked past busy_timeout      (503)
        ├── StorageConflict         a uniqueness or foreign-key rule refused a write (409)
        ├── InvalidValue            the database refused a value (e.g. a NUL byte)  (400)
        ├── SchemaNotReady          the schema is missing or older than the code (503)
        ├── SchemaTooNew            the database was migrated by newer code     (503)
        └── InvalidTransition       a lifecycle change not in the allowed table (409)
"""

from __future__ import annotations

from typing import Any


class RoutekeeperError(Exception):
    code = "internal_error"
    status = 500
    param: str | None = None
    """The request field or parameter the error is about (OpenAI's ``param``), if any."""
    retry_after: int | None = None
    """Seconds after which retrying may succeed (sent as ``retry-after``), for errors about
    a passing condition."""

    def __init__(self, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}

    def headers(self) -> dict[str, str]:
        """Response headers the error's answer carries (``retry-after``)."""
        return {"retry-after": str(self.retry_after)} if self.retry_after is not None else {}


class ConfigError(RoutekeeperError):
    code = "invalid_config"
    status = 500

    def __init__(self, problems: list[str], *, source: str | None = None) -> None:
        self.problems = problems
        self.source = source
        where = f" in {source}" if source else ""
        super().__init__(
            f"invalid configuration{where}:\n" + "\n".join(f"  - {p}" for p in problems),
            details={"problems": problems},
        )


class ContractViolation(RoutekeeperError):
    code = "contract_violation"
    status = 500

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(
            "the configuration breaks the state contract:\n"
            + "\n".join(f"  - {p}" for p in problems),
            details={"problems": problems},
        )


class NotFound(RoutekeeperError):
    code = "not_found"
    status = 404


class ModelNotFound(NotFound):
    code = "model_not_found"
    param = "model"


class NotReady(RoutekeeperError):
    code = "not_ready"
    status = 503
    retry_after = 1


class ShuttingDown(RoutekeeperError):
    code = "server_shutting_down"
    status = 503
    retry_after = 1


class InvalidRequest(RoutekeeperError):
    code = "invalid_request"
    status = 400

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        details: dict[str, Any] | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message, details=details)
        self.param = param
        if code is not None:
            self.code = code


class Unauthenticated(RoutekeeperError):
    """A request without a usable API key (missing, malformed, unknown, revoked, expired)."""

    code = "invalid_api_key"
    status = 401

    def headers(self) -> dict[str, str]:
        return {"www-authenticate": "Bearer"}


class Forbidden(RoutekeeperError):
    code = "permission_denied"
    status = 403


class RateLimited(RoutekeeperError):
    code = "rate_limit_exceeded"
    status = 429

    def __init__(self, message: str, *, retry_after: int, headers: dict[str, str]) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self._headers = headers

    def headers(self) -> dict[str, str]:
        return {**self._headers, "retry-after": str(self.retry_after)}


class StorageError(RoutekeeperError):
    code = "storage_error"
    status = 500


class StorageUnavailable(StorageError):
    code = "storage_unavailable"
    status = 503
    retry_after = 1


class StorageBusy(StorageUnavailable):
    code = "storage_busy"


class StorageConflict(StorageError):
    code = "conflict"
    status = 409


class InvalidValue(StorageError):
    code = "invalid_value"
    status = 400


class SchemaNotReady(StorageError):
    code = "schema_not_ready"
    status = 503


class SchemaTooNew(StorageError):
    code = "schema_too_new"
    status = 503


class InvalidTransition(StorageError):
    code = "invalid_transition"
    status = 409
