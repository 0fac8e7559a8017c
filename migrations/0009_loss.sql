-- Losing a run through no fault of its own (its dispatcher died, its outcome was lost with the database)
-- requeues it without spending an attempt, a bounded number of times; and a dispatcher is only declared dead
-- once it has stayed silent for a while after being found stale (a database outage silences every one).
-- depends: 0008_budgets

ALTER TABLE runs ADD COLUMN lost_count smallint NOT NULL DEFAULT 0;
-- When a sweep first found this dispatcher's heartbeat stale; NULL while it is renewing.
ALTER TABLE dispatchers ADD COLUMN suspected_at timestamptz;
