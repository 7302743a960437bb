-- A job's data key sealed under the deployment's key for job keys, where keys live in
-- rows (PostgreSQL); on SQLite keys are files and this stays NULL.
ALTER TABLE jobs ADD COLUMN wrapped_key BLOB;
