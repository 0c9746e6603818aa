"""Two tenants, alpha and beta, each with its own member key, on a real server in ``api_key``
mode (SQLite and PostgreSQL) with the fake upstream: each reads and lists only its own
responses, conversations and items through ``/v1`` (the official SDK where it has the call);
every id of the other tenant, in a path or in a body, is a 404 whose body equals the one for
an id that never existed, apart from the id. Every id-taking route of /openapi.json is walked
with the examples ``routekeeper.testing.tenancy`` registers; a route whose id has no example
fails. ``/api`` routes (admin only) are walked with an admin key and their ``tenant=``
filters checked."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import openai
import pytest
import yaml

from routekeeper.contract import SURFACES
from routekeeper.contract.ids import new_id
from routekeeper.testing import FakeUpstream, ServerProcess, shared_postgres_state
from routekeeper.testing.backends import fresh_postgres_database
from routekeeper.testing.pytest_plugin import require_postgres
from routekeeper.testing.tenancy import (
    EXAMPLE_BODIES,
    EXAMPLES,
    SHARED_PARAMS,
    TenantClients,
    create_key,
    examples_for,
)

pytestmark = pytest.mark.slow
MODEL = "scribe"
PARAM = re.compile(r"{([^}:]+)(?::[^}]*)?}")


@dataclass
class World:
    server: ServerProcess
    alpha: TenantClients
    beta: TenantClients
    keys: dict[str, tuple[str, str]]
    """tenant -> (key id, secret) of its member key; ``admin`` -> the admin key."""
    upstream: FakeUpstream


def _client(server: ServerProcess, secret: str) -> httpx.Client:
    return httpx.Client(
        base_url=server.url, headers={"authorization": f"Bearer {secret}"}, timeout=30
    )


def _state(kind: str, stack: list[Any]) -> dict[str, Any]:
    if kind == "sqlite":
        return {"backends": {"main": {"type": "sqlite", "path": "state.db"}}}
    require_postgres()
    database = fresh_postgres_database()
    stack.append(database)
    return shared_postgres_state(database.__enter__())


@pytest.fixture(
    scope="module",
    params=[pytest.param("sqlite"), pytest.param("postgres", marks=pytest.mark.postgres)],
)
def world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    root = tmp_path_factory.mktemp(f"isolation-{request.param}")
    stack: list[Any] = []
    with FakeUpstream(models=["m"]) as upstream:
        config = root / "config.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "state": _state(request.param, stack),
                    "auth": {"mode": "api_key"},
                    "models": [
                        {
                            "name": MODEL,
                            "backend": {
                                "type": "openai",
                                "base_url": upstream.base_url,
                                "model": "m",
                            },
                        }
                    ],
                    "decisions": [{"name": "default", "model": MODEL}],
                }
            )
        )
        workspace = root / "ws"
        keys = {"admin": create_key(workspace, config, "ops", role="admin")}
        server = ServerProcess(workspace=workspace, config=config).start()
        admin = _client(server, keys["admin"][1])
        clients = {}
        try:
            for tenant in ("alpha", "beta"):
                created = admin.post("/api/keys", json={"tenant": tenant, "label": tenant})
                assert created.status_code == 201, created.text
                keys[tenant] = (created.json()["id"], created.json()["secret"])
                clients[tenant] = TenantClients(
                    tenant, _client(server, keys[tenant][1]), admin, MODEL
                )
            yield World(server, clients["alpha"], clients["beta"], keys, upstream)
        finally:
            for c in clients.values():
                c.member.close()
            admin.close()
            server.stop_quietly()
            for database in stack:
                database.__exit__(None, None, None)


def _sdk(world: World, tenant: str) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{world.server.url}/v1",
        api_key=world.keys[tenant][1],
        _strict_response_validation=True,
        max_retries=0,
    )


def _id_paths(spec: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any], list[str]]]:
    for path, operations in spec["paths"].items():
        params = PARAM.findall(path)
        if not params:
            continue
        for method, operation in operations.items():
            yield path, method.upper(), operation, params


def _call(
    client: httpx.Client, method: str, path: str, values: dict[str, str], body: Any
) -> httpx.Response:
    url = PARAM.sub(lambda m: values[m.group(1)], path)
    return (
        client.request(method, url, json=body) if body is not None else client.request(method, url)
    )


def _normalized(response: httpx.Response, values: dict[str, str]) -> str:
    text = response.text
    for name, value in values.items():
        text = text.replace(value, "{" + name + "}")
    return text


def _never_existed(values: dict[str, str]) -> dict[str, str]:
    return {name: new_id(value.split("_", 1)[0]) for name, value in values.items()}


def test_every_tenant_scoped_surface_has_an_example():
    covered = {s for example in EXAMPLES.values() for s in example.surfaces}
    scoped = {s.name for s in SURFACES.values() if s.tenant_scoped}
    assert scoped - covered == set(), "tenant-scoped surfaces without an example"


def test_every_id_of_the_other_tenant_is_a_404_like_one_that_never_existed(world):
    spec = httpx.get(f"{world.server.url}/openapi.json").json()
    problems: list[str] = []
    walked = []
    for path, method, operation, params in _id_paths(spec):
        label = f"{method} {path}"
        access = operation.get("x-routekeeper-access")
        if all(p in SHARED_PARAMS for p in params):
            continue
        try:
            examples = examples_for([p for p in params if p not in SHARED_PARAMS])
        except KeyError as missing:
            problems.append(f"{label}: no example names {{{missing.args[0]}}}")
            continue
        body = EXAMPLE_BODIES.get(operation["operationId"])
        if "requestBody" in operation and body is None:
            problems.append(f"{label}: no body in EXAMPLE_BODIES[{operation['operationId']!r}]")
            continue
        values: dict[str, str] = {}
        for example in examples:
            values.update(example.create(world.alpha))
        values = {p: values[p] for p in params}
        walked.append(label)
        if access == "admin":
            # /api: admin keys see every tenant; a member key is refused whatever the id.
            refused = _call(world.beta.member, method, path, values, body)
            if refused.status_code != 403 or refused.json()["error"]["code"] != "permission_denied":
                problems.append(f"{label} with a member key: {refused.status_code} {refused.text}")
            # Found and acted on, or found in a state that refuses the act (409: cancelling
            # a job that already finished).
            admitted = _call(world.alpha.admin, method, path, values, body)
            if admitted.status_code not in (200, 409):
                problems.append(f"{label} with an admin key: {admitted.status_code}")
            continue
        assert access == "member", label
        other = _call(world.beta.member, method, path, values, body)
        unknown_values = _never_existed(values)
        unknown = _call(world.beta.member, method, path, unknown_values, body)
        if other.status_code != 404 or unknown.status_code != 404:
            problems.append(
                f"{label}: other tenant's id -> {other.status_code} {other.text}, "
                f"an unknown id -> {unknown.status_code}"
            )
        elif _normalized(other, values) != _normalized(unknown, unknown_values):
            problems.append(f"{label}: {other.text} differs from {unknown.text}")
        own = _call(world.alpha.member, method, path, values, body)
        if own.status_code != 200:
            problems.append(f"{label} by its own tenant: {own.status_code} {own.text}")
    assert problems == []
    assert len(walked) >= 12, walked


def test_ids_in_bodies_of_the_other_tenant_are_404_like_unknown_ones(world):
    previous = EXAMPLES["responses"].create(world.alpha)["response_id"]
    conversation = EXAMPLES["conversations"].create(world.alpha)["conversation_id"]
    for field, value in (("previous_response_id", previous), ("conversation", conversation)):
        unknown = new_id(value.split("_", 1)[0])
        for stream in (False, True):
            answers = [
                world.beta.member.post(
                    "/v1/responses",
                    json={"model": MODEL, "input": "hi", field: v, "stream": stream},
                )
                for v in (value, unknown)
            ]
            assert [a.status_code for a in answers] == [404, 404], [a.text for a in answers]
            assert answers[0].json()["error"]["param"] == field
            assert answers[0].text.replace(value, "ID") == answers[1].text.replace(unknown, "ID")
    # The SDK sees the same 404; the owner's turn goes through.
    beta = _sdk(world, "beta")
    with pytest.raises(openai.NotFoundError):
        beta.responses.create(model=MODEL, input="x", previous_response_id=previous)
    with pytest.raises(openai.NotFoundError):
        beta.responses.create(model=MODEL, input="x", conversation=conversation)
    alpha = _sdk(world, "alpha")
    assert alpha.responses.create(model=MODEL, input="x", previous_response_id=previous).id
    assert alpha.responses.create(model=MODEL, input="x", conversation=conversation).id


def test_each_tenant_reads_and_lists_only_its_own(world):
    sdks = {t: _sdk(world, t) for t in ("alpha", "beta")}
    made: dict[str, dict[str, Any]] = {}
    for tenant, sdk in sdks.items():
        response = sdk.responses.create(
            model=MODEL, input=[{"role": "user", "content": f"{tenant} asks"}]
        )
        conversation = sdk.conversations.create(
            items=[{"role": "user", "content": f"{tenant} talks"}], metadata={"owner": tenant}
        )
        sdk.conversations.items.create(
            conversation.id, items=[{"role": "user", "content": f"{tenant} again"}]
        )
        made[tenant] = {"response": response, "conversation": conversation}
    for tenant, sdk in sdks.items():
        other = "beta" if tenant == "alpha" else "alpha"
        own, theirs = made[tenant], made[other]
        assert sdk.responses.retrieve(own["response"].id).id == own["response"].id
        texts = [i.content[0].text for i in sdk.responses.input_items.list(own["response"].id)]
        assert texts == [f"{tenant} asks"]
        assert sdk.conversations.retrieve(own["conversation"].id).metadata == {"owner": tenant}
        items = list(sdk.conversations.items.list(own["conversation"].id, order="asc"))
        assert [i.content[0].text for i in items] == [f"{tenant} talks", f"{tenant} again"]
        _all_not_found(sdk, theirs)
    # Nothing the other tenant tried changed anything.
    for tenant, sdk in sdks.items():
        assert sdk.responses.retrieve(made[tenant]["response"].id).status == "completed"
        assert sdk.conversations.retrieve(made[tenant]["conversation"].id).id


def _all_not_found(sdk: openai.OpenAI, theirs: dict[str, Any]) -> None:
    """Every read and delete of another tenant's response and conversation is a 404."""
    response, conversation = theirs["response"].id, theirs["conversation"].id
    for call in (
        lambda: sdk.responses.retrieve(response),
        lambda: list(sdk.responses.input_items.list(response)),
        lambda: sdk.conversations.retrieve(conversation),
        lambda: list(sdk.conversations.items.list(conversation)),
        lambda: sdk.conversations.items.create(
            conversation, items=[{"role": "user", "content": "intrude"}]
        ),
        lambda: sdk.conversations.update(conversation, metadata={"owner": "intruder"}),
        lambda: sdk.responses.delete(response),
        lambda: sdk.conversations.delete(conversation),
    ):
        with pytest.raises(openai.NotFoundError):
            call()


