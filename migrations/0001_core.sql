-- Core schema: projects, API keys, jobs, runs, run events, idempotency keys, dispatcher liveness.
-- depends:

CREATE TABLE projects (
    id          text PRIMARY KEY,
    slug        text NOT NULL UNIQUE,
    name        text NOT NULL,
    create_time timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_keys (
    id          text PRIMARY KEY,
    project_id  text NOT NULL REFERENCES projects (id),
    name        text NOT NULL,
    key_prefix  text NOT NULL,
    key_hash    text NOT NULL UNIQUE,
    create_time timestamptz NOT NULL DEFAULT now(),
    revoke_time timestamptz
);
CREATE INDEX api_keys_project_idx ON api_keys (project_id, create_time, id);

CREATE TABLE jobs (
    id                    text PRIMARY KEY,
    project_id            text NOT NULL REFERENCES projects (id),
    slug                  text NOT NULL,
    name                  text NOT NULL,
    description           text NOT NULL DEFAULT '',
    endpoint_url          text NOT NULL DEFAULT '',
    fallback_endpoint_url text NOT NULL DEFAULT '',
    execution_mode        text NOT NULL DEFAULT 'http',
    queue                 text NOT NULL DEFAULT 'default',
    max_attempts          integer NOT NULL DEFAULT 3,
    timeout_ms            bigint NOT NULL DEFAULT 300000,
    retry_strategy        text NOT NULL DEFAULT 'exponential',
    retry_initial_ms      bigint NOT NULL DEFAULT 1000,
    retry_max_ms          bigint NOT NULL DEFAULT 3600000,
    priority              integer NOT NULL DEFAULT 0,
    enabled               boolean NOT NULL DEFAULT true,
    signing_secret        text NOT NULL DEFAULT '',
    tags                  jsonb NOT NULL DEFAULT '{}',
    metadata              jsonb NOT NULL DEFAULT '{}',
    version               integer NOT NULL DEFAULT 1,
    create_time           timestamptz NOT NULL DEFAULT now(),
    update_time           timestamptz NOT NULL DEFAULT now(),
    delete_time           timestamptz
);
-- A deleted job frees its slug.
CREATE UNIQUE INDEX jobs_project_slug_key ON jobs (project_id, slug) WHERE delete_time IS NULL;
CREATE INDEX jobs_project_list_idx ON jobs (project_id, create_time, id) WHERE delete_time IS NULL;

CREATE TABLE runs (
    id               text PRIMARY KEY,
    project_id       text NOT NULL,
    job_id           text NOT NULL REFERENCES jobs (id),
    status           text NOT NULL,
    attempt          integer NOT NULL DEFAULT 0,
    max_attempts     integer NOT NULL,
    priority         integer NOT NULL DEFAULT 0,
    timeout_ms       bigint NOT NULL,
    payload          text NOT NULL DEFAULT '{}',
    output           text,
    error            text NOT NULL DEFAULT '',
    error_class      text NOT NULL DEFAULT '',
    -- When the run is (or was) due: the trigger's scheduled time, or the end of a retry backoff.
    run_at           timestamptz NOT NULL DEFAULT now(),
    scheduled_time   timestamptz NOT NULL DEFAULT now(),
    create_time      timestamptz NOT NULL DEFAULT now(),
    update_time      timestamptz NOT NULL DEFAULT now(),
    start_time       timestamptz,
    finish_time      timestamptz,
    idempotency_key  text NOT NULL DEFAULT '',
    tags             jsonb NOT NULL DEFAULT '{}',
    metadata         jsonb NOT NULL DEFAULT '{}',
    attempt_history  jsonb NOT NULL DEFAULT '[]',
    replay_of        text NOT NULL DEFAULT '',
    -- Lease: which dispatcher process owns the executing attempt, and until when at most.
    lease_owner      text,
    deadline         timestamptz,
    -- Per-run event sequence, bumped under the row lock by every event written for the run.
    event_seq        bigint NOT NULL DEFAULT 0
) WITH (
    -- Runs churn (every dispatch updates a row several times): vacuum at 5% dead rows rather than 20%,
    -- and keep statistics fresh as the table grows. Vacuum keeps its normal pace: full speed on a big
    -- table steals the CPU the dispatcher needs (bimodal throughput in bench/ showed it).
    autovacuum_vacuum_scale_factor = 0.05,
    autovacuum_analyze_scale_factor = 0.02
);
CREATE INDEX runs_delayed_idx ON runs (run_at) WHERE status = 'delayed';
CREATE INDEX runs_project_list_idx ON runs (project_id, create_time DESC, id DESC);
CREATE INDEX runs_job_list_idx ON runs (job_id, create_time DESC, id DESC);

-- The ready queue: one row per run whose status is 'queued', written and deleted by the same statements
-- that move runs in and out of that status. Claims scan this small table instead of an index on runs,
-- whose dead entries (every dispatched run leaves one) would pile up at the front of the scan until the
-- next vacuum of the whole runs table; the scheduler vacuums this one every few seconds.
CREATE TABLE run_queue (
    run_id   text PRIMARY KEY,
    job_id   text NOT NULL,
    priority integer NOT NULL,
    run_at   timestamptz NOT NULL
) WITH (
    autovacuum_vacuum_scale_factor = 0.0,
    autovacuum_vacuum_threshold = 500,
    autovacuum_vacuum_cost_delay = 0,
    -- Truncating the emptied tail takes an ACCESS EXCLUSIVE lock that stalls every claim behind it.
    vacuum_truncate = false
);
CREATE INDEX run_queue_claim_idx ON run_queue (priority DESC, run_at, run_id);

-- Leases of executing runs: one row per run whose status is 'executing', for the recovery sweep and
-- shutdown hand-back. Like run_queue, a small table vacuumed often, so that no index on the big runs
-- table collects a dead entry for every settled run (which made settles walk them all).
CREATE TABLE run_leases (
    run_id   text PRIMARY KEY,
    owner    text NOT NULL,
    deadline timestamptz NOT NULL
) WITH (
    autovacuum_vacuum_scale_factor = 0.0,
    autovacuum_vacuum_threshold = 500,
    autovacuum_vacuum_cost_delay = 0,
    -- Truncating the emptied tail takes an ACCESS EXCLUSIVE lock that stalls every claim behind it.
    vacuum_truncate = false
);
CREATE INDEX run_leases_owner_idx ON run_leases (owner);

CREATE TABLE run_events (
    id          bigserial PRIMARY KEY,
    run_id      text NOT NULL,
    project_id  text NOT NULL,
    job_id      text NOT NULL,
    seq         bigint NOT NULL,
    type        text NOT NULL,
    from_status text NOT NULL DEFAULT '',
    to_status   text NOT NULL DEFAULT '',
    attempt     integer NOT NULL DEFAULT 0,
    message     text NOT NULL DEFAULT '',
    data        jsonb NOT NULL DEFAULT '{}',
    -- Commit-order cursor for the project feed (see docs/architecture.md).
    xid         xid8 NOT NULL DEFAULT pg_current_xact_id(),
    create_time timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX run_events_run_seq_key ON run_events (run_id, seq);
CREATE INDEX run_events_feed_idx ON run_events (project_id, xid, id);

-- Idempotency keys of triggers and replays, scoped to a job (or to the replayed run).
CREATE TABLE idempotency_keys (
    scope       text NOT NULL,
    key         text NOT NULL,
    run_id      text NOT NULL,
    create_time timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (scope, key)
);

-- One row per dispatching process; its heartbeat is the liveness of every run it owns.
CREATE TABLE dispatchers (
    id             text PRIMARY KEY,
    hostname       text NOT NULL DEFAULT '',
    pid            integer NOT NULL DEFAULT 0,
    start_time     timestamptz NOT NULL DEFAULT now(),
    heartbeat_time timestamptz NOT NULL DEFAULT now()
);
