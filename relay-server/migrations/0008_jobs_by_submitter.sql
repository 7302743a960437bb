-- The per-account quota counts an account's queued and running jobs on every submission.
CREATE INDEX jobs_by_submitter ON jobs (submitter, state) WHERE submitter IS NOT NULL;
