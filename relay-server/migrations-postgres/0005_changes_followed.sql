-- Every relay reads the jobs and wallets changed in the last seconds, four times a
-- second (src/storage/others.rs): by index, not by reading the tables.
CREATE INDEX jobs_by_update ON jobs (updated_ms);
CREATE INDEX wallets_by_update ON wallets (updated_ms);
