-- A unit's hand-backs (released or expired leases) by when they were issued. A draw looks
-- only for recent ones (a wallet may not take back for a while what it handed back), and
-- reached them through leases_by_unit, which holds every hand-back the unit ever had:
-- anyone with many free wallets could pile thousands on the oldest unit and make every
-- draw read them all. Leases that end by an answer never enter this index.
CREATE INDEX leases_handed_back ON leases (unit_id, issued_ms)
    WHERE state = 'released' OR state = 'expired';
