//! What the relay's integration tests share.

pub mod attacker;
pub mod loopback;
pub mod postgres;
pub mod router;
pub mod websocket;

use std::path::{Path, PathBuf};

/// A fresh directory under the system's temporary directory for one test's files (its
/// database), removed with everything in it when dropped, so test runs do not fill the
/// disk. Keep it alive as long as anything uses the files.
pub struct TempDir(PathBuf);

impl TempDir {
    /// A new, empty directory path named after `name` (created by whoever writes first).
    pub fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "starling-{name}-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        Self(dir)
    }
}

impl std::ops::Deref for TempDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for TempDir {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
