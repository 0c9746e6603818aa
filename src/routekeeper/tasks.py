"""Stopping a background task without losing the stopper's own cancellation."""

from __future__ import annotations

import asyncio
from typing import Any


async def cancel_and_wait(task: asyncio.Future[Any]) -> None:
    """Cancel ``task`` and wait until it has finished, whatever it ends with.

    The task's own end (``CancelledError`` or any exception raised on the way out) is
    swallowed. The caller's cancellation is not: when the caller is cancelled while it waits
    (its shutdown budget ran out), the task is asked to stop once more (a database driver
    gives up a query it is cancelling on the second request) and the error goes on up, so the
    caller's timeout fires and the steps after this one do not run unbounded.

    The task is not awaited directly: a caller awaiting a task hands its own cancellation to
    that task and goes on waiting for it; a task that swallows a cancellation (a driver that
    turns it into a connection error, a loop that logs the error and sleeps) would then hold
    the caller forever.
    """
    task.cancel()
    try:
        await asyncio.wait({task})
    except asyncio.CancelledError:
        task.cancel()
        raise
    if not task.cancelled():
        task.exception()  # retrieved: its failure on the way out is expected, not reported
