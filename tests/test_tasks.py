"""cancel_and_wait: a stopped task's end is swallowed, the stopper's own cancellation is not."""

from __future__ import annotations

import asyncio

import pytest

from routekeeper.tasks import cancel_and_wait


async def test_a_cancelled_task_s_end_is_swallowed_whatever_it_raises():
    async def sleeps() -> None:
        await asyncio.sleep(60)

    async def raises_on_the_way_out() -> None:
        try:
            await asyncio.sleep(60)
        finally:
            raise RuntimeError("cleanup failed")

    for body in (sleeps, raises_on_the_way_out):
        task = asyncio.create_task(body())
        await asyncio.sleep(0)
        await cancel_and_wait(task)
        assert task.done()
    finished = asyncio.create_task(asyncio.sleep(0))
    await finished
    await cancel_and_wait(finished)  # already done: nothing to wait for


async def test_the_caller_s_timeout_still_fires_and_the_steps_after_it_do_not_run():
    """A task that takes long to honour a cancellation (a database driver waiting for its
    cancel request) must not make the stopper's own budget disappear."""
    cancels = 0

    async def slow_to_stop() -> None:
        nonlocal cancels
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancels += 1
            try:
                await asyncio.sleep(60)  # "waits for the server to confirm"
            except asyncio.CancelledError:
                cancels += 1
                raise
            raise

    task = asyncio.create_task(slow_to_stop())
    await asyncio.sleep(0)
    after: list[str] = []

    async def stop() -> None:
        await cancel_and_wait(task)
        after.append("unbounded step")

    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.2):
            await stop()
    assert after == []
    await asyncio.wait({task})
    assert task.cancelled() and cancels == 2  # asked twice, and it gave up on the second


async def test_a_task_that_swallows_the_cancellation_does_not_hold_the_caller():
    """A loop that turns a cancellation into an error, logs it and sleeps on (here it gives
    up at the third request, so that the test can end)."""
    swallowed = 0

    async def swallows() -> None:
        nonlocal swallowed
        while True:
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                swallowed += 1
                if swallowed == 3:
                    raise

    task = asyncio.create_task(swallows())
    await asyncio.sleep(0)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.2):
            await cancel_and_wait(task)
    await asyncio.sleep(0)
    assert swallowed == 2 and not task.done()  # asked twice; the caller did not wait on
    task.cancel()
    await asyncio.wait({task})
    assert task.cancelled()


async def test_several_tasks_are_stopped_together_each_asked_once():
    asked: list[int] = []

    async def counts(i: int) -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            asked.append(i)
            await asyncio.sleep(0.01)  # a short clean-up, during which no second request comes
            raise

    tasks = [asyncio.create_task(counts(i)) for i in range(3)]
    await asyncio.sleep(0)
    await cancel_and_wait(*tasks)
    assert sorted(asked) == [0, 1, 2] and all(t.cancelled() for t in tasks)
    await cancel_and_wait()  # nothing to stop
