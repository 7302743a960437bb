-- Issue 19: known-answer units indistinguishable from new work. A probe is a job the
-- relay made itself from a random seed (fresh matrices, seeds, scenes), with a few of its
-- units computed by the relay's CPU reference and stored done: each such unit goes, once,
-- to one volunteer as a known-answer test, so no other wallet ever saw its parameters.
-- Probes belong to nobody: they are never listed, billed, counted or leased as work.
ALTER TABLE jobs ADD COLUMN probe INTEGER NOT NULL DEFAULT 0 CHECK (probe = 0 OR probe = 1);
-- The known-answer lease's search walks probes only, newest first.
CREATE INDEX jobs_probes ON jobs (probe) WHERE probe = 1;
