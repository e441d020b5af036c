-- Every import ends by finding the `present` rows that still lack a UserID. Without an index that
-- read the whole table on every run (about 0.15 s per million rows, on a nightly no-op run that
-- should take about a second). The index holds only those rows, so it stays tiny and cheap.
CREATE INDEX users_unresolved ON users (service_id) WHERE status = 'present' AND user_id IS NULL;
