-- Flow control: concurrency limits per job and per concurrency key, dispatch rate limits, execution
-- windows, poison-pill detection, dedup and debounce windows.
-- depends: 0004_run_ttl

ALTER TABLE jobs
    ADD COLUMN max_concurrency integer NOT NULL DEFAULT 0,
    ADD COLUMN max_concurrency_per_key integer NOT NULL DEFAULT 0,
    ADD COLUMN rate_limit_max integer NOT NULL DEFAULT 0,
    ADD COLUMN rate_limit_window_ms bigint NOT NULL DEFAULT 0,
    ADD COLUMN execution_window_cron text NOT NULL DEFAULT '',
    ADD COLUMN poison_pill_threshold integer NOT NULL DEFAULT 0,
    ADD COLUMN dedup_window_ms bigint NOT NULL DEFAULT 0,
    ADD COLUMN debounce_window_ms bigint NOT NULL DEFAULT 0;

ALTER TABLE runs
    ADD COLUMN concurrency_key text NOT NULL DEFAULT '',
    -- Why a due run is not starting (concurrency limit, rate limit, execution window); '' once it starts.
    ADD COLUMN wait_reason text NOT NULL DEFAULT '';

-- A flow-controlled run waits in its gate: the job id, or "<job id>/<concurrency key>" when the job limits
-- runs per key. NULL: the run needs nothing but a free dispatcher slot.
ALTER TABLE run_queue ADD COLUMN gate text;
-- The plain claim walks only ungated runs, so a backlog held by a limit never slows it down.
DROP INDEX run_queue_claim_idx;
CREATE INDEX run_queue_claim_idx ON run_queue (priority DESC, run_at, run_id) WHERE gate IS NULL;
-- The gated claim visits each gate once (a loose index scan) and takes its best runs.
CREATE INDEX run_queue_gate_idx ON run_queue (gate, priority DESC, run_at, run_id) WHERE gate IS NOT NULL;

-- Executing runs per job and per key are counted from their leases: no counter to drift. No index: the
-- table holds only executing runs, and an index would cost every claim and settle to spare the gated
-- claim a scan of a few hundred rows.
ALTER TABLE run_leases
    ADD COLUMN job_id text NOT NULL DEFAULT '',
    ADD COLUMN concurrency_key text NOT NULL DEFAULT '';
UPDATE run_leases l SET job_id = r.job_id FROM runs r WHERE r.id = l.run_id;

-- The gate of a queued run, from its job's limits: every statement that puts runs in the ready queue sets
-- it with strait_gate (inlined, where the job's row is at hand) or strait_run_gate (a lookup), and UpdateJob
-- re-gates a job's queued runs when its limits change: one definition of which runs are flow-controlled.
CREATE FUNCTION strait_gate(job_id text, concurrency_key text, max_concurrency integer,
                            max_concurrency_per_key integer, rate_limit_max integer, execution_window_cron text)
RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN max_concurrency_per_key > 0 AND concurrency_key <> '' THEN job_id || '/' || concurrency_key
                WHEN max_concurrency > 0 OR max_concurrency_per_key > 0 OR rate_limit_max > 0
                     OR execution_window_cron <> '' THEN job_id END
$$;
CREATE FUNCTION strait_run_gate(p_run_id text) RETURNS text LANGUAGE sql STABLE AS $$
    SELECT strait_gate(j.id, r.concurrency_key, j.max_concurrency, j.max_concurrency_per_key, j.rate_limit_max,
                       j.execution_window_cron)
    FROM runs r JOIN jobs j ON j.id = r.job_id WHERE r.id = p_run_id
$$;

-- Dispatch starts per job in the current fixed window, shared by every dispatcher process.
CREATE TABLE job_rate_windows (
    job_id       text PRIMARY KEY,
    window_start timestamptz NOT NULL,
    started      integer NOT NULL
);

-- The run collecting a job's debounced triggers (per debounce key) while it waits, delayed, for its window
-- to close.
CREATE TABLE debounce_runs (
    job_id       text NOT NULL,
    debounce_key text NOT NULL,
    run_id       text NOT NULL,
    PRIMARY KEY (job_id, debounce_key)
);
-- Retention deletes the rows of the runs it deletes.
CREATE INDEX debounce_runs_run_idx ON debounce_runs (run_id);
