-- Each job's data key, sealed under the deployment's key for job keys
-- (DATA_DIR/job-keys.key, the same on every relay): any relay opens any job's data.
ALTER TABLE jobs ADD COLUMN wrapped_key BYTEA;
