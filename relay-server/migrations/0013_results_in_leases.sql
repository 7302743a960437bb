-- Two changes for issue 4's throughput, both in the rows every round trip writes.
--
-- 1. A result is stored in the row of the lease it answers. Each lease gets at most one
--    result, and a lease with a result is `returned`, so the separate `results` table only
--    cost its rowid b-tree, its primary-key index, its by-unit index and two foreign-key
--    lookups per result, on the one writer every write waits for. `verdict` is NULL until
--    a result comes, then pending, valid or invalid, as `results.state` was; the canonical
--    result's output is NULL (its unit holds the only copy, as in 0012).
--
-- 2. CHECK constraints list their allowed values with OR instead of IN. SQLite evaluates
--    `x IN (three or more constants)` by building a temporary b-tree of the list, each time
--    a statement checks the constraint: a lease's insert and return, a unit's two state
--    changes and an accrual each built one or two, about 5 µs apiece.
--
-- SQLite cannot change a constraint in place, so `leases`, `units` and `accruals` are
-- rebuilt with their rows, rowids (leasing and judging go by rowid) and indexes, the way
-- sqlite.org's twelve-step procedure does it: migrations run with foreign keys off, and the
-- relay checks them (PRAGMA foreign_key_check) before it starts.

CREATE TABLE units_v13 (
    id       TEXT PRIMARY KEY,
    job_id   TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    idx      INTEGER NOT NULL,
    params   TEXT NOT NULL,
    flops    INTEGER NOT NULL DEFAULT 0 CHECK (flops >= 0),
    -- queued: needs more leases out; leased: enough leases or results outstanding;
    -- done: a result won (output holds it); failed: given up.
    state    TEXT NOT NULL
             CHECK (state = 'queued' OR state = 'leased' OR state = 'done' OR state = 'failed'),
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
INSERT INTO units_v13 (rowid, id, job_id, idx, params, flops, state, quorum, wanted, attempts,
                       output)
    SELECT rowid, id, job_id, idx, params, flops, state, quorum, wanted, attempts, output
    FROM units ORDER BY rowid;

-- One lease of one unit to one volunteer connection and wallet, and the result it brought
-- back. `canary` leases hand out a unit already settled, to test the wallet against the
-- known answer.
CREATE TABLE leases_v13 (
    id          TEXT PRIMARY KEY,
    unit_id     TEXT NOT NULL REFERENCES units(id) ON DELETE CASCADE,
    peer        TEXT NOT NULL,
    wallet      TEXT NOT NULL,
    -- The embedding site the volunteer came through.
    site        TEXT,
    kind        TEXT NOT NULL CHECK (kind = 'work' OR kind = 'canary'),
    -- active: out; returned: its result came; expired / released: lost (a late result may
    -- still count); void: the unit settled or the relay restarted before it came back.
    state       TEXT NOT NULL
                CHECK (state = 'active' OR state = 'returned' OR state = 'expired'
                       OR state = 'released' OR state = 'void'),
    issued_ms   INTEGER NOT NULL,
    deadline_ms INTEGER NOT NULL,
    -- The result: NULL until it comes, then how it was judged.
    verdict     TEXT CHECK (verdict = 'pending' OR verdict = 'valid' OR verdict = 'invalid'),
    -- NULL before the result, and for the result whose output its unit holds.
    output      BLOB,
    -- The kernel's spot check: NULL where it has none.
    spot_check  INTEGER CHECK (spot_check IN (0, 1)),
    -- Whether the wallet was trusted when the result came.
    trusted     INTEGER CHECK (trusted IN (0, 1)),
    received_ms INTEGER,
    -- What the result earned, in micro-credits (0 when unpaid).
    paid_micro  INTEGER NOT NULL DEFAULT 0 CHECK (paid_micro >= 0),
    CHECK ((state = 'returned') = (verdict IS NOT NULL)),
    CHECK (verdict IS NULL OR (trusted IS NOT NULL AND received_ms IS NOT NULL)),
    CHECK (output IS NOT NULL OR verdict IS NULL OR verdict = 'valid')
);
-- A lease was marked returned in the transaction that stored its result; one marked so
-- without a result (none is known) becomes void, which the relay treats the same.
INSERT INTO leases_v13 (rowid, id, unit_id, peer, wallet, site, kind, state, issued_ms,
                        deadline_ms, verdict, output, spot_check, trusted, received_ms,
                        paid_micro)
    SELECT leases.rowid, leases.id, leases.unit_id, leases.peer, leases.wallet, leases.site,
           leases.kind,
           CASE WHEN results.lease_id IS NOT NULL THEN 'returned'
                WHEN leases.state = 'returned' THEN 'void'
                ELSE leases.state END,
           leases.issued_ms, leases.deadline_ms, results.state, results.output,
           results.spot_check, results.trusted, results.received_ms,
           COALESCE(results.paid_micro, 0)
    FROM leases LEFT JOIN results ON results.lease_id = leases.id
    ORDER BY leases.rowid;

-- Credit earned by verified work and not yet paid out (0009).
CREATE TABLE accruals_v13 (
    job_id  TEXT NOT NULL,
    account TEXT NOT NULL,
    reason  TEXT NOT NULL
            CHECK (reason = 'pay' OR reason = 'site_share' OR reason = 'platform_fee'),
    micro   INTEGER NOT NULL CHECK (micro >= 0),
    -- Units whose parts this row holds.
    units   INTEGER NOT NULL CHECK (units >= 1),
    PRIMARY KEY (job_id, account, reason)
) WITHOUT ROWID;
INSERT INTO accruals_v13 (job_id, account, reason, micro, units)
    SELECT job_id, account, reason, micro, units FROM accruals;

DROP TABLE results;
DROP TABLE leases;
DROP TABLE units;
DROP TABLE accruals;
ALTER TABLE units_v13 RENAME TO units;
ALTER TABLE leases_v13 RENAME TO leases;
ALTER TABLE accruals_v13 RENAME TO accruals;
CREATE INDEX units_by_state ON units (state);
CREATE INDEX leases_by_unit ON leases (unit_id, state);
CREATE INDEX leases_active_by_peer ON leases (peer) WHERE state = 'active';
CREATE INDEX leases_active_by_deadline ON leases (deadline_ms) WHERE state = 'active';
