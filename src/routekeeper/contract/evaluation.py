"""Evaluations: a job of kind ``evaluation`` routes every item of a dataset with the routing
configuration the job was submitted under (and, when asked, sends it to the chosen model) and
compares what routing chose with what the item expected. Each item's outcome is one row of
``evaluation_results``, unique per job and item, written in the job's fenced transactions; the
job's result holds the metrics computed from those rows."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from routekeeper.contract.classes import StateClass
from routekeeper.contract.surface import Owner, Surface, WriteMode, Writes

NAME_MAX_CHARS = 256
"""The longest expected decision or model name an item may carry (and a result stores)."""


@dataclass(frozen=True)
class EvaluationResultRecord:
    """The outcome of one item of one evaluation job (``item_index`` counts from 0 in
    dataset order). Written again (upserted) when an attempt resumes before the item's
    checkpoint: there is exactly one row per item. ``correct`` is true when the item was
    valid, routed, and every expectation it carries matched; ``decision_correct`` and
    ``model_correct`` are None when the item carries no such expectation. ``error`` says why
    an item failed without a verdict (a malformed line, a routing failure);
    ``upstream_error`` why its call to the model failed (that does not change ``correct``:
    routing is what is evaluated)."""

    job_id: str
    item_index: int
    attempt: int
    valid: bool
    correct: bool
    created_at: datetime
    expected_decision: str | None = None
    expected_model: str | None = None
    decision: str | None = None
    model: str | None = None
    decision_correct: bool | None = None
    model_correct: bool | None = None
    routing_ms: float | None = None
    error: str | None = None
    sent_to_model: bool = False
    upstream_ms: float | None = None
    upstream_error: str | None = None
    tenant_id: str = "default"


@dataclass(frozen=True)
class EvaluationResultFilters:
    """What ``GET /api/jobs/{id}/results`` selects; backed by an index."""

    correct: bool | None = None


EVALUATION_RESULTS = Surface(
    name="evaluation_results",
    owner=Owner.DASHBOARD,
    state_class=StateClass.SHARED_DURABLE_WORKFLOW_STATE,
    stores=(
        "One row per item of each evaluation job: what the item expected, the decision and "
        "model routing chose, whether they matched, the routing time, and the outcome of the "
        "call to the model when the job sends items to it."
    ),
    restart_expectation=(
        "Every result written before a SIGTERM or SIGKILL is there after it; the resumed "
        "attempt rewrites the items after its last checkpoint in place, so a finished "
        "evaluation has exactly one result per item."
    ),
    recovery=(
        "Nothing of its own: the jobs surface requeues an interrupted evaluation, which "
        "resumes from its checkpoint and upserts the results it writes again."
    ),
    # Results are written inside the job's fenced transaction (lease owner and attempt checked).
    colocated_with="jobs",
    id_prefix=None,
    tenant_scoped=True,
    writes=Writes(WriteMode.ACKNOWLEDGED),
    retention=None,
)
"""Results go with their job: pruning or deleting a job deletes them (a foreign key with ON
DELETE CASCADE), so ``jobs.retention_days`` bounds them too."""
