"""The console's pages, one module per area; each registers its routes."""

from __future__ import annotations

from aiohttp import web

from strait_server.console.pages import (
    admin,
    circuits,
    dead_letter,
    job_edits,
    jobs,
    overview,
    runs,
    schedules,
    workers,
    workflow_runs,
    workflow_steps,
    workflows,
)


def register(router: web.UrlDispatcher) -> None:
    router.add_get("/", runs.home)
    runs.register(router)
    jobs.register(router)
    job_edits.register(router)
    dead_letter.register(router)
    workflows.register(router)
    workflow_runs.register(router)
    workflow_steps.register(router)
    overview.register(router)
    schedules.register(router)
    circuits.register(router)
    workers.register(router)
    admin.register(router)
