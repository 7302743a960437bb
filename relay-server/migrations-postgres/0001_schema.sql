-- The relay's schema on PostgreSQL: the same tables, columns and rules as SQLite's after
-- all of `migrations/`, so one set of statements runs on both. Every integer is BIGINT
-- (what the relay reads and binds is i64), bytes are BYTEA, and the tables the relay
-- orders by insertion (jobs, units, leases) get the `rowid` column SQLite gives them.

CREATE TABLE jobs (
    id               TEXT PRIMARY KEY,
    rowid            BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
    kernel           TEXT NOT NULL,
    params           TEXT NOT NULL,
    state            TEXT NOT NULL
                     CHECK (state IN ('queued', 'running', 'done', 'failed', 'cancelled')),
    units_total      BIGINT NOT NULL CHECK (units_total > 0),
    units_done       BIGINT NOT NULL DEFAULT 0 CHECK (units_done BETWEEN 0 AND units_total),
    flops            BIGINT NOT NULL,
    error            TEXT,
    result           BYTEA,
    created_ms       BIGINT NOT NULL,
    updated_ms       BIGINT NOT NULL,
    quorum           BIGINT NOT NULL DEFAULT 2 CHECK (quorum BETWEEN 1 AND 5),
    submitter        TEXT,
    price_per_gflop  BIGINT NOT NULL DEFAULT 0 CHECK (price_per_gflop >= 0),
    escrow_salt      TEXT,
    escrow_account   TEXT,
    sealed           BIGINT NOT NULL DEFAULT 0 CHECK (sealed = 0 OR sealed = 1),
    inputs_purged_ms BIGINT,
    purged_ms        BIGINT,
    quorum_explicit  BIGINT NOT NULL DEFAULT 0 CHECK (quorum_explicit = 0 OR quorum_explicit = 1),
    probe            BIGINT NOT NULL DEFAULT 0 CHECK (probe = 0 OR probe = 1)
);
CREATE INDEX jobs_by_state ON jobs (state);
CREATE INDEX jobs_by_submitter ON jobs (submitter, state) WHERE submitter IS NOT NULL;
CREATE INDEX jobs_by_owner ON jobs (submitter);
CREATE INDEX jobs_by_end ON jobs (updated_ms)
    WHERE state = 'done' OR state = 'failed' OR state = 'cancelled';
CREATE INDEX jobs_probes ON jobs (probe) WHERE probe = 1;

CREATE TABLE wallets (
    address       TEXT PRIMARY KEY,
    error_rate    DOUBLE PRECISION NOT NULL CHECK (error_rate BETWEEN 0 AND 1),
    valid         BIGINT NOT NULL DEFAULT 0,
    invalid       BIGINT NOT NULL DEFAULT 0,
    quarantined   BIGINT NOT NULL DEFAULT 0 CHECK (quarantined IN (0, 1)),
    first_seen_ms BIGINT NOT NULL,
    updated_ms    BIGINT NOT NULL,
    handbacks     BIGINT NOT NULL DEFAULT 0 CHECK (handbacks >= 0)
);

CREATE TABLE idempotency_keys (
    key            TEXT PRIMARY KEY,
    request_sha256 TEXT NOT NULL,
    job_id         TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    created_ms     BIGINT NOT NULL
);

CREATE TABLE ledger (
    seq       BIGINT PRIMARY KEY CHECK (seq >= 1),
    time_ms   BIGINT NOT NULL,
    debit     TEXT NOT NULL,
    credit    TEXT NOT NULL,
    amount    BIGINT NOT NULL CHECK (amount > 0),
    reason    TEXT NOT NULL,
    reference TEXT NOT NULL,
    prev_hash BYTEA NOT NULL,
    hash      BYTEA NOT NULL,
    signature BYTEA NOT NULL
);
CREATE INDEX ledger_by_debit ON ledger (debit, seq);
CREATE INDEX ledger_by_credit ON ledger (credit, seq);

CREATE TABLE balances (
    account TEXT PRIMARY KEY,
    micro   BIGINT NOT NULL
);

CREATE TABLE accounts (
    id           TEXT PRIMARY KEY,
    api_key_hash BYTEA NOT NULL UNIQUE,
    created_ms   BIGINT NOT NULL,
    label        TEXT
);

CREATE TABLE transfer_nonces (
    wallet TEXT NOT NULL,
    nonce  BIGINT NOT NULL,
    PRIMARY KEY (wallet, nonce)
);

CREATE TABLE accrued_jobs (
    job_id TEXT PRIMARY KEY,
    micro  BIGINT NOT NULL CHECK (micro >= 0)
);

