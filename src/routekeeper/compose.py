"""The composition root: everything one replica runs, built from the settings, without any
web framework. The HTTP app (``routekeeper.server.app``) serves it; a process without HTTP
(a worker) builds the same replica and drives ``runtime`` itself."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from routekeeper.auth.keys import Authenticator
from routekeeper.auth.limits import MemoryLimiter, RateLimiter
from routekeeper.auth.limits_redis import RedisLimiter
from routekeeper.auth.limits_workspace import FILE_NAME, WorkspaceLimiter
from routekeeper.jobs.count import CountKind
from routekeeper.jobs.evaluation.kind import EvaluationKind
from routekeeper.jobs.kinds import JobKind
from routekeeper.jobs.runner import JobRunner
from routekeeper.jobs.service import JobsService
from routekeeper.jobs.wakeups import JobWakeups
from routekeeper.router.services.chat import ChatService
from routekeeper.router.services.exchange import ChatExchanges
from routekeeper.router.services.metrics import RouterMetrics
from routekeeper.router.services.replay import ReplayRecorder
from routekeeper.router.services.responses import ResponsesService
from routekeeper.routing.engine import RoutingEngine, build_embedder
from routekeeper.runtime.components import Component, StorageMetrics
from routekeeper.runtime.replica import ReplicaRuntime
from routekeeper.runtime.worker_board import WorkerBoard
from routekeeper.settings import Settings
from routekeeper.storage.jobs_store import JobsStore
from routekeeper.storage.keys_store import ApiKeysStore
from routekeeper.storage.state import StateStorage
from routekeeper.upstream.openai import UpstreamPool

log = logging.getLogger(__name__)

KINDS: dict[str, JobKind] = {kind.name: kind for kind in (CountKind(), EvaluationKind())}
"""The job kinds every replica runs and accepts at submit, by name."""


@dataclass
class Replica:
    settings: Settings
    storage: StateStorage
    engine: RoutingEngine
    pool: UpstreamPool
    recorder: ReplayRecorder
    metrics: RouterMetrics
    chat: ChatService
    exchanges: ChatExchanges
    responses: ResponsesService
    runtime: ReplicaRuntime
    authenticator: Authenticator
    limiter: RateLimiter
    jobs: JobsService
    runner: JobRunner

    async def aclose(self) -> None:
        """Release what the runtime does not own (after ``runtime.stop()``)."""
        try:
            await self.pool.aclose()
        finally:
            try:
                await self.engine.aclose()
            finally:
                await self.limiter.aclose()


def build_limiter(settings: Settings, *, workers: bool) -> RateLimiter:
    """Where this process counts its keys' requests per minute: in Redis when ``redis.url``
    is set (every replica on every machine shares one count), else in the workspace's
    limits file when this process is one of the ``workers`` of a ``serve --workers N`` (the
    workers of the serve share it), else in memory (this process is the only one serving
    its keys). In ``state.mode: shared`` without Redis each replica counts on its own: a
    key's limit then holds per replica, which is logged at start."""
    if settings.auth.mode != "api_key":
        return MemoryLimiter()  # no key, no limit: never consulted
    if settings.redis.url is not None:
        return RedisLimiter(settings.redis.url)
    if settings.state.mode == "shared":
        log.warning(
            "rate limits hold per replica: state.mode is shared and redis.url is not set, so "
            "each replica counts its keys' requests on its own (set redis.url to share one "
            "count)"
        )
    if workers:
        return WorkspaceLimiter(settings.resolve_path(Path(FILE_NAME)))
    return MemoryLimiter()


def build_replica(
    settings: Settings,
    *,
    listen: str | None = None,
    on_fatal: Callable[[str], None] | None = None,
    board: WorkerBoard | None = None,
    job_slots: int | None = None,
) -> Replica:
    """Raises ContractViolation when the state contract does not hold. Nothing is opened
    here: ``runtime.start()`` opens storage, migrates, registers and recovers (the routing
    engine embeds its candidates first). Tests put a fake server under a model by its
    ``base_url``. ``board``: this process is one worker of ``serve --workers N`` and shows
    the others' figures beside its own. ``job_slots``: jobs this replica runs at once
    (default ``jobs.concurrency``; a ``routekeeper worker`` passes its own)."""
    storage = StateStorage(settings)
    engine = RoutingEngine(settings, build_embedder(settings))
    pool = UpstreamPool()
    replay = settings.replay
    recorder = ReplayRecorder(
        storage.replay,
        enabled=replay.enabled,
        queue_max=replay.queue_max,
        flush_interval_ms=replay.flush_interval_ms,
        durability=replay.durability,
        ack_timeout_ms=replay.ack_timeout_ms,
    )
    chat = ChatService(settings, engine, pool)
    wakeups = JobWakeups(storage.store(JobsStore), redis_url=settings.redis.url)
    runner = JobRunner(
        settings,
        storage,
        KINDS,
        owner="",  # this replica's id, below
        engine=engine,
        chat=chat,
        pool=pool,
        wakeups=wakeups,
        concurrency=job_slots,
    )
    # Surfaces' background parts: begun when ready, stopped before `stopped`, reported in
    # /api/status and /metrics.
    authenticator = Authenticator(
        settings.auth, storage.store(ApiKeysStore), redis_url=settings.redis.url
    )
    components: tuple[Component, ...] = (recorder, authenticator, runner)
    runtime = ReplicaRuntime(
        settings,
        storage,
        listen=listen,
        on_fatal=on_fatal,
        prepare=engine.prepare,
        components=components,
        board=board,
    )
    runner.owner = runtime.id  # leases are held by the replica
    limiter = build_limiter(settings, workers=board is not None)
    metrics = RouterMetrics(
        components, collectors=(StorageMetrics(storage), limiter.counts), board=board
    )
    if board is not None:
        board.attach(runtime.id, components, metrics.registry.collect)
    exchanges = ChatExchanges(
        chat, recorder, metrics, runtime, ping_seconds=settings.server.sse_ping_seconds
    )
    responses = ResponsesService(
        storage, exchanges, retention_days=settings.responses.retention_days
    )
    jobs = JobsService(
        settings, storage, KINDS, wakeups, runner, shutting_down=runtime.shutting_down
    )
    return Replica(
        settings,
        storage,
        engine,
        pool,
        recorder,
        metrics,
        chat,
        exchanges,
        responses,
        runtime,
        authenticator,
        limiter,
        jobs,
        runner,
    )
