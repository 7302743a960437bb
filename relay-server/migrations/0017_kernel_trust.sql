-- Issue 19: trust is earned and held per kernel. A wallet honest on matmul earns nothing
-- on montecarlo: its results there are judged by its record there. `wallets` keeps the
-- totals over every kernel (what quarantines a wallet, and what people see).
CREATE TABLE wallet_kernels (
    wallet     TEXT NOT NULL,
    kernel     TEXT NOT NULL,
    error_rate REAL NOT NULL CHECK (error_rate BETWEEN 0 AND 1),
    valid      INTEGER NOT NULL DEFAULT 0 CHECK (valid >= 0),
    invalid    INTEGER NOT NULL DEFAULT 0 CHECK (invalid >= 0),
    PRIMARY KEY (wallet, kernel)
) WITHOUT ROWID;
-- Whether the result's wallet had a clean record on the kernel when the result came: only
-- such a result (or the relay's own reference run) anchors a quorum.
ALTER TABLE leases ADD COLUMN vetted INTEGER CHECK (vetted = 0 OR vetted = 1);
-- The network the volunteer's data came from, as ICE selected it (a /24 or a /48; NULL
-- where each address counts as its own, as loopback does by default): one network holds
-- at most one live lease or result of a unit.
ALTER TABLE leases ADD COLUMN network TEXT;
