-- Issue 20: jobs belong to their submitters, and the public ledger does not say whose
-- job an escrow is for.
--
-- A submitter lists only their own jobs (any submitter, anonymous ones included).
CREATE INDEX jobs_by_owner ON jobs (submitter);
-- The ledger account holding a job's escrow, `escrow:<name>` (see `EscrowRef`): a digest
-- of the job's id and `escrow_salt`, which only the job's owner is shown. Escrows opened
-- before this keep their job id as their name.
ALTER TABLE jobs ADD COLUMN escrow_salt TEXT;
ALTER TABLE jobs ADD COLUMN escrow_account TEXT;
UPDATE jobs SET escrow_account = 'escrow:' || id;