def _tenants_of(body: dict[str, Any]) -> tuple[set[str], set[str]]:
    """The tenants and the ids an /api answer shows (a page's rows, an aggregate's tenants)."""
    if "data" in body:
        return {row["tenant"] for row in body["data"]}, {row["id"] for row in body["data"]}
    if "by_tenant" in body:
        return set(body["by_tenant"]), set()
    raise AssertionError(f"no tenant to read in {sorted(body)}")


def test_admin_lists_take_a_tenant_filter(world):
    spec = httpx.get(f"{world.server.url}/openapi.json").json()
    made = {
        c.tenant: {k: v for e in EXAMPLES.values() for k, v in e.create(c).items()}
        for c in (world.alpha, world.beta)
    }
    filtered = []
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            names = {p["name"] for p in operation.get("parameters", []) if p["in"] == "query"}
            if method != "get" or "tenant" not in names:
                continue
            filtered.append(path)
            everyone = _call(world.alpha.admin, "GET", path, made["alpha"], None)
            assert everyone.status_code == 200, everyone.text
            for tenant, other in (("alpha", "beta"), ("beta", "alpha")):
                url = PARAM.sub(lambda m, t=tenant: made[t][m.group(1)], path)
                answer = world.alpha.admin.get(url, params={"tenant": tenant})
                assert answer.status_code == 200, answer.text
                tenants, ids = _tenants_of(answer.json())
                assert tenants == {tenant}, (path, tenant, answer.text)
                assert not ids & set(made[other].values()), (path, tenant)
                if ids:
                    assert ids & set(made[tenant].values()), (path, tenant, ids)
            # Without tenant= an admin sees both (the session name is shared on purpose).
            if not PARAM.search(path):
                assert {"alpha", "beta"} <= _tenants_of(everyone.json())[0], path
            else:
                both = world.alpha.admin.get(PARAM.sub(lambda m: made["alpha"][m.group(1)], path))
                assert _tenants_of(both.json())[0] == {"alpha", "beta"}, path
    assert {"/api/replay", "/api/responses", "/api/conversations", "/api/keys"} <= set(filtered)
