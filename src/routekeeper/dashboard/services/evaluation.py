"""Evaluation results for the dashboard: one job's per-item results, filtered and paged
(``GET /api/jobs/{id}/results``)."""

from __future__ import annotations

from routekeeper.contract.evaluation import EvaluationResultFilters, EvaluationResultRecord
from routekeeper.contract.pages import Page, SortOrder
from routekeeper.storage.evaluation_store import EvaluationStore
from routekeeper.storage.state import StateStorage


class EvaluationQueries:
    def __init__(self, storage: StateStorage) -> None:
        self.store = storage.store(EvaluationStore)

    async def results(
        self,
        job_id: str,
        filters: EvaluationResultFilters,
        *,
        tenant_id: str | None,
        limit: int,
        order: SortOrder,
        after: int | None = None,
        before: int | None = None,
    ) -> Page[EvaluationResultRecord]:
        """The job's results by item index, keyset pages; NotFound for an unknown job."""
        return await self.store.list_results(
            job_id,
            filters,
            tenant_id=tenant_id,
            limit=limit,
            order=order,
            after=after,
            before=before,
        )
