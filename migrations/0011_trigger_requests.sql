-- Request ids of triggers (TriggerJob/BatchTriggerJob request_id): a call repeated with the same id, such as a
-- client's retry after a lost answer, returns the runs the first call created instead of creating more.
-- depends: 0010_run_cost_cap

CREATE TABLE trigger_requests (
    project_id  text NOT NULL,
    request_id  text NOT NULL,
    -- The job as the request named it ("id:<job id>" or "slug:<slug>"): a repeat must name the same one.
    selector    text NOT NULL,
    run_ids     text[] NOT NULL,
    -- One letter per run, in request order: n created, r idempotency key matched, d deduplicated, b debounced.
    -- NULL: every run was created.
    outcomes    text,
    create_time timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (project_id, request_id)
);
-- Rows are forgotten oldest first after a day; they are written in time order, so a BRIN index serves that
-- at almost no cost per trigger.
CREATE INDEX trigger_requests_create_time_idx ON trigger_requests USING brin (create_time);
