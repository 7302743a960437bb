-- Job inputs in a table of their own (issue 4's throughput). Every settled unit updates
-- its job's row (`units_done`), and SQLite rebuilds a row whole on update: an input kept
-- in it (up to `--max-input-mib`) was copied and compared page by page for every unit.
CREATE TABLE job_inputs (
    job_id TEXT PRIMARY KEY REFERENCES jobs(id) ON DELETE CASCADE,
    input  BLOB NOT NULL
);
INSERT INTO job_inputs (job_id, input) SELECT id, input FROM jobs;
ALTER TABLE jobs DROP COLUMN input;
