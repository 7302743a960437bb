-- "Has this wallet answered this unit?" is asked for every lease; with only
-- results_by_wallet SQLite scanned all of a busy wallet's results to answer it.
CREATE INDEX results_by_unit_wallet ON results (unit_id, wallet);
