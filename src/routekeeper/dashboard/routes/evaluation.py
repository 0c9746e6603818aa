"""``GET /api/jobs/{id}/results``: the per-item results of an evaluation job (the job itself,
its events and its metrics are ``GET /api/jobs/{id}[/events]``)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel

from routekeeper.contract.evaluation import EvaluationResultFilters, EvaluationResultRecord
from routekeeper.contract.ids import id_pattern
from routekeeper.contract.pages import DEFAULT_PAGE_SIZE, SortOrder
from routekeeper.dashboard.query import api_router
from routekeeper.dashboard.services.evaluation import EvaluationQueries
from routekeeper.http.access import Caller
from routekeeper.http.pages import Limit, ListPage, Order

ItemCursor = Annotated[int | None, Query(ge=0, le=2**31 - 1, description="An item index (from 0).")]
JobId = Annotated[str, Path(pattern=id_pattern("job"), description="A job id.")]


class EvaluationResultOut(BaseModel):
    """One item's outcome (see the README's evaluation format)."""

    item_index: int
    attempt: int
    valid: bool
    correct: bool
    expected_decision: str | None
    expected_model: str | None
    decision: str | None
    model: str | None
    decision_correct: bool | None
    model_correct: bool | None
    routing_ms: float | None
    error: str | None
    sent_to_model: bool
    upstream_ms: float | None
    upstream_error: str | None
    created_at: datetime

    @classmethod
    def of(cls, record: EvaluationResultRecord) -> EvaluationResultOut:
        return cls(
            item_index=record.item_index,
            attempt=record.attempt,
            valid=record.valid,
            correct=record.correct,
            expected_decision=record.expected_decision,
            expected_model=record.expected_model,
            decision=record.decision,
            model=record.model,
            decision_correct=record.decision_correct,
            model_correct=record.model_correct,
            routing_ms=record.routing_ms,
            error=record.error,
            sent_to_model=record.sent_to_model,
            upstream_ms=record.upstream_ms,
            upstream_error=record.upstream_error,
            created_at=record.created_at,
        )


def router(queries: EvaluationQueries) -> APIRouter:
    routes = api_router(prefix="/api/jobs", tags=["jobs"])

    @routes.get(
        "/{job_id}/results",
        operation_id="list_evaluation_results",
        response_model=ListPage[EvaluationResultOut],
    )
    async def list_evaluation_results(
        job_id: JobId,
        caller: Caller,
        correct: Annotated[
            bool | None, Query(description="Only correct (true) or failed (false) items.")
        ] = None,
        limit: Limit = DEFAULT_PAGE_SIZE,
        order: Order = SortOrder.ASC,
        after: ItemCursor = None,
        before: ItemCursor = None,
    ) -> ListPage[EvaluationResultOut]:
        """The results of an evaluation job, one per item, in dataset order; cursors are
        item indexes. A job of another kind has none."""
        page = await queries.results(
            job_id,
            EvaluationResultFilters(correct=correct),
            tenant_id=caller.tenant_filter(None),
            limit=limit,
            order=order,
            after=after,
            before=before,
        )
        return ListPage.of(page, EvaluationResultOut.of)

    return routes
