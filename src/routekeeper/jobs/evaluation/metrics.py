"""The metrics of an evaluation, computed from its stored per-item results (so a resumed run
counts every item once, whichever attempt routed it). Pure functions.

- ``total``: items; ``invalid``: malformed items (each fails: not correct);
  ``correct``: items whose every expectation matched; ``accuracy``: correct / total.
- ``decisions`` and ``models``, each over the valid items that carry that expectation:
  ``items``, ``correct``, ``accuracy``, per label (every expected or chosen name)
  ``precision`` (right among the items routed to it), ``recall`` (right among the items
  expecting it) and ``support`` (items expecting it), and ``confusion``:
  expected -> chosen -> count. A ratio with nothing to divide by is null.
- ``routing_ms``: nearest-rank percentiles p50, p95 and p99 of the routing time of the valid
  items (null without any).
- ``upstream``: items sent to the model and how many of those calls failed."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from routekeeper.contract.evaluation import EvaluationResultRecord

PERCENTILES = (50, 95, 99)


def percentile(sorted_values: Sequence[float], p: float) -> float | None:
    """The nearest-rank ``p``-th percentile (0 < p <= 100) of ascending values; None when
    there are none."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def ratio(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def label_metrics(pairs: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """Metrics of (expected, chosen) pairs: counts, accuracy, per-label precision/recall
    and the confusion matrix (expected -> chosen -> count, labels in name order)."""
    correct = sum(1 for expected, chosen in pairs if expected == chosen)
    expected_counts = Counter(expected for expected, _ in pairs)
    chosen_counts = Counter(chosen for _, chosen in pairs)
    hits = Counter(expected for expected, chosen in pairs if expected == chosen)
    cells = Counter(pairs)
    labels = sorted(set(expected_counts) | set(chosen_counts))
    confusion: dict[str, dict[str, int]] = {}
    for (expected, chosen), count in sorted(cells.items()):
        confusion.setdefault(expected, {})[chosen] = count
    return {
        "items": len(pairs),
        "correct": correct,
        "accuracy": ratio(correct, len(pairs)),
        "labels": {
            label: {
                "precision": ratio(hits[label], chosen_counts[label]),
                "recall": ratio(hits[label], expected_counts[label]),
                "support": expected_counts[label],
            }
            for label in labels
        },
        "confusion": confusion,
    }


def evaluation_metrics(results: Iterable[EvaluationResultRecord]) -> dict[str, Any]:
    """The metrics of one evaluation from its results (one per item)."""
    total = invalid = correct = sent = upstream_errors = 0
    decisions: list[tuple[str, str]] = []
    models: list[tuple[str, str]] = []
    latencies: list[float] = []
    for result in results:
        total += 1
        if not result.valid:
            invalid += 1
            continue
        correct += result.correct
        if result.expected_decision is not None and result.decision is not None:
            decisions.append((result.expected_decision, result.decision))
        if result.expected_model is not None and result.model is not None:
            models.append((result.expected_model, result.model))
        if result.routing_ms is not None:
            latencies.append(result.routing_ms)
        if result.sent_to_model:
            sent += 1
            upstream_errors += result.upstream_error is not None
    latencies.sort()
    return {
        "total": total,
        "invalid": invalid,
        "correct": correct,
        "accuracy": ratio(correct, total),
        "decisions": label_metrics(decisions),
        "models": label_metrics(models),
        "routing_ms": {f"p{p}": percentile(latencies, p) for p in PERCENTILES},
        "upstream": {"sent": sent, "errors": upstream_errors},
    }
