-- Jobs and their work units. Times are Unix milliseconds.
CREATE TABLE jobs (
    id          TEXT PRIMARY KEY,
    kernel      TEXT NOT NULL,
    params      TEXT NOT NULL,
    input       BLOB NOT NULL,
    state       TEXT NOT NULL CHECK (state IN ('queued', 'running', 'done', 'failed', 'cancelled')),
    units_total INTEGER NOT NULL CHECK (units_total > 0),
    units_done  INTEGER NOT NULL DEFAULT 0 CHECK (units_done BETWEEN 0 AND units_total),
    flops       INTEGER NOT NULL,
    error       TEXT,
    result      BLOB,
    created_ms  INTEGER NOT NULL,
    updated_ms  INTEGER NOT NULL
);

CREATE TABLE units (
    id             TEXT PRIMARY KEY,
    job_id         TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    idx            INTEGER NOT NULL,
    params         TEXT NOT NULL,
    state          TEXT NOT NULL CHECK (state IN ('queued', 'leased', 'done', 'failed')),
    lease_id       TEXT UNIQUE,
    lease_peer     TEXT,
    lease_deadline INTEGER,
    attempts       INTEGER NOT NULL DEFAULT 0,
    output         BLOB,
    UNIQUE (job_id, idx),
    -- A leased unit always names its lease, peer and deadline; no other state does.
    CHECK ((state = 'leased') = (lease_id IS NOT NULL AND lease_peer IS NOT NULL AND lease_deadline IS NOT NULL)),
    CHECK ((state = 'done') = (output IS NOT NULL))
);

-- The scheduler's queue scan: queued units in submission order (every index entry
-- carries the rowid, so one (state) index already yields them in rowid order).
CREATE INDEX units_by_state ON units (state);
CREATE INDEX units_by_peer ON units (lease_peer) WHERE lease_peer IS NOT NULL;
