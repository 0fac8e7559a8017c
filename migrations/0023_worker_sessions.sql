-- The workers connected to each server process, for ListWorkers/GetWorker and remote drains. A row lives as
-- long as its session; the hub that holds it refreshes its counts with its heartbeat, and rows of server
-- processes that are gone from `dispatchers` are deleted by the next heartbeat of any hub.
-- depends: 0022_worker_routes

CREATE TABLE worker_sessions (
    id              text PRIMARY KEY,
    project_id      text NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    worker_id       text NOT NULL,
    name            text NOT NULL,
    hostname        text NOT NULL,
    server_id       text NOT NULL,
    handlers        jsonb NOT NULL,
    slots           integer NOT NULL,
    in_flight       integer NOT NULL DEFAULT 0,
    drain_requested boolean NOT NULL DEFAULT false,
    create_time     timestamptz NOT NULL DEFAULT now(),
    seen_time       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX worker_sessions_list_idx ON worker_sessions (project_id, create_time, id);
CREATE INDEX worker_sessions_server_idx ON worker_sessions (server_id);
