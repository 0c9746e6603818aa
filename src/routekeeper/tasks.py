"""Cancellation that is never lost: stopping a background task without swallowing the
stopper's own cancellation, and a driver error raised by a cancellation that stays one."""

from __future__ import annotations

import asyncio
from typing import Any


async def cancel_and_wait(*tasks: asyncio.Future[Any]) -> None:
    """Cancel ``tasks`` and wait until all have finished, whatever each ends with.

    A task's own end (``CancelledError`` or any exception raised on the way out) is
    swallowed. The caller's cancellation is not: when the caller is cancelled while it waits
    (its shutdown budget ran out), each task is asked to stop once more (a database driver
    gives up a query it is cancelling on the second request) and the error goes on up, so the
    caller's timeout fires and the steps after this one do not run unbounded.

    The task is not awaited directly: a caller awaiting a task hands its own cancellation to
    that task and goes on waiting for it; a task that swallows a cancellation (a driver that
    turns it into a connection error, a loop that logs the error and sleeps) would then hold
    the caller forever.
    """
    if not tasks:
        return
    for task in tasks:
        task.cancel()
    try:
        await asyncio.wait(tasks)
    except asyncio.CancelledError:
        for task in tasks:
            task.cancel()
        raise
    for task in tasks:
        if not task.cancelled():
            task.exception()  # retrieved: its failure on the way out is expected, not reported


def raise_if_cancelling(exc: Exception) -> None:
    """Raise ``CancelledError`` (from ``exc``) when the current task is being cancelled.

    A database driver cancelled in the middle of a query closes its connection, and the
    error that reaches the caller is often a connection error instead of the cancellation
    (SQLAlchemy's "can't reconnect until invalid transaction is rolled back"). Translated
    into a storage error, it would be caught by a loop that retries storage errors (the
    heartbeat, a job slot), which would go on running after it was told to stop. The
    storage layer calls this before translating: while a cancellation is pending, the
    error is the cancellation.
    """
    current = asyncio.current_task()
    if current is not None and current.cancelling():
        raise asyncio.CancelledError() from exc
