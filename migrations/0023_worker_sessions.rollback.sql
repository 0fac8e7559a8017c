-- depends: 0022_worker_routes
DROP TABLE IF EXISTS worker_sessions;
