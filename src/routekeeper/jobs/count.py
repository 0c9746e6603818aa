"""The ``count`` kind: counts to ``to``, one step every ``delay_ms``, saving a checkpoint
every ``checkpoint_every`` steps. It sends nothing to any model: operators submit it to check
that a replica or a `routekeeper worker` runs jobs (``to: 1``), and to watch leases,
checkpoints, cancellation and resumption at work. ``fail_at`` makes the first
``fail_attempts`` attempts fail at that step (for trying retries)."""

from __future__ import annotations

import asyncio
from typing import Any

from routekeeper.contract.errors import InvalidRequest
from routekeeper.jobs.kinds import JobFailed, JobRun, SubmitContext

LIMITS = {
    "to": (0, 10_000_000),
    "checkpoint_every": (1, 10_000_000),
    "delay_ms": (0, 60_000),
    "fail_at": (1, 10_000_000),
    "fail_attempts": (1, 100),
}
DEFAULTS = {"to": 10, "checkpoint_every": 1, "delay_ms": 0, "fail_at": None, "fail_attempts": 1}


class CountKind:
    name = "count"

    def validate(self, params: dict[str, Any], ctx: SubmitContext) -> dict[str, Any]:
        unknown = sorted(set(params) - set(DEFAULTS))
        if unknown:
            raise InvalidRequest(
                f"unknown parameter params.{unknown[0]} of kind count "
                f"(accepted: {', '.join(DEFAULTS)})",
                param=f"params.{unknown[0]}",
            )
        out = dict(DEFAULTS)
        for name, value in params.items():
            if value is None and DEFAULTS[name] is None:
                continue
            low, high = LIMITS[name]
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise InvalidRequest(
                    f"params.{name} must be an integer from {low} to {high}",
                    param=f"params.{name}",
                )
            out[name] = value
        return out

    async def run(self, job: JobRun) -> dict[str, Any]:
        p = job.input
        to, every, delay = p["to"], p["checkpoint_every"], p["delay_ms"] / 1000
        done = int((job.checkpoint or {}).get("done", 0))
        resumed_from = done
        await job.progress(done, to, "steps")
        while done < to:
            job.check_cancelled()
            if delay:
                await asyncio.sleep(delay)
            done += 1
            if p["fail_at"] == done and job.attempt <= p["fail_attempts"]:
                raise JobFailed(f"failed at step {done} on attempt {job.attempt} (fail_at)")
            if done % every == 0 or done == to:
                await job.save_checkpoint({"done": done}, done=done)
            await job.progress(done, to, "steps")
        return {"counted": done, "resumed_from": resumed_from, "attempt": job.attempt}