CREATE TABLE job_inputs (
    job_id TEXT PRIMARY KEY REFERENCES jobs(id) ON DELETE CASCADE,
    input  BYTEA NOT NULL
);

CREATE TABLE units (
    id       TEXT PRIMARY KEY,
    rowid    BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
    job_id   TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    idx      BIGINT NOT NULL,
    params   TEXT NOT NULL,
    flops    BIGINT NOT NULL DEFAULT 0 CHECK (flops >= 0),
    state    TEXT NOT NULL
             CHECK (state = 'queued' OR state = 'leased' OR state = 'done' OR state = 'failed'),
    quorum   BIGINT NOT NULL DEFAULT 0 CHECK (quorum BETWEEN 0 AND 5),
    wanted   BIGINT NOT NULL DEFAULT 1 CHECK (wanted >= 1),
    attempts BIGINT NOT NULL DEFAULT 0,
    output   BYTEA,
    UNIQUE (job_id, idx),
    CHECK ((state = 'done') = (output IS NOT NULL))
);
CREATE INDEX units_by_state ON units (state);
-- Leases draw the oldest queued units and known-answer leases walk settled ones, both
-- in insertion order: SQLite's index on (state) is in rowid order within a state, a
-- PostgreSQL index on (state) is not, and without these each draw skipped every settled
-- unit before the first queued one (4 ms of server CPU a unit at 5 000 units).
CREATE INDEX units_queued_in_order ON units (rowid) WHERE state = 'queued';
CREATE INDEX units_done_in_order ON units (rowid) WHERE state = 'done';

CREATE TABLE leases (
    id          TEXT PRIMARY KEY,
    rowid       BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
    unit_id     TEXT NOT NULL REFERENCES units(id) ON DELETE CASCADE,
    peer        TEXT NOT NULL,
    wallet      TEXT NOT NULL,
    site        TEXT,
    kind        TEXT NOT NULL CHECK (kind = 'work' OR kind = 'canary'),
    state       TEXT NOT NULL
                CHECK (state = 'active' OR state = 'returned' OR state = 'expired'
                       OR state = 'released' OR state = 'void'),
    issued_ms   BIGINT NOT NULL,
    deadline_ms BIGINT NOT NULL,
    verdict     TEXT CHECK (verdict = 'pending' OR verdict = 'valid' OR verdict = 'invalid'),
    output      BYTEA,
    spot_check  BIGINT CHECK (spot_check IN (0, 1)),
    trusted     BIGINT CHECK (trusted IN (0, 1)),
    received_ms BIGINT,
    paid_micro  BIGINT NOT NULL DEFAULT 0 CHECK (paid_micro >= 0),
    vetted      BIGINT CHECK (vetted = 0 OR vetted = 1),
    network     TEXT,
    CHECK ((state = 'returned') = (verdict IS NOT NULL)),
    CHECK (verdict IS NULL OR (trusted IS NOT NULL AND received_ms IS NOT NULL)),
    CHECK (output IS NOT NULL OR verdict IS NULL OR verdict = 'valid')
);
CREATE INDEX leases_by_unit ON leases (unit_id, state);
CREATE INDEX leases_active_by_peer ON leases (peer) WHERE state = 'active';
CREATE INDEX leases_active_by_deadline ON leases (deadline_ms) WHERE state = 'active';
-- A draw passes over the units the volunteer's wallet already holds or answered;
-- PostgreSQL's plan gathers those leases first, which without this read every lease.
CREATE INDEX leases_by_wallet ON leases (wallet, unit_id);

CREATE TABLE accruals (
    job_id  TEXT NOT NULL,
    account TEXT NOT NULL,
    reason  TEXT NOT NULL
            CHECK (reason = 'pay' OR reason = 'site_share' OR reason = 'platform_fee'),
    micro   BIGINT NOT NULL CHECK (micro >= 0),
    units   BIGINT NOT NULL CHECK (units >= 1),
    PRIMARY KEY (job_id, account, reason)
);

CREATE TABLE wallet_kernels (
    wallet     TEXT NOT NULL,
    kernel     TEXT NOT NULL,
    error_rate DOUBLE PRECISION NOT NULL CHECK (error_rate BETWEEN 0 AND 1),
    valid      BIGINT NOT NULL DEFAULT 0 CHECK (valid >= 0),
    invalid    BIGINT NOT NULL DEFAULT 0 CHECK (invalid >= 0),
    PRIMARY KEY (wallet, kernel)
);

CREATE TABLE sites (
    origin        TEXT PRIMARY KEY NOT NULL,
    wallet        TEXT NOT NULL,
    registered_ms BIGINT NOT NULL
);
