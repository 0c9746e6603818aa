"""Sharing the machine between pytest-xdist workers: an ``exclusive`` test runs while no other
test does, a stream of ordinary tests cannot keep it waiting for ever, and the tests of one
``xdist_group`` run on one worker (what `make test` relies on to start a module's server
once)."""

import json
import textwrap
import threading
import time

import pytest

from routekeeper.testing.parallel import MachineShare


def test_an_exclusive_turn_waits_for_shared_ones_and_holds_new_ones_back(tmp_path):
    share = MachineShare(tmp_path)
    order: list[str] = []
    first_in, release_first, exclusive_waiting = (threading.Event() for _ in range(3))

    def first() -> None:
        with share.shared():
            order.append("shared 1 in")
            first_in.set()
            release_first.wait(10)
            order.append("shared 1 out")

    def exclusive() -> None:
        exclusive_waiting.set()
        with share.exclusive():
            order.append("exclusive in")
            time.sleep(0.2)
            order.append("exclusive out")

    def later() -> None:
        with share.shared():
            order.append("shared 2 in")

    threads = [threading.Thread(target=first)]
    threads[0].start()
    assert first_in.wait(10)
    threads.append(threading.Thread(target=exclusive))
    threads[1].start()
    assert exclusive_waiting.wait(10)
    time.sleep(0.2)  # the exclusive turn is queued behind the first shared one
    threads.append(threading.Thread(target=later))
    threads[2].start()
    time.sleep(0.2)  # the later shared turn arrived while the exclusive one waits
    assert order == ["shared 1 in"]
    release_first.set()
    for thread in threads:
        thread.join(10)
    assert order == ["shared 1 in", "shared 1 out", "exclusive in", "exclusive out", "shared 2 in"]


def test_shared_turns_run_together(tmp_path):
    share = MachineShare(tmp_path)
    with share.shared():
        both = threading.Event()

        def other() -> None:
            with share.shared():
                both.set()

        thread = threading.Thread(target=other)
        thread.start()
        assert both.wait(10), "a second shared turn waited for the first"
        thread.join(10)


@pytest.mark.slow
def test_under_xdist_an_exclusive_test_overlaps_no_other_and_a_group_shares_a_worker(pytester):
    pytest.importorskip("xdist")
    log = pytester.path / "spans.jsonl"
    pytester.makeconftest('pytest_plugins = ["routekeeper.testing.pytest_plugin"]\n')
    body = textwrap.dedent(
        f"""\
        import json, os, time
        import pytest

        def span(name):
            start = time.monotonic()
            time.sleep(0.3)
            worker = os.environ["PYTEST_XDIST_WORKER"]
            with open({str(log)!r}, "a") as out:
                out.write(json.dumps([name, start, time.monotonic(), worker]) + "\\n")

        @pytest.mark.exclusive
        def test_alone_first():
            span("alone first")

        @pytest.mark.parametrize("i", range(6))
        def test_plain(i):
            span(f"plain {{i}}")

        @pytest.mark.exclusive
        def test_alone_later():
            span("alone later")

        @pytest.mark.parametrize("i", range(6))
        def test_more(i):
            span(f"more {{i}}")

        @pytest.mark.xdist_group("one worker")
        @pytest.mark.parametrize("i", range(4))
        def test_grouped(i):
            span(f"grouped {{i}}")
        """
    )
    pytester.makepyfile(test_spans=body)
    # Without the heavy plugins the suite does not need here, three workers start in seconds.
    quick = ["-p", "no:cacheprovider", "-p", "no:hypothesispytest", "-p", "no:schemathesis"]
    result = pytester.runpytest_subprocess("-n", "3", "--dist", "loadgroup", *quick)
    result.assert_outcomes(passed=18)
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    spans = {name: (start, end) for name, start, end, _ in lines}
    workers = {name: worker for name, _, _, worker in lines}
    grouped = {workers[n] for n in workers if n.startswith("grouped")}
    assert len(grouped) == 1, workers
    assert len(set(workers.values())) > 1, workers
    for alone in ("alone first", "alone later"):
        start, end = spans[alone]
        overlapping = [n for n, (s, e) in spans.items() if n != alone and s < end and e > start]
        assert overlapping == [], (alone, overlapping, spans)
    # and the other tests did run side by side
    pairs = [(a, b) for a in spans for b in spans if a < b]
    assert any(spans[a][0] < spans[b][1] and spans[b][0] < spans[a][1] for a, b in pairs), spans
