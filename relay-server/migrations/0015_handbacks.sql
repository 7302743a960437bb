-- Issue 19: a unit handed back (a `Failed`, a dropped connection) counts against the
-- wallet that held it, not against the unit's job: a wallet that
-- hands back more than a few units beyond a few per valid result it returned gets no
-- more work (see `storage::leases::lose_leases`).
ALTER TABLE wallets ADD COLUMN handbacks INTEGER NOT NULL DEFAULT 0 CHECK (handbacks >= 0);
