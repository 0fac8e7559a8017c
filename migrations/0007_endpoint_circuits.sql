-- Circuit breakers per (project, endpoint URL): consecutive failed dispatches open the circuit.
-- depends: 0006_retention

CREATE TABLE endpoint_circuits (
    project_id           text NOT NULL,
    endpoint_url         text NOT NULL,
    state                text NOT NULL DEFAULT 'closed',
    consecutive_failures integer NOT NULL DEFAULT 0,
    open_until           timestamptz,
    -- While half-open: until when the probe owns the endpoint (a probe that never reports is replaced).
    probe_until          timestamptz,
    last_error           text NOT NULL DEFAULT '',
    update_time          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (project_id, endpoint_url)
);
