//! The relay's data directory: the database, the job keys and the relay's signing key
//! live in it, each kept by its own module (storage, ledger), all private to the relay's
//! user.

use std::path::Path;

/// Creates `dir` and any missing parents readable by their owner only (on unix): the data
/// directory holds the ledger, API key hashes and the relay's signing key. A directory
/// that exists keeps its mode: the operator may have chosen it (a home directory).
pub(crate) fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}
