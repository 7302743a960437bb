//! The relay's ledger key: a wallet key in `DATA_DIR/relay.key` that signs every ledger
//! entry. Its address is what anyone auditing the ledger checks signatures against.

use starling_protocol::WalletKey;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The key file's name inside the data directory.
pub const RELAY_KEY_FILE: &str = "relay.key";

/// Why the relay key could not be loaded or made.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// The file exists but is not 64 hex characters; the relay refuses to start rather
    /// than sign with a different key than the ledger's.
    #[error("relay key file {path} is malformed: it must hold the key as 64 hex characters (restore it from a backup; do not delete it, or the existing ledger can no longer be verified)")]
    Malformed {
        /// The file.
        path: PathBuf,
    },
    /// No key file (for commands that must not create one, like `audit`).
    #[error("no relay key at {path}: run the relay or `keys create` once to create it")]
    Missing {
        /// The expected file.
        path: PathBuf,
    },
    /// Reading or writing the file failed.
    #[error("relay key file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// Reads `dir/relay.key`, refusing a missing or malformed file.
pub fn load_relay_key(dir: &Path) -> Result<WalletKey, KeyFileError> {
    let path = dir.join(RELAY_KEY_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(KeyFileError::Missing { path })
        }
        Err(source) => return Err(KeyFileError::Io { path, source }),
    };
    WalletKey::from_hex(&text).map_err(|_| KeyFileError::Malformed { path })
}

/// Reads `dir/relay.key`, creating it with a fresh random key (mode 0600) if it does not
/// exist. A malformed file is an error, never replaced.
pub fn load_or_create_relay_key(dir: &Path) -> Result<WalletKey, KeyFileError> {
    let path = dir.join(RELAY_KEY_FILE);
    let io = |source| KeyFileError::Io {
        path: path.clone(),
        source,
    };
    crate::data_dir::create_private_dir(dir).map_err(io)?;
    let mut options = std::fs::OpenOptions::new();
    // create_new: if two processes race, one creates and the other reads its key.
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    match options.open(&path) {
        Ok(mut file) => {
            let key = WalletKey::from_seed(rand::random());
            file.write_all(format!("{}\n", key.to_hex()).as_bytes())
                .and_then(|()| file.sync_all())
                .map_err(io)?;
            Ok(key)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => load_relay_key(dir),
        Err(source) => Err(io(source)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir() -> PathBuf {
        std::env::temp_dir().join(format!("starling-key-{}", uuid::Uuid::new_v4()))
    }

    #[test]
    fn the_key_is_created_once_and_kept() -> Result<(), KeyFileError> {
        let dir = temp_dir();
        assert!(matches!(
            load_relay_key(&dir),
            Err(KeyFileError::Missing { .. })
        ));
        let first = load_or_create_relay_key(&dir)?;
        let again = load_or_create_relay_key(&dir)?;
        assert_eq!(first.address(), again.address());
        assert_eq!(load_relay_key(&dir)?.address(), first.address());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |path: &std::path::Path| {
                std::fs::metadata(path)
                    .map(|m| m.permissions().mode() & 0o777)
                    .map_err(|source| KeyFileError::Io {
                        path: path.to_path_buf(),
                        source,
                    })
            };
            assert_eq!(mode(&dir.join(RELAY_KEY_FILE))?, 0o600);
            // The directory it made holds the key: nobody else may list or open it.
            assert_eq!(mode(&dir)?, 0o700);
        }
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    }

    #[test]
    fn a_malformed_key_file_is_refused_not_replaced() -> Result<(), std::io::Error> {
        let dir = temp_dir();
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(RELAY_KEY_FILE), "not a key\n")?;
        let err = load_or_create_relay_key(&dir).err();
        assert!(
            matches!(err, Some(KeyFileError::Malformed { .. })),
            "{err:?}"
        );
        assert_eq!(
            std::fs::read_to_string(dir.join(RELAY_KEY_FILE))?,
            "not a key\n"
        );
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    }
}
