-- A settled unit's canonical output is stored once, in `units.output`; the result it came
-- from keeps NULL instead of a second copy (issue 4: with real outputs of kilobytes, the
-- copy doubled what the common case, one trusted result per unit, wrote). Other results
-- keep their bytes: pending ones are compared with later replicas, and the audit shows
-- what each agreeing or disagreeing wallet returned.
--
-- SQLite cannot relax a NOT NULL in place, so the table is rebuilt with its rows, rowids
-- (arrival order breaks ties in judging) and indexes. Nothing references `results`.
CREATE TABLE results_v12 (
    lease_id    TEXT PRIMARY KEY REFERENCES leases(id) ON DELETE CASCADE,
    unit_id     TEXT NOT NULL REFERENCES units(id) ON DELETE CASCADE,
    wallet      TEXT NOT NULL,
    -- NULL only for the result whose output the unit holds.
    output      BLOB CHECK (output IS NOT NULL OR state = 'valid'),
    -- The kernel's spot check: NULL where it has none.
    spot_check  INTEGER CHECK (spot_check IN (0, 1)),
    -- Whether the wallet was trusted when the result came.
    trusted     INTEGER NOT NULL CHECK (trusted IN (0, 1)),
    state       TEXT NOT NULL CHECK (state IN ('pending', 'valid', 'invalid')),
    received_ms INTEGER NOT NULL,
    paid_micro  INTEGER NOT NULL DEFAULT 0 CHECK (paid_micro >= 0)
);
INSERT INTO results_v12 (rowid, lease_id, unit_id, wallet, output, spot_check, trusted, state,
                         received_ms, paid_micro)
    SELECT rowid, lease_id, unit_id, wallet, output, spot_check, trusted, state, received_ms,
           paid_micro
    FROM results ORDER BY rowid;
DROP TABLE results;
ALTER TABLE results_v12 RENAME TO results;
CREATE INDEX results_by_unit ON results (unit_id, wallet, state);
