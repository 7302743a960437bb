-- Issue 19: a quorum the submitter named is what each unit gets; trust never lowers it
-- (adaptive replication only applies to jobs that left the quorum to the relay).
ALTER TABLE jobs ADD COLUMN quorum_explicit INTEGER NOT NULL DEFAULT 0
    CHECK (quorum_explicit = 0 OR quorum_explicit = 1);
