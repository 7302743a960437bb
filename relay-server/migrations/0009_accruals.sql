-- Credit earned by verified work and not yet paid out (issue 4's throughput). A settled
-- unit adds its price's parts here instead of appending signed ledger entries; a payout
-- (every few seconds, and when a job ends) turns each row into one ledger entry and
-- deletes it. The ledger then grows with payouts and payees, not with units.
CREATE TABLE accruals (
    job_id  TEXT NOT NULL,
    account TEXT NOT NULL,
    reason  TEXT NOT NULL CHECK (reason IN ('pay', 'site_share', 'platform_fee')),
    micro   INTEGER NOT NULL CHECK (micro >= 0),
    -- Units whose parts this row holds.
    units   INTEGER NOT NULL CHECK (units >= 1),
    PRIMARY KEY (job_id, account, reason)
) WITHOUT ROWID;

-- What each job's accruals add up to, so a unit's price is checked against what its
-- escrow still covers without summing them.
CREATE TABLE accrued_jobs (
    job_id TEXT PRIMARY KEY,
    micro  INTEGER NOT NULL CHECK (micro >= 0)
) WITHOUT ROWID;

-- Each valid result's share of its unit's price, in micro-credits (0 when unpaid): the
-- per-unit record behind the payouts.
ALTER TABLE results ADD COLUMN paid_micro INTEGER NOT NULL DEFAULT 0 CHECK (paid_micro >= 0);
