-- depends: 0011_trigger_requests
DROP TABLE workflow_versions;
DROP TABLE workflows;
