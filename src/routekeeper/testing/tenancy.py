"""How to make one object of every tenant-scoped surface through the public API, for tests
that prove tenant isolation on every route (``tests/test_tenant_isolation.py``).

    clients = TenantClients(tenant="alpha", member=..., admin=..., model="scribe")
    values = EXAMPLES["responses"].create(clients)      # {"response_id": "resp_..."}

A test walks every path of /openapi.json that takes an id (``{response_id}``, ...): each
path parameter must be named by an example here (or be listed in :data:`SHARED_PARAMS`:
things every tenant shares), and every id-taking operation with a body must have one in
:data:`EXAMPLE_BODIES`, or the test fails. A new tenant-scoped surface (files, vector stores,
jobs) adds its :class:`TenantExample` to :data:`EXAMPLES` (keyed by its surface name, listing
every surface the object it makes belongs to) and the bodies of its id-taking writes to
:data:`EXAMPLE_BODIES`.

Also here: :func:`create_key`, the first (admin) key of a state made with the CLI, as an
operator does it.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

SHARED_SESSION = "shared-session"
"""The ``x-session-id`` of every tenant's replay example: one session name used by two
tenants, so a session read limited to one tenant must leave the other's records out."""


@dataclass(frozen=True)
class TenantClients:
    """What an example needs: the tenant, a client with one of its member keys, a client
    with an admin key (for what only ``/api`` shows), and a model name to ask for."""

    tenant: str
    member: httpx.Client
    admin: httpx.Client
    model: str


@dataclass(frozen=True)
class TenantExample:
    """Makes one object as ``clients.tenant`` and returns the values that name it: every
    path parameter in ``params`` (and any other id the object has)."""

    surfaces: tuple[str, ...]
    params: tuple[str, ...]
    create: Callable[[TenantClients], dict[str, str]]


def _ok(response: httpx.Response) -> dict[str, Any]:
    if response.status_code >= 300:
        raise AssertionError(
            f"{response.request.method} {response.request.url} -> "
            f"{response.status_code}: {response.text}"
        )
    body: dict[str, Any] = response.json()
    return body


def _response(clients: TenantClients) -> dict[str, str]:
    created = _ok(
        clients.member.post(
            "/v1/responses",
            json={"model": clients.model, "input": f"a question of {clients.tenant}"},
        )
    )
    return {"response_id": created["id"]}


def _conversation(clients: TenantClients) -> dict[str, str]:
    created = _ok(
        clients.member.post(
            "/v1/conversations",
            json={"items": [{"role": "user", "content": f"hello from {clients.tenant}"}]},
        )
    )
    items = _ok(clients.member.get(f"/v1/conversations/{created['id']}/items"))
    return {"conversation_id": created["id"], "item_id": items["data"][0]["id"]}


def _replay(clients: TenantClients, timeout: float = 20.0) -> dict[str, str]:
    response = clients.member.post(
        "/v1/chat/completions",
        json={
            "model": clients.model,
            "messages": [{"role": "user", "content": f"routed for {clients.tenant}"}],
        },
        headers={"x-session-id": SHARED_SESSION},
    )
    _ok(response)
    replay_id = response.headers["x-routekeeper-replay-id"]
    deadline = time.monotonic() + timeout
    while clients.admin.get(f"/api/replay/{replay_id}").status_code != 200:
        if time.monotonic() > deadline:
            raise AssertionError(f"replay record {replay_id} not readable after {timeout}s")
        time.sleep(0.05)
    return {"replay_id": replay_id, "session_id": SHARED_SESSION}


def _api_key(clients: TenantClients) -> dict[str, str]:
    created = _ok(
        clients.admin.post(
            "/api/keys", json={"tenant": clients.tenant, "label": f"example of {clients.tenant}"}
        )
    )
    events = _ok(clients.admin.get("/api/audit", params={"key_id": created["id"]}))
    return {"key_id": created["id"], "audit_event_id": events["data"][0]["id"]}


def _job(clients: TenantClients) -> dict[str, str]:
    created = _ok(
        clients.admin.post(
            "/api/jobs",
            json={
                "kind": "evaluation",
                "params": {"dataset": [{"prompt": "hello", "expected_model": clients.model}]},
                "tenant": clients.tenant,
            },
        )
    )
    return {"job_id": created["id"]}


EXAMPLES: dict[str, TenantExample] = {
    "responses": TenantExample(("responses", "response_items"), ("response_id",), _response),
    "conversations": TenantExample(
        ("conversations", "conversation_items"), ("conversation_id", "item_id"), _conversation
    ),
    "router_replay": TenantExample(("router_replay",), ("replay_id", "session_id"), _replay),
    "api_keys": TenantExample(("api_keys", "audit_events"), ("key_id",), _api_key),
    "jobs": TenantExample(("jobs", "job_events", "evaluation_results"), ("job_id",), _job),
}
"""One example per tenant-scoped object kind, keyed by the surface it makes."""

SHARED_PARAMS: dict[str, str] = {
    "model_id": "configured models (and auto names) are the same for every tenant",
}
"""Path parameters that name something every tenant shares, with the reason."""

EXAMPLE_BODIES: dict[str, Any] = {
    "update_conversation": {"metadata": {"topic": "isolation"}},
    "create_conversation_items": {"items": [{"role": "user", "content": "one more"}]},
}
"""A valid request body for each id-taking operation that has one (by operation id)."""


def examples_for(params: list[str]) -> list[TenantExample]:
    """The examples that name ``params`` (each once); KeyError naming a parameter no
    example names."""
    chosen: list[TenantExample] = []
    for param in params:
        found = [e for e in EXAMPLES.values() if param in e.params]
        if not found:
            raise KeyError(param)
        if found[0] not in chosen:
            chosen.append(found[0])
    return chosen


def keys_cli(workspace: Path, config: Path | None, *args: str) -> list[str]:
    """``routekeeper keys ARGS`` on the state directly (as an operator runs it); its stdout
    lines (AssertionError with its stderr when it fails)."""
    command = [sys.executable, "-m", "routekeeper", "keys", *args, "--workspace", str(workspace)]
    if config is not None:
        command += ["--config", str(config)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise AssertionError(f"keys {' '.join(args)} failed ({done.returncode}): {done.stderr}")
    return done.stdout.strip().splitlines()


def create_key(
    workspace: Path,
    config: Path | None,
    tenant: str,
    *,
    role: str = "member",
    rpm: int | None = None,
) -> tuple[str, str]:
    """``routekeeper keys create``: the key's id (its first line) and its secret (its last)."""
    flags = ["--tenant", tenant, "--role", role] + (["--rpm", str(rpm)] if rpm else [])
    lines = keys_cli(workspace, config, "create", *flags)
    return lines[0], lines[-1]


def bearer(secret: str) -> dict[str, str]:
    return {"authorization": f"Bearer {secret}"}
