-- Workflow runs: a run of one version of a workflow, its step runs, its events, and the queue through which
-- the end of a step's job run reaches the workflow engine.
-- depends: 0012_workflows

CREATE TABLE workflow_runs (
    id              text PRIMARY KEY,
    project_id      text NOT NULL REFERENCES projects (id),
    workflow_id     text NOT NULL,
    version         integer NOT NULL,
    status          text NOT NULL,
    input           jsonb NOT NULL,
    error           text NOT NULL DEFAULT '',
    idempotency_key text NOT NULL DEFAULT '',
    -- Step runs not finished yet: the run ends when this reaches 0.
    steps_open      integer NOT NULL,
    -- Steps that failed (or were canceled) with an on_failure other than IGNORE: the run ends FAILED.
    steps_failed    integer NOT NULL DEFAULT 0,
    -- The sequence of the run's latest event (workflow_run_events.seq).
    event_seq       bigint NOT NULL DEFAULT 0,
    create_time     timestamptz NOT NULL DEFAULT now(),
    start_time      timestamptz,
    finish_time     timestamptz,
    update_time     timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (workflow_id, version) REFERENCES workflow_versions (workflow_id, version)
);
CREATE INDEX workflow_runs_list_idx ON workflow_runs (project_id, create_time DESC, id DESC);
CREATE INDEX workflow_runs_workflow_idx ON workflow_runs (workflow_id, create_time DESC, id DESC);
CREATE UNIQUE INDEX workflow_runs_idempotency_key ON workflow_runs (workflow_id, idempotency_key)
    WHERE idempotency_key <> '';

CREATE TABLE workflow_step_runs (
    id              text PRIMARY KEY,
    workflow_run_id text NOT NULL REFERENCES workflow_runs (id),
    step_ref        text NOT NULL,
    status          text NOT NULL,
    skip_reason     text NOT NULL DEFAULT '',
    -- How its parents ended, counted as they end: the trigger rule decides from these.
    parents_total   integer NOT NULL,
    parents_done    integer NOT NULL DEFAULT 0,
    parents_ok      integer NOT NULL DEFAULT 0,
    parents_failed  integer NOT NULL DEFAULT 0,
    parents_skipped integer NOT NULL DEFAULT 0,
    job_run_id      text,
    output          jsonb,
    error           text NOT NULL DEFAULT '',
    create_time     timestamptz NOT NULL DEFAULT now(),
    start_time      timestamptz,
    finish_time     timestamptz,
    update_time     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (workflow_run_id, step_ref)
);

CREATE TABLE workflow_run_events (
    workflow_run_id text NOT NULL,
    seq             bigint NOT NULL,
    type            text NOT NULL,
    step_ref        text NOT NULL DEFAULT '',
    from_status     text NOT NULL DEFAULT '',
    to_status       text NOT NULL DEFAULT '',
    message         text NOT NULL DEFAULT '',
    create_time     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workflow_run_id, seq)
);

-- The job run of a step (one per step run).
ALTER TABLE runs ADD COLUMN workflow_step_run_id text;
CREATE UNIQUE INDEX runs_workflow_step_key ON runs (workflow_step_run_id) WHERE workflow_step_run_id IS NOT NULL;

-- A step's job run that ended, waiting for the engine. Written by the trigger below in the transaction that
-- ends the run, whichever statement that is (settle, recovery, expiry, cancel, the run's own Complete/Fail),
-- and deleted by the engine in the transaction that moves the workflow on: nothing is lost or done twice.
CREATE TABLE workflow_progress (
    id          bigserial PRIMARY KEY,
    step_run_id text NOT NULL,
    run_id      text NOT NULL
);

CREATE FUNCTION strait_note_step_run_end() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO workflow_progress (step_run_id, run_id) VALUES (NEW.workflow_step_run_id, NEW.id);
    -- Delivered at commit: wakes the engine.
    PERFORM pg_notify('strait_workflow_progress', '');
    RETURN NULL;
END
$$;

-- The WHEN clause is checked without calling the function: runs that are no step cost nothing.
CREATE TRIGGER runs_step_run_end AFTER UPDATE OF status ON runs
    FOR EACH ROW
    WHEN (NEW.workflow_step_run_id IS NOT NULL AND OLD.status IS DISTINCT FROM NEW.status
          AND NEW.status IN ('completed', 'failed', 'timed_out', 'crashed', 'system_failed', 'canceled', 'expired',
                             'dead_letter'))
    EXECUTE FUNCTION strait_note_step_run_end();
