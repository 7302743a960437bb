-- Issue 25: kernels submitters bring, by content address (SHA-256 of source and
-- manifest). The source is kept whole: anyone may read what volunteers run. A kernel that
-- hangs or loses the device for several volunteers is suspended with the reason.
CREATE TABLE custom_kernels (
    id TEXT PRIMARY KEY NOT NULL,
    owner TEXT,
    source TEXT NOT NULL,
    manifest TEXT NOT NULL,
    registered_ms BIGINT NOT NULL,
    suspended TEXT
);
CREATE INDEX custom_kernels_by_owner ON custom_kernels (owner);
