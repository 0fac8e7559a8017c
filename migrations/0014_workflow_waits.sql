-- Steps that wait: approvals, event waits and sleeps; the events sent to them; their timers.
-- depends: 0013_workflow_runs

ALTER TABLE workflow_step_runs
    -- What a waiting step waits for: 'approval', 'event:<key>' or 'sleep'.
    ADD COLUMN waiting_reason text NOT NULL DEFAULT '',
    -- When a waiting step's timer fires (a sleep ends, an approval or event wait times out); NULL: never.
    ADD COLUMN wake_time timestamptz;
-- The timers: the engine fires those due, and sleeps until the next one.
CREATE INDEX workflow_step_runs_timers ON workflow_step_runs (wake_time)
    WHERE status = 'waiting' AND wake_time IS NOT NULL;

-- Events sent with EventService.SendEvent, kept 24 hours so that a wait may look back for one sent before it.
CREATE TABLE events (
    id              text PRIMARY KEY,
    project_id      text NOT NULL REFERENCES projects (id),
    key             text NOT NULL,
    payload         jsonb,
    idempotency_key text NOT NULL DEFAULT '',
    create_time     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX events_by_key ON events (project_id, key, create_time);
CREATE INDEX events_by_time ON events (create_time);
CREATE UNIQUE INDEX events_idempotency_key ON events (project_id, idempotency_key) WHERE idempotency_key <> '';

-- The steps waiting for an event, by key: what SendEvent looks up. A row lives while its step waits.
CREATE TABLE event_waits (
    step_run_id     text PRIMARY KEY,
    workflow_run_id text NOT NULL,
    project_id      text NOT NULL,
    event_key       text NOT NULL,
    -- The step's CEL match over the payload ('': any payload).
    match           text NOT NULL DEFAULT ''
);
CREATE INDEX event_waits_by_key ON event_waits (project_id, event_key);

-- An event that resolved a waiting step reaches the engine like the end of a step's job run.
ALTER TABLE workflow_progress
    ALTER COLUMN run_id DROP NOT NULL,
    ADD COLUMN event_id text;
