"""What the servicers need, built once by the composition root."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from strait_server import errors
from strait_server.api import validate
from strait_server.api.interceptor import Authenticator, project_id
from strait_server.api.limits import Limiter
from strait_server.api.pagination import PageTokens
from strait_server.api.streams import StreamLimits
from strait_server.auth import RunTokenSigner
from strait_server.budget import BudgetGuard
from strait_server.config import Settings
from strait_server.errors import Violations
from strait_server.events import EventBus
from strait_server.model import Job, Run, RunStatus
from strait_server.service.triggers import DirectDispatch, Triggers
from strait_server.service.workflow_runs import WorkflowRuns
from strait_server.store.circuits import CircuitStore
from strait_server.store.feed import FeedStore
from strait_server.store.jobs import JobStore
from strait_server.store.projects import ProjectStore
from strait_server.store.run_context import RunContextStore
from strait_server.store.run_stats import RunStatsStore
from strait_server.store.runs import RunStore
from strait_server.store.sent_events import SentEventStore
from strait_server.store.worker_sessions import WorkerSessionStore
from strait_server.store.workflow_runs import WorkflowRunStore
from strait_server.store.workflows import WorkflowStore
from strait_server.workers.hub import WorkerHub


@dataclass(frozen=True)
class Deps:
    settings: Settings
    projects: ProjectStore
    jobs: JobStore
    runs: RunStore
    # GetRunStats's reads.
    run_stats: RunStatsStore
    authenticator: Authenticator
    page_tokens: PageTokens
    # Called after runs are enqueued (wakes dispatchers) and after delayed runs are created.
    on_enqueued: Callable[[], None]
    on_delayed: Callable[[], None]
    events: EventBus
    context: RunContextStore
    feed: FeedStore
    tokens: RunTokenSigner
    streams: StreamLimits
    circuits: CircuitStore
    # Project budgets: refuses new runs of a project whose budget is spent (action reject).
    budgets: BudgetGuard
    workflows: WorkflowStore
    workflow_runs: WorkflowRuns
    workflow_run_store: WorkflowRunStore
    sent_events: SentEventStore
    direct: DirectDispatch | None = None
    # The worker plane of this process (WorkerService), when it serves workers.
    worker_hub: WorkerHub | None = None
    worker_sessions: WorkerSessionStore | None = None
    # API rate limits and the failed-authentication lockout (None without Redis).
    limiter: Limiter | None = None

    def announce(self, runs: Iterable[Run]) -> None:
        """After runs were created: wake their watchers, the dispatchers (queued ones) and the promoter
        (delayed ones)."""
        created = list(runs)
        self.events.published(r.id for r in created)
        statuses = {r.status for r in created}
        if RunStatus.QUEUED in statuses:
            self.on_enqueued()
        if RunStatus.DELAYED in statuses:
            self.on_delayed()


def triggers_of(deps: Deps) -> Triggers:
    return Triggers(runs=deps.runs, jobs=deps.jobs, budgets=deps.budgets, published=deps.events.published,
                    announce=deps.announce, direct=deps.direct, workers=deps.worker_hub)


async def selected_job(deps: Deps, v: Violations, request: object) -> Job:
    """The caller's job named by a request's `selector` oneof (id or slug); NOT_FOUND otherwise."""
    job_id, slug = validate.selector(v, request)
    v.raise_if_any()
    return await deps.jobs.get(project_id(), job_id=job_id, slug=slug)


def require_schedule(job: Job) -> None:
    if not job.cron:
        raise errors.FailedPrecondition(f"job {job.slug!r} has no schedule (set its cron first)",
                                        reason="NO_SCHEDULE", subject=job.id, violation_type="JOB_STATE")
