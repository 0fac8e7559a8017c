-- depends: 0010_run_cost_cap
DROP TABLE trigger_requests;
