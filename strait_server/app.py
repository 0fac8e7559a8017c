"""Composition root: builds the components for the chosen roles, starts and stops them in order."""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
from dataclasses import dataclass, field
from enum import StrEnum

import grpc
import redis.asyncio as aioredis
from grpc_health.v1 import health
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider

from strait_server import db
from strait_server.api.deps import Deps
from strait_server.api.interceptor import Authenticator
from strait_server.api.limits import Limiter
from strait_server.api.pagination import PageTokens
from strait_server.api.server import build_server, set_serving
from strait_server.api.streams import StreamLimits
from strait_server.auth import RunTokenSigner
from strait_server.budget import BudgetGuard
from strait_server.config import ConfigError, Settings
from strait_server.console.server import ConsoleServer
from strait_server.dispatch.dispatcher import Dispatcher
from strait_server.dispatch.http import HttpExecutor
from strait_server.events import EventBus
from strait_server.model import ApiRateLimit
from strait_server.queue import Queue
from strait_server.redis_health import CALL_TIMEOUT_S, RedisHealth
from strait_server.scheduler.cron import Clock, CronScheduler
from strait_server.scheduler.retention import RetentionSweeper
from strait_server.scheduler.sweeper import Sweeper
from strait_server.scheduler.workflow_cron import WorkflowCron
from strait_server.service.workflow_runs import WorkflowRuns
from strait_server.store.budgets import BudgetStore
from strait_server.store.circuits import CircuitStore
from strait_server.store.feed import FeedStore
from strait_server.store.jobs import JobStore
from strait_server.store.projects import ProjectStore
from strait_server.store.retention import RetentionStore
from strait_server.store.run_context import RunContextStore
from strait_server.store.run_stats import RunStatsStore
from strait_server.store.runs import RunStore
from strait_server.store.sent_events import SentEventStore
from strait_server.store.stats import runs_by_queue
from strait_server.store.worker_sessions import WorkerSessionStore
from strait_server.store.workflow_runs import WorkflowRunStore
from strait_server.store.workflows import WorkflowStore
from strait_server.tasks import Supervisor
from strait_server.telemetry import Telemetry, server_tracer_provider
from strait_server.telemetry.exposition import MetricsServer
from strait_server.tls import server_credentials
from strait_server.wake import PostgresTransport, RedisTransport, WakeHub
from strait_server.workers.hub import WorkerHub
from strait_server.workflows.engine import Changes, Plans
from strait_server.workflows.progress_loop import WorkflowProgress

log = logging.getLogger(__name__)


def _redis_client(url: str, max_connections: int) -> aioredis.Redis:
    """A bounded connection budget: a call finding every connection busy waits briefly for one and then gives
    up (callers go on without Redis), instead of opening one more per concurrent caller."""
    pool = aioredis.BlockingConnectionPool.from_url(
        url, max_connections=max_connections, timeout=CALL_TIMEOUT_S, socket_timeout=3, socket_connect_timeout=3,
        health_check_interval=10)
    return aioredis.Redis(connection_pool=pool)


async def _close_pool(pool: db.Pool, timeout_s: float) -> None:
    try:
        # Waits for borrowed connections; one never returned must not hang the exit.
        await asyncio.wait_for(pool.close(), timeout_s)
    except TimeoutError:
        log.warning("database pool did not close in time; terminating it", extra={"action": "pool_terminate"})
        pool.terminate()


class Role(StrEnum):
    API = "api"
    WORKER = "worker"
    SCHEDULER = "scheduler"


ALL_ROLES = frozenset(Role)


def roles_for_mode(mode: str) -> frozenset[Role]:
    return ALL_ROLES if mode == "all" else frozenset({Role(mode)})


