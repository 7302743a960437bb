-- Replication and wallets. A unit may now be out with several volunteers at once and
-- collect several results, so leases and results get their own tables; the unit keeps
-- only its place in the life cycle. SQLite cannot drop the old lease columns or CHECKs,
-- so the units table is rebuilt.

-- Agreeing results a job's units need (1: trust single results, after their checks).
ALTER TABLE jobs ADD COLUMN quorum INTEGER NOT NULL DEFAULT 2 CHECK (quorum BETWEEN 1 AND 5);

CREATE TABLE units_v3 (
    id       TEXT PRIMARY KEY,
    job_id   TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    idx      INTEGER NOT NULL,
    params   TEXT NOT NULL,
    flops    INTEGER NOT NULL DEFAULT 0 CHECK (flops >= 0),
    -- queued: needs more leases out; leased: enough leases or results outstanding;
    -- done: a result won (output holds it); failed: given up.
    state    TEXT NOT NULL CHECK (state IN ('queued', 'leased', 'done', 'failed')),
    -- Agreeing results that settle the unit; 0 until its first lease decides it from the
    -- job's quorum and the first volunteer's trust.
    quorum   INTEGER NOT NULL DEFAULT 0 CHECK (quorum BETWEEN 0 AND 5),
    -- Results wanted in flight: the quorum, plus one per disagreement.
    wanted   INTEGER NOT NULL DEFAULT 1 CHECK (wanted >= 1),
    -- Leases lost (expired, dropped) or answered wrongly; the job fails past a limit.
    attempts INTEGER NOT NULL DEFAULT 0,
    output   BLOB,
    UNIQUE (job_id, idx),
    CHECK ((state = 'done') = (output IS NOT NULL))
);
INSERT INTO units_v3 (id, job_id, idx, params, flops, state, attempts, output)
    SELECT id, job_id, idx, params, flops,
           CASE state WHEN 'leased' THEN 'queued' ELSE state END, attempts, output
    FROM units ORDER BY rowid;
DROP TABLE units;
ALTER TABLE units_v3 RENAME TO units;
CREATE INDEX units_by_state ON units (state);

-- One lease of one unit to one volunteer connection and wallet. `canary` leases hand out
-- a unit already settled, to test the wallet against the known answer.
CREATE TABLE leases (
    id          TEXT PRIMARY KEY,
    unit_id     TEXT NOT NULL REFERENCES units(id) ON DELETE CASCADE,
    peer        TEXT NOT NULL,
    wallet      TEXT NOT NULL,
    kind        TEXT NOT NULL CHECK (kind IN ('work', 'canary')),
    -- active: out; returned: a result came; expired / released: lost (a late result may
    -- still count); void: the unit settled or the relay restarted before it came back.
    state       TEXT NOT NULL CHECK (state IN ('active', 'returned', 'expired', 'released', 'void')),
    issued_ms   INTEGER NOT NULL,
    deadline_ms INTEGER NOT NULL
);
CREATE INDEX leases_by_unit ON leases (unit_id, state);
CREATE INDEX leases_active_by_peer ON leases (peer) WHERE state = 'active';
CREATE INDEX leases_active_by_deadline ON leases (deadline_ms) WHERE state = 'active';

-- Every result returned, judged or waiting for its replicas. One per lease: a duplicate
-- cannot be stored twice.
CREATE TABLE results (
    lease_id    TEXT PRIMARY KEY REFERENCES leases(id) ON DELETE CASCADE,
    unit_id     TEXT NOT NULL REFERENCES units(id) ON DELETE CASCADE,
    wallet      TEXT NOT NULL,
    output      BLOB NOT NULL,
    -- The kernel's spot check: NULL where it has none.
    spot_check  INTEGER CHECK (spot_check IN (0, 1)),
    -- Whether the wallet was trusted when the result came.
    trusted     INTEGER NOT NULL CHECK (trusted IN (0, 1)),
    state       TEXT NOT NULL CHECK (state IN ('pending', 'valid', 'invalid')),
    received_ms INTEGER NOT NULL
);
CREATE INDEX results_by_unit ON results (unit_id, state);
CREATE INDEX results_by_wallet ON results (wallet);

-- What the relay believes about each wallet (validation::trust::Reliability).
CREATE TABLE wallets (
    address       TEXT PRIMARY KEY,
    error_rate    REAL NOT NULL CHECK (error_rate BETWEEN 0 AND 1),
    valid         INTEGER NOT NULL DEFAULT 0,
    invalid       INTEGER NOT NULL DEFAULT 0,
    quarantined   INTEGER NOT NULL DEFAULT 0 CHECK (quarantined IN (0, 1)),
    first_seen_ms INTEGER NOT NULL,
    updated_ms    INTEGER NOT NULL
);
