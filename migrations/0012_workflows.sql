-- Workflow definitions: a workflow's attributes, and the immutable versions of its definition.
-- depends: 0011_trigger_requests

CREATE TABLE workflows (
    id              text PRIMARY KEY,
    project_id      text NOT NULL REFERENCES projects (id),
    slug            text NOT NULL,
    name            text NOT NULL DEFAULT '',
    description     text NOT NULL DEFAULT '',
    tags            jsonb NOT NULL DEFAULT '{}',
    enabled         boolean NOT NULL DEFAULT true,
    current_version integer NOT NULL,
    -- Bumped by every change (attributes or definition): the etag is "r<revision>".
    revision        integer NOT NULL DEFAULT 1,
    create_time     timestamptz NOT NULL DEFAULT now(),
    update_time     timestamptz NOT NULL DEFAULT now(),
    delete_time     timestamptz
);
CREATE UNIQUE INDEX workflows_project_slug_key ON workflows (project_id, slug) WHERE delete_time IS NULL;
CREATE INDEX workflows_list_idx ON workflows (project_id, create_time, id) WHERE delete_time IS NULL;

-- What a run executes: steps, on_failure_step, concurrency, timeout, max_parallel_steps, as protobuf JSON.
-- Never updated; a change of definition is a new version. definition_hash (SHA-256 of the canonical JSON)
-- tells an update that changes nothing, which writes no version.
CREATE TABLE workflow_versions (
    workflow_id     text NOT NULL REFERENCES workflows (id),
    version         integer NOT NULL,
    definition      jsonb NOT NULL,
    definition_hash bytea NOT NULL,
    create_time     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workflow_id, version)
);
