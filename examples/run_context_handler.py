"""A job endpoint that reports to Strait while it works, through the run-context API (docs/run-context.md).

    python examples/run_context_handler.py [PORT]    # default 8001; Strait's gRPC address from STRAIT_ADDRESS

POST /       works while the request is open: logs, reports progress, checkpoints after every step, then
             answers 200 with JSON, which becomes the run's output.
POST /async  answers 202 Accepted at once: the run stays executing while a background task does the same
             work, heartbeating meanwhile, and then ends the run itself with Complete (or Fail).

Payload: {"steps": N} (default 5, each step takes STEP_SECONDS) and optionally {"crash_at": K}: on attempt 1,
step K fails. On POST / that answers 503, so Strait retries the run and the next attempt resumes after the
last step checkpointed (X-Last-Checkpoint); on POST /async it fails the run (Fail: no retries). A payload
whose "steps" is not a positive integer fails the run at once.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Any

from aiohttp import web

from strait_client import AsyncRunContext, FailedPreconditionError

STEP_SECONDS = 0.5
# Each heartbeat moves the attempt's deadline to now + the run's timeout (and renews the run token, which
# AsyncRunContext then uses): keep this well under the timeout.
HEARTBEAT_SECONDS = 5.0

log = logging.getLogger("run_context_handler")
background: set[asyncio.Task[None]] = set()  # keeps background tasks referenced until they finish


class TransientError(Exception):
    """A failure worth retrying."""


def bad_input(payload: Any) -> str:
    """Why the payload cannot be worked on ("" when it can)."""
    steps = payload.get("steps", 5) if isinstance(payload, dict) else None
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        return "bad input: steps must be a positive integer"
    return ""


async def work(ctx: AsyncRunContext, payload: dict[str, Any]) -> dict[str, Any]:
    """The job itself: a few steps, each checkpointed, resuming after the previous attempt's checkpoint."""
    steps: int = payload.get("steps", 5)
    saved = ctx.last_checkpoint  # the JSON the previous attempt passed to checkpoint(), or None
    first = saved["done"] + 1 if isinstance(saved, dict) else 1
    if first > 1:
        await ctx.log(f"resuming at step {first}", data={"checkpoint": saved})
    for step in range(first, steps + 1):
        if step == payload.get("crash_at") and ctx.info.attempt == 1:
            raise TransientError(f"step {step} failed on attempt 1")
        await asyncio.sleep(STEP_SECONDS)  # one step of real work goes here
        await ctx.checkpoint({"done": step})
        await ctx.progress(100 * step / steps, f"step {step} of {steps}", step=f"step-{step}")
    return {"steps": steps, "first_step_of_this_attempt": first, "attempt": ctx.info.attempt}


async def run_now(request: web.Request) -> web.Response:
    """POST /: the answer decides the run (200 completes it, 503 retries it)."""
    payload = await request.json()
    async with AsyncRunContext.from_headers(request.headers) as ctx:
        problem = bad_input(payload)
        if problem:
            await ctx.fail(problem)  # failed now, whatever attempts remain; the answer below is then ignored
            return web.json_response({"error": problem}, status=422)
        await ctx.log("started", data={"attempt": ctx.info.attempt})
        try:
            output = await work(ctx, payload)
        except TransientError as exc:
            await ctx.log(str(exc), level="warn")
            return web.json_response({"error": str(exc)}, status=503)  # retried after the backoff
    return web.json_response(output)


async def run_later(request: web.Request) -> web.Response:
    """POST /async: accept the run, finish it in the background."""
    payload = await request.json()
    ctx = AsyncRunContext.from_headers(request.headers)  # closed by finish_later
    task = asyncio.create_task(finish_later(ctx, payload))
    background.add(task)
    task.add_done_callback(background.discard)
    return web.Response(status=202)


async def finish_later(ctx: AsyncRunContext, payload: Any) -> None:
    """The background half of a 202: work while heartbeating, then Complete or Fail the run."""
    async with ctx:
        try:
            problem = bad_input(payload)
            if problem:
                await ctx.fail(problem)
                return
            await ctx.log("accepted; working in the background", data={"attempt": ctx.info.attempt})
            job = asyncio.create_task(work(ctx, payload))
            try:
                finished = await heartbeat_until_done(ctx, job)
            finally:
                job.cancel()  # nothing once the work is done; otherwise it stops here
            if not finished:
                return  # canceled, or this attempt is over: report nothing more
            try:
                output = job.result()
            except FailedPreconditionError:
                return  # the run ended meanwhile (canceled, timed out): this attempt can report no more
            except Exception as exc:
                await ctx.fail(f"{type(exc).__name__}: {exc}")  # failed, no retries
                return
            await ctx.complete(output)  # the run is completed with this output
        except Exception:
            log.exception("run %s: could not report to Strait", ctx.run_id)


async def heartbeat_until_done(ctx: AsyncRunContext, job: asyncio.Task[Any]) -> bool:
    """Heartbeats every HEARTBEAT_SECONDS until `job` is done (True). False when the run was canceled
    (CancelRun) or the attempt is over (its deadline passed): stop working then."""
    while True:
        done, _ = await asyncio.wait({job}, timeout=HEARTBEAT_SECONDS)
        if done:
            return True
        try:
            if await ctx.heartbeat():  # True: the run was canceled
                return False
        except FailedPreconditionError:
            return False


def make_app() -> web.Application:
    # Checkpoints are at most 4 KiB, so X-Last-Checkpoint fits aiohttp's default header limit (8 KiB).
    app = web.Application()
    app.add_routes([web.post("/", run_now), web.post("/async", run_later)])
    return app


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8001
    web.run_app(make_app(), host="127.0.0.1", port=port)
