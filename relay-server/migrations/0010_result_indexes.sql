-- One index over a unit's results instead of three (issue 4's throughput): every result
-- was inserted into each of them. (unit_id, wallet, state) answers both "this unit's
-- results in this state" and "has this wallet answered this unit"; nothing looks results
-- up by wallet alone.
DROP INDEX results_by_wallet;
DROP INDEX results_by_unit;
DROP INDEX results_by_unit_wallet;
CREATE INDEX results_by_unit ON results (unit_id, wallet, state);
