"""The ``evaluation`` job kind: route every item of a dataset with the job's pinned routing
configuration (and, with ``send_to_model``, send it to the chosen model), compare with what
the item expected, and store one result per item.

Items run in order, in chunks of ``checkpoint_every``: a chunk's results are upserted in one
fenced transaction, then the checkpoint after it is saved. A resumed attempt starts at the
checkpoint, so it routes (and sends to the model) again at most the one chunk that was in
flight when the previous attempt died, and its upserts replace that chunk's results. The
result of the job is computed from the stored results (see ``metrics``)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from functools import partial
from typing import Any

from routekeeper.contract.evaluation import EvaluationResultRecord
from routekeeper.contract.jobs import JobFailed
from routekeeper.jobs.evaluation.dataset import evaluation_input, storable_text
from routekeeper.jobs.evaluation.metrics import evaluation_metrics
from routekeeper.jobs.kinds import JobRun, SubmitContext
from routekeeper.routing.engine import RoutingResult
from routekeeper.routing.request import prompt_input
from routekeeper.storage.evaluation_store import EvaluationStore, upsert_results
from routekeeper.upstream.errors import UpstreamError

PROGRESS_EVERY_SECONDS = 1.0
"""Between checkpoints, progress is reported at most this often."""
UNIT = "items"


class EvaluationKind:
    """Kind ``evaluation``; params: ``dataset`` or ``dataset_path``, ``send_to_model``,
    ``checkpoint_every``, ``concurrency`` (see ``dataset``)."""

    name = "evaluation"

    def validate(self, params: dict[str, Any], ctx: SubmitContext) -> dict[str, Any]:
        return evaluation_input(params, ctx.dataset_dir)

    async def run(self, job: JobRun) -> dict[str, Any]:
        items: list[dict[str, Any]] = job.input["items"]
        every: int = job.input["checkpoint_every"]
        total = len(items)
        start = int((job.checkpoint or {}).get("next_index", 0))
        if not job.routing.routes:
            raise JobFailed(
                "the job's routing configuration has no default decision: nothing routes"
            )
        run = _Run(job, items)
        await job.progress(start, total, UNIT, f"resumed at item {start}" if start else None)
        while start < total:
            end = min(start + every, total)
            results = await run.chunk(start, end, job.input.get("concurrency", 1))
            await job.run_fenced(partial(upsert_results, results=results))
            await job.save_checkpoint({"next_index": end}, done=end)
            start = end
        store = job.storage.store(EvaluationStore)
        stored = []
        async for batch in store.results(job.id, tenant_id=job.tenant_id):
            stored += batch
        if len(stored) != total:
            raise JobFailed(f"{len(stored)} results stored for {total} items")
        return evaluation_metrics(stored)


class _Run:
    """One attempt's pass over the items."""

    def __init__(self, job: JobRun, items: Sequence[dict[str, Any]]) -> None:
        self.job = job
        self.items = items
        self.send = bool(job.input.get("send_to_model"))
        self.auto_model = min(job.routing.auto_model_names, default=None)
        self.reported = time.monotonic()
        self.done = 0

    async def chunk(self, start: int, end: int, concurrency: int) -> list[EvaluationResultRecord]:
        """The results of items ``start`` to ``end`` (exclusive), ``concurrency`` at a time;
        checks for a cancel before each item goes anywhere."""
        self.done = start
        if concurrency <= 1:
            return [await self.item(index) for index in range(start, end)]
        indexes = iter(range(start, end))
        out: dict[int, EvaluationResultRecord] = {}

        async def worker() -> None:
            for index in indexes:
                out[index] = await self.item(index)

        try:
            async with asyncio.TaskGroup() as group:
                for _ in range(min(concurrency, end - start)):
                    group.create_task(worker())
        except BaseExceptionGroup as failed:
            raise failed.exceptions[0] from None
        return [out[index] for index in range(start, end)]

    async def item(self, index: int) -> EvaluationResultRecord:
        self.job.check_cancelled()
        item = self.items[index]
        result = await self._evaluate(index, item)
        self.done += 1
        now = time.monotonic()
        if now - self.reported >= PROGRESS_EVERY_SECONDS:
            self.reported = now
            await self.job.progress(self.done, len(self.items), UNIT)
        return result

    async def _evaluate(self, index: int, item: dict[str, Any]) -> EvaluationResultRecord:
        job = self.job
        common: dict[str, Any] = {
            "job_id": job.id,
            "item_index": index,
            "tenant_id": job.tenant_id,
            "attempt": job.attempt,
            "created_at": datetime.now(UTC),
        }
        if "invalid" in item:
            where = f"line {item['line']}: " if item.get("line") else ""
            return EvaluationResultRecord(
                **common, valid=False, correct=False, error=where + item["invalid"]
            )
        expected_decision = item.get("expected_decision")
        expected_model = item.get("expected_model")
        messages = [{"role": "user", "content": item["prompt"]}]
        plan = None
        began = time.perf_counter()
        if self.send and self.auto_model is not None:
            # The plan routes the body as the router would and applies the decision's plugins.
            plan = await job.chat.plan({"model": self.auto_model, "messages": messages}, {})
            routed: RoutingResult | None = plan.routing
        else:
            routed = await job.routing.route(prompt_input(item["prompt"]))
        routing_ms = (time.perf_counter() - began) * 1000
        assert routed is not None
        if self.send and plan is None:  # no auto name: send to the chosen model by its name
            plan = await job.chat.plan({"model": routed.model.name, "messages": messages}, {})
        decision, model = routed.decision.name, routed.model.name
        decision_ok = None if expected_decision is None else expected_decision == decision
        model_ok = None if expected_model is None else expected_model == model
        upstream_ms = upstream_error = None
        if plan is not None:
            began = time.perf_counter()
            try:
                await job.chat.transport(plan).complete(plan.body)
            except UpstreamError as exc:
                upstream_error = storable_text(f"{exc.code}: {exc.message}", 1000)
            upstream_ms = (time.perf_counter() - began) * 1000
        return EvaluationResultRecord(
            **common,
            valid=True,
            correct=decision_ok is not False and model_ok is not False,
            expected_decision=expected_decision,
            expected_model=expected_model,
            decision=decision,
            model=model,
            decision_correct=decision_ok,
            model_correct=model_ok,
            routing_ms=routing_ms,
            sent_to_model=plan is not None,
            upstream_ms=upstream_ms,
            upstream_error=upstream_error,
        )
