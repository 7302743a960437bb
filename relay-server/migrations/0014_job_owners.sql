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
-- Whether the job's input and result are sealed under its key (`storage::job_keys`);
-- jobs from before stay readable as they were stored. `purged_ms`: when its data was
-- erased (the record and its ledger entries stay).
ALTER TABLE jobs ADD COLUMN sealed INTEGER NOT NULL DEFAULT 0 CHECK (sealed = 0 OR sealed = 1);
ALTER TABLE jobs ADD COLUMN inputs_purged_ms INTEGER;
ALTER TABLE jobs ADD COLUMN purged_ms INTEGER;
-- Retention finds ended jobs by age.
CREATE INDEX jobs_by_end ON jobs (updated_ms) WHERE state = 'done' OR state = 'failed' OR state = 'cancelled';
