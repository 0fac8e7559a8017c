"""A worker: runs the worker jobs "thumbnail" (async) and "checksum" (a plain function, run in the worker's own
threads), from the queue "media".

Start `strait dev` and paste the two `export` lines it prints, then:

    python examples/worker.py --setup          # creates the two worker jobs (once)
    strait worker examples.worker:worker       # or: python examples/worker.py

and, from another shell, trigger runs as for any job:

    python -c 'from strait_client import Client; c = Client.from_env(); \
               r = c.jobs.trigger("thumbnail", {"width": 1280}); print(c.runs.wait(r.id).output)'
"""

from __future__ import annotations

import asyncio
import hashlib
import sys
from typing import Any

from strait_client import AlreadyExistsError, Client, NonRetryableError, TaskContext, Worker

QUEUE = "media"

worker = Worker.from_env(slots=20, name="media-worker")


@worker.handler("thumbnail", queue=QUEUE)
async def thumbnail(ctx: TaskContext, payload: dict[str, Any]) -> dict[str, Any]:
    width = payload.get("width")
    if not isinstance(width, int) or width <= 0:
        raise NonRetryableError(f"width must be a positive integer, not {width!r}")  # retrying will not help
    await asyncio.sleep(0.01)  # the real work would go here; ctx.cancelled is set if the run is taken away
    return {"width": width // 4, "attempt": ctx.attempt}


@worker.handler("checksum", queue=QUEUE)
def checksum(ctx: TaskContext, payload: dict[str, Any]) -> str:
    return hashlib.sha256(str(payload).encode()).hexdigest()


def setup(client: Client) -> None:
    """Creates the worker jobs: no endpoint, execution_mode "worker" and the queue the handlers name."""
    for slug in ("thumbnail", "checksum"):
        try:
            client.jobs.create(slug, execution_mode="worker", queue=QUEUE, max_attempts=3)
        except AlreadyExistsError:
            pass


if __name__ == "__main__":
    if "--setup" in sys.argv:
        with Client.from_env() as client:
            setup(client)
    else:
        worker.run()
