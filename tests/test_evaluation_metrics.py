"""The metrics of an evaluation, from its per-item results: counts, accuracy, per-label
precision/recall and confusion for decisions and models separately, routing-time percentiles,
invalid items."""

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from routekeeper.contract.evaluation import EvaluationResultRecord
from routekeeper.jobs.evaluation.metrics import (
    evaluation_metrics,
    label_metrics,
    percentile,
)

AT = datetime(2026, 12, 7, tzinfo=UTC)


def result(
    index,
    *,
    decision=None,
    expected_decision=None,
    model=None,
    expected_model=None,
    routing_ms=1.0,
    valid=True,
    sent=False,
    upstream_error=None,
):
    decision_ok = None if expected_decision is None else expected_decision == decision
    model_ok = None if expected_model is None else expected_model == model
    return EvaluationResultRecord(
        job_id="job_x",
        item_index=index,
        attempt=1,
        valid=valid,
        correct=valid and decision_ok is not False and model_ok is not False,
        created_at=AT,
        expected_decision=expected_decision if valid else None,
        expected_model=expected_model if valid else None,
        decision=decision if valid else None,
        model=model if valid else None,
        decision_correct=decision_ok if valid else None,
        model_correct=model_ok if valid else None,
        routing_ms=routing_ms if valid else None,
        error=None if valid else "line 3: not JSON",
        sent_to_model=sent,
        upstream_error=upstream_error,
    )


def test_a_worked_example():
    results = [
        result(0, expected_decision="math", decision="math", model="big", routing_ms=1),
        result(1, expected_decision="math", decision="chat", model="small", routing_ms=2),
        result(2, expected_decision="chat", decision="chat", model="small", routing_ms=3),
        result(3, expected_model="small", decision="chat", model="small", routing_ms=4),
        result(
            4,
            expected_decision="chat",
            expected_model="big",
            decision="chat",
            model="small",
            routing_ms=5,
        ),
        result(5, valid=False),
    ]
    m = evaluation_metrics(results)
    assert (m["total"], m["invalid"], m["correct"]) == (6, 1, 3)
    assert m["accuracy"] == 3 / 6
    d = m["decisions"]
    assert (d["items"], d["correct"], d["accuracy"]) == (4, 3, 3 / 4)
    assert d["confusion"] == {"chat": {"chat": 2}, "math": {"chat": 1, "math": 1}}
    assert d["labels"] == {
        "chat": {"precision": 2 / 3, "recall": 1.0, "support": 2},
        "math": {"precision": 1.0, "recall": 0.5, "support": 2},
    }
    models = m["models"]
    assert (models["items"], models["correct"]) == (2, 1)
    assert models["confusion"] == {"big": {"small": 1}, "small": {"small": 1}}
    # A label only ever chosen has no recall to speak of; only ever expected, no precision.
    assert models["labels"]["big"] == {"precision": None, "recall": 0.0, "support": 1}
    assert models["labels"]["small"] == {"precision": 0.5, "recall": 1.0, "support": 1}
    assert m["routing_ms"] == {"p50": 3, "p95": 5, "p99": 5}
    assert m["upstream"] == {"sent": 0, "errors": 0}


def test_nothing_to_divide_by_is_null():
    m = evaluation_metrics([])
    assert m["total"] == 0 and m["accuracy"] is None
    assert m["decisions"] == {
        "items": 0,
        "correct": 0,
        "accuracy": None,
        "labels": {},
        "confusion": {},
    }
    assert m["routing_ms"] == {"p50": None, "p95": None, "p99": None}
    only_invalid = evaluation_metrics([result(0, valid=False), result(1, valid=False)])
    assert (only_invalid["total"], only_invalid["invalid"], only_invalid["accuracy"]) == (2, 2, 0)


def test_upstream_outcomes_are_counted_apart_from_correctness():
    m = evaluation_metrics(
        [
            result(0, expected_model="a", model="a", decision="d", sent=True),
            result(
                1,
                expected_model="a",
                model="a",
                decision="d",
                sent=True,
                upstream_error="upstream_error: 500",
            ),
        ]
    )
    assert m["upstream"] == {"sent": 2, "errors": 1}
    assert m["correct"] == 2


def test_nearest_rank_percentiles():
    values = list(range(1, 101))
    assert [percentile(values, p) for p in (50, 95, 99, 100)] == [50, 95, 99, 100]
    assert percentile([7.0], 99) == 7.0
    assert percentile([1.0, 2.0], 50) == 1.0
    assert percentile([], 50) is None


labels = st.sampled_from(["a", "b", "c", "d"])


@given(st.lists(st.tuples(labels, labels), max_size=60))
def test_label_metrics_agree_with_their_definitions(pairs):
    m = label_metrics(pairs)
    assert m["items"] == len(pairs)
    assert m["correct"] == sum(e == c for e, c in pairs)
    # The confusion matrix holds every pair once: its rows add up to the supports.
    assert sum(n for row in m["confusion"].values() for n in row.values()) == len(pairs)
    for label, figures in m["labels"].items():
        assert figures["support"] == sum(e == label for e, _ in pairs)
        assert figures["support"] == sum(m["confusion"].get(label, {}).values())
        chosen = sum(c == label for _, c in pairs)
        hits = m["confusion"].get(label, {}).get(label, 0)
        assert figures["precision"] == (hits / chosen if chosen else None)
        assert figures["recall"] == (hits / figures["support"] if figures["support"] else None)
    assert m["accuracy"] == (m["correct"] / len(pairs) if pairs else None)


@given(
    st.lists(st.floats(min_value=0, max_value=1e6), min_size=1, max_size=200),
    st.sampled_from([50, 95, 99]),
)
def test_a_percentile_is_a_value_with_enough_below_it(values, p):
    ordered = sorted(values)
    q = percentile(ordered, p)
    assert q in ordered
    assert sum(v <= q for v in ordered) >= p / 100 * len(ordered)
    assert sum(v < q for v in ordered) < p / 100 * len(ordered)
