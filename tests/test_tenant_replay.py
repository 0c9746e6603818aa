"""Replay records by tenant and key, on SQLite and PostgreSQL: records written with auth off
belong to tenant ``default`` (no key); after ``auth.mode: api_key`` an admin key sees every
tenant's records, each with ``tenant`` and ``key_id``, ``?tenant=alpha`` only alpha's, and
``/api/replay/aggregate`` counts requests and tokens per tenant and per key."""

from __future__ import annotations

from collections import Counter

import httpx
import pytest

from routekeeper.testing import FakeUpstream
from routekeeper.testing.tenancy import create_key

pytestmark = pytest.mark.slow


def _config(upstream: FakeUpstream, mode: str) -> dict[str, object]:
    return {
        "auth": {"mode": mode},
        "models": [
            {
                "name": "scribe",
                "backend": {"type": "openai", "base_url": upstream.base_url, "model": "m"},
            }
        ],
        "decisions": [{"name": "default", "model": "scribe"}],
    }


def _chat(url: str, text: str, secret: str | None = None) -> int:
    headers = {"authorization": f"Bearer {secret}"} if secret else {}
    answer = httpx.post(
        f"{url}/v1/chat/completions",
        json={"model": "scribe", "messages": [{"role": "user", "content": text}]},
        headers=headers,
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    return int(answer.json()["usage"]["total_tokens"])


def test_admin_sees_every_tenant_and_filters_by_one(server_factory):
    with FakeUpstream(models=["m"]) as upstream:
        before = server_factory(**_config(upstream, "none")).start()
        tokens: Counter[str] = Counter()
        requests: Counter[str] = Counter()
        for i in range(2):
            tokens["default"] += _chat(before.url, f"before auth {i}")
            requests["default"] += 1
        before.wait_flushed()
        before.terminate()

        server = server_factory(**_config(upstream, "api_key"))
        keys = {
            tenant: create_key(server.workspace, server.config, tenant)
            for tenant in ("alpha", "beta")
        }
        admin_id, server.api_key = create_key(server.workspace, server.config, "ops", role="admin")
        server.start()
        for tenant, count in (("alpha", 3), ("beta", 2)):
            for i in range(count):
                tokens[tenant] += _chat(server.url, f"{tenant} asks {'more ' * i}", keys[tenant][1])
                requests[tenant] += 1
        server.wait_flushed()

        records = server.list_all("/api/replay")
        assert Counter(r["tenant"] for r in records) == requests
        key_of = {"default": None, "alpha": keys["alpha"][0], "beta": keys["beta"][0]}
        assert all(r["key_id"] == key_of[r["tenant"]] for r in records), records
        alpha = server.list_all("/api/replay", tenant="alpha")
        assert {r["id"] for r in alpha} == {r["id"] for r in records if r["tenant"] == "alpha"}
        assert server.list_all("/api/replay", tenant="nobody") == []
        for record in alpha:
            one = httpx.get(
                f"{server.url}/api/replay/{record['id']}",
                headers={"authorization": f"Bearer {server.api_key}"},
                timeout=30,
            ).json()
            assert (one["tenant"], one["key_id"]) == ("alpha", keys["alpha"][0])

        def aggregate(**params: str) -> dict[str, object]:
            answer = httpx.get(
                f"{server.url}/api/replay/aggregate",
                params=params,
                headers={"authorization": f"Bearer {server.api_key}"},
                timeout=30,
            )
            assert answer.status_code == 200, answer.text
            body: dict[str, object] = answer.json()
            return body

        every = aggregate()
        assert {t: (u["requests"], u["tokens"]) for t, u in every["by_tenant"].items()} == {
            t: (requests[t], tokens[t]) for t in requests
        }
        by_key = {
            "(none)": (requests["default"], tokens["default"]),
            keys["alpha"][0]: (requests["alpha"], tokens["alpha"]),
            keys["beta"][0]: (requests["beta"], tokens["beta"]),
        }
        assert {k: (u["requests"], u["tokens"]) for k, u in every["by_key"].items()} == by_key
        assert admin_id not in every["by_key"]
        only_alpha = aggregate(tenant="alpha")
        assert list(only_alpha["by_tenant"]) == ["alpha"]
        assert only_alpha["by_tenant"]["alpha"]["tokens"] == tokens["alpha"]
        assert list(only_alpha["by_key"]) == [keys["alpha"][0]]
