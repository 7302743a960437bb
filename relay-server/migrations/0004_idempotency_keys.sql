-- Idempotency-Key of POST /api/v1/jobs: a retried submission returns the job the first
-- one created. The digest covers kernel, parameters and inputs, so a key reused for a
-- different request is told apart from a retry.
CREATE TABLE idempotency_keys (
    key            TEXT PRIMARY KEY,
    request_sha256 TEXT NOT NULL,
    job_id         TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    created_ms     INTEGER NOT NULL
);
-- Job listings page newest first by rowid; state filters use this index.
CREATE INDEX jobs_by_state ON jobs (state);
