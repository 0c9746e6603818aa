"""Per-key rate limits on each limiter, against its real medium: in this process, in the
workspace's limits file (two limiters on one file stand for two worker processes) and in
Redis (two limiters on one Redis stand for two replicas). N requests in the window pass with
the ``x-ratelimit-*`` headers, the next is refused with ``retry-after``; a shared count is
exact whichever limiter counts; when the count cannot be reached requests pass, counted
and logged once."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from routekeeper.auth.limits import MemoryLimiter, RateLimiter
from routekeeper.auth.limits_redis import RedisLimiter
from routekeeper.auth.limits_workspace import FILE_NAME, WorkspaceLimiter
from routekeeper.compose import build_limiter
from routekeeper.contract.auth import Principal, Role
from routekeeper.contract.errors import RateLimited
from routekeeper.contract.ids import new_id
from routekeeper.settings import load_settings
from routekeeper.testing.backends import shared_postgres_state
from routekeeper.testing.server import free_port
from routekeeper.testing.tcpproxy import TcpProxy


def limited_key(rpm: int | None) -> Principal:
    return Principal("alpha", new_id("key"), Role.MEMBER, rpm)


Factory = Callable[[], RateLimiter]


@pytest.fixture(params=["memory", "workspace", pytest.param("redis", marks=pytest.mark.redis)])
async def limiters(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Factory]:
    """Makes limiters of one kind that share one count (memory: the same limiter)."""
    made: list[RateLimiter] = []
    memory = MemoryLimiter()

    def make() -> RateLimiter:
        limiter: RateLimiter
        if request.param == "memory":
            limiter = memory
        elif request.param == "workspace":
            limiter = WorkspaceLimiter(tmp_path / "workspace" / FILE_NAME)
        else:
            limiter = RedisLimiter(request.getfixturevalue("redis_url"))
        made.append(limiter)
        return limiter

    yield make
    for limiter in {id(x): x for x in made}.values():
        await limiter.aclose()


async def test_a_burst_of_n_passes_with_headers_then_429_with_retry_after(limiters: Factory):
    limiter = limiters()
    key = limited_key(5)
    for remaining in (4, 3, 2, 1, 0):
        headers = await limiter.hit(key)
        assert headers is not None
        assert headers["x-ratelimit-limit-requests"] == "5"
        assert headers["x-ratelimit-remaining-requests"] == str(remaining)
        reset = float(headers["x-ratelimit-reset-requests"].removesuffix("s"))
        assert 0 < reset <= 60
    for _ in range(3):  # refused requests are not counted: still refused, not later
        with pytest.raises(RateLimited) as refused:
            await limiter.hit(key)
        assert refused.value.status == 429 and refused.value.code == "rate_limit_exceeded"
        headers = refused.value.headers()
        assert 1 <= int(headers["retry-after"]) <= 60
        assert headers["x-ratelimit-remaining-requests"] == "0"
        assert (
            key.key_id in refused.value.message and "5 requests per minute" in refused.value.message
        )
    assert limiter.counts.counts == {"allowed": 5, "refused": 3, "unchecked": 0}
    # another key has its own count
    assert (await limiter.hit(limited_key(5)))["x-ratelimit-remaining-requests"] == "4"


async def test_limiters_sharing_a_count_allow_exactly_n_between_them(limiters: Factory):
    first, second = limiters(), limiters()
    key = limited_key(60)
    accepted = refused = 0
    for i in range(100):
        try:
            await (first if i % 2 else second).hit(key)
            accepted += 1
        except RateLimited as exc:
            assert exc.retry_after >= 1
            refused += 1
    assert (accepted, refused) == (60, 40)


async def test_a_key_without_a_limit_costs_nothing(tmp_path: Path):
    path = tmp_path / "workspace" / FILE_NAME
    limiter = WorkspaceLimiter(path)
    try:
        assert await limiter.hit(limited_key(None)) is None
        assert not path.exists()  # never opened
        assert limiter.counts.counts == {"allowed": 0, "refused": 0, "unchecked": 0}
    finally:
        await limiter.aclose()


async def test_a_damaged_limits_file_is_made_again(tmp_path: Path):
    path = tmp_path / FILE_NAME
    path.write_bytes(b"not a database" * 100)
    limiter = WorkspaceLimiter(path)
    try:
        key = limited_key(1)
        assert await limiter.hit(key) is not None
        with pytest.raises(RateLimited):
            await limiter.hit(key)
    finally:
        await limiter.aclose()


async def test_an_unwritable_limits_file_fails_open_counted_and_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    not_a_directory = tmp_path / "file"
    not_a_directory.write_text("")
    limiter = WorkspaceLimiter(not_a_directory / FILE_NAME)
    try:
        with caplog.at_level(logging.WARNING):
            for _ in range(5):
                assert await limiter.hit(limited_key(1)) is None
        assert limiter.counts.counts["unchecked"] == 5
        warnings = [r for r in caplog.records if "rate limits are not enforced" in r.message]
        assert len(warnings) == 1, caplog.text
    finally:
        await limiter.aclose()


def unchecked_samples(limiter: RateLimiter) -> dict[str, float]:
    return {
        sample.labels["outcome"]: sample.value
        for family in limiter.counts.collect()
        for sample in family.samples
        if sample.name == "routekeeper_rate_limit_checks_total"
    }


@pytest.mark.redis
async def test_redis_down_fails_open_counted_logged_once_and_limits_again_when_back(
    redis_url: str, caplog: pytest.LogCaptureFixture
):
    host_port = redis_url.split("//", 1)[1].split("/", 1)[0]
    host, _, port = host_port.rpartition(":")
    with TcpProxy(host, int(port)) as proxy:
        limiter = RedisLimiter(proxy.dsn_for(redis_url))
        try:
            key = limited_key(2)
            assert await limiter.hit(key) is not None
            assert await limiter.hit(key) is not None
            with pytest.raises(RateLimited):
                await limiter.hit(key)

            proxy.cut()
            with caplog.at_level(logging.WARNING):
                for _ in range(10):  # past the limit, and still they pass
                    assert await limiter.hit(key) is None
            assert unchecked_samples(limiter) == {"allowed": 2, "refused": 1, "unchecked": 10}
            warnings = [r for r in caplog.records if "rate limits are not enforced" in r.message]
            assert len(warnings) == 1, caplog.text
            assert "Redis" in warnings[0].message

            proxy.restore()
            deadline = time.monotonic() + 10
            while True:  # tried again RETRY_SECONDS after the last failure
                try:
                    assert await limiter.hit(key) is None
                except RateLimited:
                    break
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
        finally:
            await limiter.aclose()


async def test_an_unreachable_redis_fails_open(caplog: pytest.LogCaptureFixture):
    limiter = RedisLimiter(f"redis://:hunter2-secret@127.0.0.1:{free_port()}/0")
    try:
        with caplog.at_level(logging.DEBUG):
            for _ in range(3):
                assert await limiter.hit(limited_key(1)) is None
        assert limiter.counts.counts["unchecked"] == 3
        assert "hunter2-secret" not in caplog.text
        assert "redis://:***@127.0.0.1" in caplog.text
    finally:
        await limiter.aclose()


@pytest.mark.parametrize(
    ("sections", "workers", "kind"),
    [
        ({}, False, "memory"),
        ({"auth": {"mode": "api_key"}}, False, "memory"),
        ({"auth": {"mode": "api_key"}}, True, "workspace"),
        ({"auth": {"mode": "api_key"}, "redis": {"url": "redis://127.0.0.1:1/0"}}, False, "redis"),
        ({"auth": {"mode": "api_key"}, "redis": {"url": "redis://127.0.0.1:1/0"}}, True, "redis"),
    ],
)
async def test_compose_chooses_the_limiter_from_the_settings(
    tmp_path: Path, sections: dict[str, Any], workers: bool, kind: str
):
    settings = load_settings(None, workspace=tmp_path / "ws", overrides=sections)
    limiter = build_limiter(settings, workers=workers)
    try:
        assert limiter.kind == kind
        if kind == "workspace":
            assert isinstance(limiter, WorkspaceLimiter)
            assert limiter.path == tmp_path / "ws" / FILE_NAME
    finally:
        await limiter.aclose()


async def test_shared_mode_without_redis_says_limits_hold_per_replica(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    settings = load_settings(
        None,
        workspace=tmp_path / "ws",
        overrides={
            "auth": {"mode": "api_key"},
            "state": shared_postgres_state("postgresql://127.0.0.1:5432/unused"),
        },
    )
    with caplog.at_level(logging.WARNING):
        limiter = build_limiter(settings, workers=False)
    await limiter.aclose()
    assert limiter.kind == "memory"
    assert "rate limits hold per replica" in caplog.text
