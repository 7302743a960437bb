-- Who pays for a job and at what price, fixed at submission; and the embedding site a
-- lease's volunteer came through, for the site's share of the unit's price.
ALTER TABLE jobs ADD COLUMN submitter TEXT;
ALTER TABLE jobs ADD COLUMN price_per_gflop INTEGER NOT NULL DEFAULT 0 CHECK (price_per_gflop >= 0);
ALTER TABLE leases ADD COLUMN site TEXT;
