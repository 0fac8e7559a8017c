-- depends: 0008_budgets
ALTER TABLE dispatchers DROP COLUMN suspected_at;
ALTER TABLE runs DROP COLUMN lost_count;