@dataclass
class App:
    settings: Settings
    roles: frozenset[Role] = ALL_ROLES
    port: int = 0
    pool: db.Pool | None = None
    redis: aioredis.Redis | None = None
    dispatcher: Dispatcher | None = None
    # The worker plane (API role): the sessions of the workers connected to this process.
    worker_hub: WorkerHub | None = None
    console: ConsoleServer | None = None
    _console_dir: str = ""
    _server: grpc.aio.Server | None = None
    _tls: grpc.ServerCredentials | None = None  # None: the gRPC port is plaintext
    _health: health.aio.HealthServicer | None = None
    _wake: WakeHub | None = None
    _redis_health: RedisHealth | None = None
    _sweeper: Sweeper | None = None
    _retention: RetentionSweeper | None = None
    # The workflow engine's loop (scheduler role).
    workflow_progress: WorkflowProgress | None = None
    _engine_pool: db.Pool | None = None
    # Workflow definitions by version, parsed once per process (versions never change).
    _workflow_plans: Plans = field(default_factory=Plans)
    _budgets: BudgetGuard | None = None
    _executor: HttpExecutor | None = None
    clock: Clock | None = None  # injectable for the cron scheduler's tests; None: PostgreSQL's now()
    cron: CronScheduler | None = None
    _queue_pool: db.Pool | None = None
    _settle_pool: db.Pool | None = None
    _claim_pool: db.Pool | None = None
    _worker_claim_pool: db.Pool | None = None
    events: EventBus | None = None
    # Tests give one (with an in-memory exporter); None: from the OTEL_* variables (tracing off unless set).
    tracer_provider: trace.TracerProvider | None = None
    telemetry: Telemetry = field(default_factory=Telemetry)
    metrics_port: int = 0  # where /metrics is served (STRAIT_METRICS_ADDRESS), 0 when it is not
    _metrics_server: MetricsServer | None = None
    _owned_tracer_provider: SdkTracerProvider | None = None
    _stopped: asyncio.Event = field(default_factory=asyncio.Event)
    # Runs every background loop; `supervisor.crashed` is set when one dies, and `strait serve` then exits.
    supervisor: Supervisor = field(default_factory=Supervisor)

    async def start(self, *, migrate: bool = True) -> None:
        s = self.settings
        # Before anything connects: a TLS file that cannot be used stops start-up with its variable's name.
        self._tls = server_credentials(s) if Role.API in self.roles else None
        if migrate:
            await db.apply_migrations(s.database_url)
        self.pool = await db.create_pool(s.database_url, min_size=s.db_pool_min, max_size=s.db_pool_max)
        pending = await db.pending_migrations(self.pool)
        if pending:
            raise RuntimeError(f"the database lacks migrations {', '.join(pending)}; run `strait migrate`")
        tel = await self._start_telemetry()
        # One budget guard for the API and the cron scheduler: a crossing reported here applies to both.
        self._budgets = BudgetGuard(BudgetStore(self.pool), tel.metrics)
        self.redis = _redis_client(s.redis_url, s.redis_max_connections) if s.redis_url else None
        if self.redis is not None:
            self._redis_health = RedisHealth(self.redis, self.supervisor)
            self._redis_health.start()
        self._wake = WakeHub(self._wake_transport(), self.supervisor)
        self._wake.start_publishing()
        self.events = EventBus(self.redis, s.redis_namespace, self.supervisor, self._redis_health)
        self.events.start_publishing()
        # The dispatch path commits without waiting for the WAL flush: losing such a commit in a PostgreSQL
        # crash only re-delivers a run, which at-least-once delivery already allows. Triggers stay durable.
        self._queue_pool = await db.create_pool(s.database_url, min_size=1, max_size=4,
                                                server_settings={"synchronous_commit": "off"})
        # The plain claim walks run_queue's index, and is pinned to it: run_queue goes from empty to thousands
        # of rows far faster than autovacuum re-analyses it, and on statistics taken while it was empty the
        # claim sorted the whole queue per batch (50 ms instead of 6 ms for 100 of 10,000 queued runs).
        self._claim_pool = await db.create_pool(s.database_url, min_size=1, max_size=1, server_settings={
            "synchronous_commit": "off", "enable_seqscan": "off", "enable_bitmapscan": "off"})
        # Settles on sessions that always use the statement's generic plan: with one-element arrays, PostgreSQL
        # estimates a custom plan cheaper and plans SETTLE afresh on every call (0.5 ms of its 0.75 ms on two
        # cores, once per step of a workflow chain); the generic plan, by key, is the same plan.
        self._settle_pool = await db.create_pool(s.database_url, min_size=1, max_size=2, server_settings={
            "synchronous_commit": "off", "plan_cache_mode": "force_generic_plan"})
        queue = Queue(self._queue_pool, tel.metrics, claim_pool=self._claim_pool, settle_pool=self._settle_pool)
        if Role.SCHEDULER in self.roles:
            self._sweeper = Sweeper(queue, interval=s.sweep_interval, owner_stale_after=s.owner_stale_after,
                                    max_lost_requeues=s.max_lost_requeues, on_requeued=self._wake.notify,
                                    on_events=self.events.published, supervisor=self.supervisor)
            self._sweeper.start()
            workflow_cron = WorkflowCron(self.pool, WorkflowStore(self.pool), self._workflow_plans,
                                         on_changes=self._workflows_moved, budgets=self._budgets, metrics=tel.metrics)
            self.cron = CronScheduler(self.pool, JobStore(self.pool, tel.metrics), RunStore(self.pool, tel),
                                      interval=s.cron_interval, clock=self.clock,
                                      on_events=self.events.published, on_enqueued=self._wake.notify,
                                      metrics=tel.metrics, budgets=self._budgets, supervisor=self.supervisor,
                                      workflows=workflow_cron)
            self.cron.start()
            # Also with retention off (0): trigger request ids are forgotten after a day regardless.
            self._retention = RetentionSweeper(RetentionStore(self.pool), retention=s.retention,
                                               interval=s.retention_interval, batch_size=s.retention_batch_size,
                                               metrics=tel.metrics, supervisor=self.supervisor)
            self._retention.start()
            # The engine's own connections, committing without waiting for the WAL flush (see take_progress):
            # a disk flush less per step of a workflow. On generic plans, like the settles: the engine's
            # statements go by key and by arrays of ids, which custom plans only re-plan at a cost.
            self._engine_pool = await db.create_pool(s.database_url, min_size=1, max_size=2, server_settings={
                "synchronous_commit": "off", "plan_cache_mode": "force_generic_plan"})
            self.workflow_progress = WorkflowProgress(
                self._engine_pool, s.database_url, self._workflow_plans, on_changes=self._workflows_moved,
                metrics=tel.metrics, supervisor=self.supervisor, poll_interval=s.sweep_interval.total_seconds(),
                clock=self.clock)
            self.workflow_progress.start()
        if Role.WORKER in self.roles:
            await self._wake.start_listening()
            self._executor = HttpExecutor(
                allow_private=s.allow_private_endpoints,
                jwt_key=s.jwt_signing_key, max_output_bytes=s.max_output_bytes,
                token_margin_s=s.run_token_ttl_margin.total_seconds())
            await self._executor.start()
            self.dispatcher = Dispatcher(queue, self._executor, self._wake.event, s, on_events=self.events.published,
                                         telemetry=tel, supervisor=self.supervisor)
            if self.cron is not None:
                self.dispatcher.yield_to = self.cron.idle
            await self.dispatcher.start()
            if self.workflow_progress is not None:
                self.workflow_progress.local = self.dispatcher
        if Role.API in self.roles:
            await self.events.start()
            await self._start_api()

    def _limiter(self) -> Limiter | None:
        s = self.settings
        if self.redis is None:
            return None
        default = ApiRateLimit(s.api_rate_limit, s.api_rate_window) if s.api_rate_limit > 0 else None
        return Limiter(self.redis, s.redis_namespace, default=default, lockout=s.lockout_tiers(),
                       failure_window=s.auth_failure_window, health=self._redis_health)

    async def _start_telemetry(self) -> Telemetry:
        """Tracing from the given or configured provider; the metrics endpoint when an address is set."""
        s = self.settings
        provider = self.tracer_provider
        if provider is None:
            provider = self.tracer_provider = server_tracer_provider()
            if isinstance(provider, SdkTracerProvider) and provider is not trace.get_tracer_provider():
                self._owned_tracer_provider = provider  # ours to flush at stop
        self.telemetry = Telemetry(provider)
        if s.metrics_address:
            refresh = self._refresh_runs if Role.SCHEDULER in self.roles else None
            self._metrics_server = MetricsServer(self.telemetry.metrics, s.metrics_address, refresh)
            await self._metrics_server.start()
            self.metrics_port = self._metrics_server.port
        return self.telemetry

    async def _refresh_runs(self, budget_s: float) -> None:
        # One process role reports the database-wide counts, so that summing over processes stays rare.
        assert self.pool is not None
        self.telemetry.metrics.set_runs(await runs_by_queue(self.pool, budget_s))

    def _wake_transport(self) -> RedisTransport | PostgresTransport | None:
        s = self.settings
        if s.wake_via == "postgres":
            assert self.pool is not None
            return PostgresTransport(self.pool, s.database_url, s.redis_namespace)
        if self.redis is None:
            return None
        assert self._redis_health is not None  # made with the client
        return RedisTransport(self.redis, s.redis_namespace, self._redis_health)

    def _workflows_moved(self, changes: Changes) -> None:
        """After a workflow engine move committed: wake dispatchers for the job runs it queued, and watchers;
        count what it did."""
        metrics = self.telemetry.metrics
        metrics.workflow_runs_started.inc(changes.runs_started)
        for status in changes.runs_ended:
            metrics.workflow_runs_ended.labels(status).inc()
        for kind, status, seconds in changes.step_durations:
            metrics.workflow_step_duration.labels(kind, status).observe(max(seconds, 0.0))
        if self.events is not None:
            self.events.published([*(r.id for r in changes.job_runs), *changes.canceled_job_runs,
                                   *changes.workflow_runs])
        if changes.claimed and self.dispatcher is not None:
            self.dispatcher.take_claimed(changes.claimed, changes.claim_started_ns)
        if len(changes.job_runs) > len(changes.claimed) and self._wake is not None:
            self._wake.notify_soon()

    async def _start_api(self) -> None:
        assert self.pool is not None and self._wake is not None and self.events is not None
        s = self.settings
        projects = ProjectStore(self.pool)
        sweeper = self._sweeper
        tel = self.telemetry
        streams = StreamLimits(s.watch_max_streams_per_project)
        tel.metrics.watch_streams.set_function(lambda: streams.open_streams)  # read at scrape time
        budgets = self._budgets
        assert budgets is not None  # made in start(), before the roles
        assert self._queue_pool is not None
        # The worker plane claims on a session of its own, pinned to index plans like the HTTP claim's.
        self._worker_claim_pool = await db.create_pool(s.database_url, min_size=1, max_size=1, server_settings={
            "synchronous_commit": "off", "enable_seqscan": "off", "enable_bitmapscan": "off"})
        bus = self.events
        assert bus is not None  # made in start(), before the roles
        self.worker_hub = WorkerHub(Queue(self._queue_pool, tel.metrics, claim_pool=self._worker_claim_pool,
                                          settle_pool=self._settle_pool),
                                    WorkerSessionStore(self.pool), s, RunTokenSigner(s.jwt_signing_key),
                                    on_events=self.events.published, telemetry=tel, supervisor=self.supervisor,
                                    events_live=lambda: bus.healthy)
        await self.worker_hub.start()
        self._wake.subscribe(self.worker_hub.notify)
        self.events.on_runs(self.worker_hub.runs_changed)
        deps = Deps(
            settings=s, projects=projects, jobs=JobStore(self.pool, tel.metrics), runs=RunStore(self.pool, tel),
            run_stats=RunStatsStore(self.pool), authenticator=Authenticator(projects, s.admin_key, s.jwt_signing_key),
            page_tokens=PageTokens(s.jwt_signing_key or s.admin_key),
            on_enqueued=self._wake.notify_soon,
            on_delayed=(sweeper.nudge.set if sweeper is not None else (lambda: None)),
            direct=self.dispatcher,
            events=self.events,
            context=RunContextStore(self.pool, tel.metrics),
            feed=FeedStore(self.pool),
            tokens=RunTokenSigner(s.jwt_signing_key),
            streams=streams,
            limiter=self._limiter(),
            circuits=CircuitStore(self.pool),
            budgets=budgets,
            workflows=WorkflowStore(self.pool),
            workflow_runs=WorkflowRuns(self.pool, WorkflowStore(self.pool), self._workflow_plans, budgets,
                                       self._workflows_moved),
            workflow_run_store=WorkflowRunStore(self.pool),
            sent_events=SentEventStore(self.pool),
            worker_hub=self.worker_hub,
            worker_sessions=WorkerSessionStore(self.pool),
        )
        self._server, self._health = build_server(deps, tel.server_interceptors(metrics=bool(s.metrics_address)),
                                                  tel.metrics)
        try:  # gRPC logs why (in use, no such address) and raises RuntimeError, or in older versions returns 0
            self.port = (self._server.add_secure_port(s.address, self._tls) if self._tls is not None
                         else self._server.add_insecure_port(s.address))
        except RuntimeError:
            self.port = 0
        if self.port == 0:
            raise ConfigError(f"cannot listen on {s.address}: the address is in use or not available here")
        console_socket = ""
        if s.console_address:
            # The console calls the API on a Unix socket in a directory only this user can enter: the same
            # authorization as any caller, without the TCP port's TLS (or its client certificates), and a
            # peer the API may believe when it names the browser it calls for (see api.limits).
            self._console_dir = tempfile.mkdtemp(prefix="strait-console-")
            console_socket = f"unix:{self._console_dir}/api.sock"
            self._server.add_insecure_port(console_socket)
        await self._server.start()
        if s.console_address:
            self.console = ConsoleServer(s.console_address, console_socket, s.console_session_ttl.total_seconds(),
                                         secure_cookie=s.console_secure_cookie)
            await self.console.start()
        await set_serving(self._health, True)
        log.info("serving gRPC", extra={"action": "serve", "address": s.address, "port": self.port,
                                        "tls": self._tls is not None, "mutual_tls": bool(s.tls_client_ca_file)})

    async def stop(self) -> None:
        """Idempotent, ordered shutdown: stop serving and claiming, drain, hand back, close."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        s = self.settings
        await self._stop_serving()
        # Then the side components, in reverse order of start, and the connections last.
        for component in (self.workflow_progress, self._retention, self._sweeper, self.cron, self._wake, self.events,
                          self._redis_health):
            if component is not None:
                await component.stop()
        if self._executor is not None:
            await self._executor.close()
        await self._stop_telemetry()
        if self.redis is not None:
            await self.redis.aclose()
        for pool in (self._engine_pool, self._worker_claim_pool, self._claim_pool, self._settle_pool,
                     self._queue_pool, self.pool):
            if pool is not None:
                await _close_pool(pool, s.shutdown_grace.total_seconds() + 5)

    async def _stop_serving(self) -> None:
        """Stops serving calls and claiming runs, side by side: calls end within the grace, dispatches drain."""
        s = self.settings
        if self._health is not None:
            await set_serving(self._health, False)
        tasks = []
        if self.worker_hub is not None:  # workers finish and report what they hold before their streams end
            await self.worker_hub.drain(s.drain_timeout.total_seconds())
        if self.console is not None:  # its live pages are streams of the API's
            await self.console.stop()
        if self._console_dir:
            shutil.rmtree(self._console_dir, ignore_errors=True)
        if self._server is not None:
            tasks.append(self._server.stop(s.shutdown_grace.total_seconds()))
        if self.dispatcher is not None:
            tasks.append(self.dispatcher.stop(s.drain_timeout.total_seconds()))
        await asyncio.gather(*tasks)
        if self.worker_hub is not None:  # after the server: its sessions' streams have ended
            await self.worker_hub.stop()

    async def _stop_telemetry(self) -> None:
        if self._metrics_server is not None:
            await self._metrics_server.stop()
        if self._owned_tracer_provider is not None:
            await asyncio.to_thread(self._owned_tracer_provider.shutdown)  # exports the spans still batched
