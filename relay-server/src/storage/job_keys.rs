//! Job data at rest. Each job's inputs and result are sealed with ChaCha20-Poly1305
//! under a key of the job's own.
//!
//! On SQLite the keys live outside the database, one file each under
//! `DATA_DIR/job-keys/`. Purging a job's data destroys its key file, so a copy of the
//! sealed bytes that outlives the purge (an old WAL frame, a backup of the database file)
//! can no longer be read. A backup that is to stay readable needs the key files too; one
//! that must forget on purge should leave them out.
//!
//! On PostgreSQL every relay sharing the database must open every job, so each job's key
//! is kept in its row, sealed under the deployment's key for job keys
//! (`DATA_DIR/job-keys.key`, the same file on every relay, like `relay.key`); purging
//! erases the sealed key from the row. A backup of the database alone opens nothing; a
//! backup together with that file opens what the backup still holds keys for.

use super::StorageError;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use starling_protocol::JobId;
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// Bytes of the nonce that starts every sealed blob.
const NONCE_BYTES: usize = 12;

/// What a sealed blob holds; bound into its authentication tag, so a job's sealed input
/// cannot be passed off as its result, nor one job's data as another's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The job's packed inputs.
    Input,
    /// The job's merged result.
    Result,
    /// The job's own key, sealed under the deployment's key for job keys.
    Key,
}

impl Part {
    fn label(self) -> &'static [u8] {
        match self {
            Self::Input => b"input",
            Self::Result => b"result",
            Self::Key => b"key",
        }
    }
}

/// One job's data key.
pub struct JobKey(Key);

impl std::fmt::Debug for JobKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JobKey(hidden)")
    }
}

fn associated_data(job: JobId, part: Part) -> Vec<u8> {
    let mut aad = b"starling job data v1\0".to_vec();
    aad.extend_from_slice(job.to_string().as_bytes());
    aad.push(0);
    aad.extend_from_slice(part.label());
    aad
}

impl JobKey {
    /// `plain` sealed as `part` of `job`: a random nonce, then the ciphertext and tag.
    pub fn seal(&self, job: JobId, part: Part, plain: &[u8]) -> Result<Vec<u8>, StorageError> {
        let nonce: [u8; NONCE_BYTES] = rand::random();
        let aad = associated_data(job, part);
        let sealed = ChaCha20Poly1305::new(&self.0)
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plain,
                    aad: &aad,
                },
            )
            .map_err(|_| StorageError::Sealing(format!("cannot seal the {part:?} of job {job}")))?;
        let mut out = Vec::with_capacity(NONCE_BYTES + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// The plain bytes of what [`JobKey::seal`] made for `part` of `job`; an error for
    /// anything else (another job's blob, another part, a changed byte).
    pub fn open(&self, job: JobId, part: Part, sealed: &[u8]) -> Result<Vec<u8>, StorageError> {
        let damaged = || StorageError::Sealing(format!("the {part:?} of job {job} does not open"));
        if sealed.len() < NONCE_BYTES {
            return Err(damaged());
        }
        let (nonce, body) = sealed.split_at(NONCE_BYTES);
        let aad = associated_data(job, part);
        ChaCha20Poly1305::new(&self.0)
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: body,
                    aad: &aad,
                },
            )
            .map_err(|_| damaged())
    }
}

/// Where jobs' keys are kept.
#[derive(Debug)]
pub enum JobKeys {
    /// One file per job under a directory (SQLite).
    Files {
        /// `DATA_DIR/job-keys`.
        dir: PathBuf,
    },
    /// Sealed in each job's row under the deployment's key for job keys (PostgreSQL).
    InRows {
        /// The key that seals the jobs' keys.
        sealing: JobKey,
    },
}

/// The job id a job key is sealed for: the deployment's key seals every job's key, and
/// each is bound to its own job.
fn key_part(job: JobId) -> (JobId, Part) {
    (job, Part::Key)
}

impl JobKeys {
    /// The keys under `data_dir/job-keys`, created (owner-only) if missing.
    pub fn open(data_dir: &Path) -> Result<Self, StorageError> {
        let dir = data_dir.join("job-keys");
        crate::data_dir::create_private_dir(&dir).map_err(|source| StorageError::DataDir {
            path: dir.display().to_string(),
            source,
        })?;
        Ok(Self::Files { dir })
    }

    /// Keys kept in jobs' rows, sealed under `data_dir/job-keys.key` (made, owner-only,
    /// if missing: copy it to every relay of the deployment).
    pub fn in_rows(data_dir: &Path) -> Result<Self, StorageError> {
        let path = data_dir.join("job-keys.key");
        let io = |source| StorageError::DataDir {
            path: path.display().to_string(),
            source,
        };
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key: [u8; 32] = rand::random();
                let mut options = std::fs::OpenOptions::new();
                options.write(true).create_new(true);
                #[cfg(unix)]
                std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
                let mut file = options.open(&path).map_err(io)?;
                file.write_all(&key).map_err(io)?;
                file.sync_all().map_err(io)?;
                key.to_vec()
            }
            Err(e) => return Err(io(e)),
        };
        let key: [u8; 32] = bytes.try_into().map_err(|_| {
            StorageError::Sealing(format!("{} is not a 32-byte key", path.display()))
        })?;
        Ok(Self::InRows {
            sealing: JobKey(*Key::from_slice(&key)),
        })
    }

    fn path(dir: &Path, job: JobId) -> PathBuf {
        dir.join(job.to_string())
    }

    fn io(dir: &Path, job: JobId, source: std::io::Error) -> StorageError {
        StorageError::DataDir {
            path: Self::path(dir, job).display().to_string(),
            source,
        }
    }

    /// A new random key for `job`: on disk (owner-only, synced) before it is returned, or
    /// returned with its sealed form for the job's row (`wrapped_key`).
    pub fn create(&self, job: JobId) -> Result<(JobKey, Option<Vec<u8>>), StorageError> {
        let key: [u8; 32] = rand::random();
        match self {
            Self::Files { dir } => {
                let mut options = std::fs::OpenOptions::new();
                options.write(true).create(true).truncate(true);
                #[cfg(unix)]
                std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
                let io = |e| Self::io(dir, job, e);
                let mut file = options.open(Self::path(dir, job)).map_err(io)?;
                file.write_all(&key).map_err(io)?;
                file.sync_all().map_err(io)?;
                Ok((JobKey(*Key::from_slice(&key)), None))
            }
            Self::InRows { sealing } => {
                let (for_job, part) = key_part(job);
                let wrapped = sealing.seal(for_job, part, &key)?;
                Ok((JobKey(*Key::from_slice(&key)), Some(wrapped)))
            }
        }
    }

    /// `job`'s key (`wrapped`: the sealed key its row holds, where keys live in rows);
    /// `None` once it was destroyed (or never made).
    pub fn get(&self, job: JobId, wrapped: Option<&[u8]>) -> Result<Option<JobKey>, StorageError> {
        match self {
            Self::Files { dir } => match std::fs::read(Self::path(dir, job)) {
                Ok(bytes) if bytes.len() == 32 => Ok(Some(JobKey(*Key::from_slice(&bytes)))),
                Ok(_) => Err(StorageError::Sealing(format!(
                    "the key file of job {job} is damaged"
                ))),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(Self::io(dir, job, e)),
            },
            Self::InRows { sealing } => {
                let Some(wrapped) = wrapped else {
                    return Ok(None);
                };
                let (for_job, part) = key_part(job);
                let key = sealing.open(for_job, part, wrapped)?;
                let key: [u8; 32] = key.try_into().map_err(|_| {
                    StorageError::Sealing(format!("the key of job {job} is damaged"))
                })?;
                Ok(Some(JobKey(*Key::from_slice(&key))))
            }
        }
    }

    /// The key file of `job` sealed for its row, for moving a network from SQLite's
    /// files to rows (`None` where there is no file).
    pub fn wrap_file(&self, files: &Self, job: JobId) -> Result<Option<Vec<u8>>, StorageError> {
        let (Self::InRows { sealing }, Self::Files { .. }) = (self, files) else {
            return Ok(None);
        };
        let Some(key) = files.get(job, None)? else {
            return Ok(None);
        };
        let (for_job, part) = key_part(job);
        sealing.seal(for_job, part, key.0.as_slice()).map(Some)
    }

    /// Destroys `job`'s key file: overwritten, synced, removed. Nothing to do if it is
    /// gone, nor where keys live in rows (purging erases the row's key).
    pub fn destroy(&self, job: JobId) -> Result<(), StorageError> {
        let Self::Files { dir } = self else {
            return Ok(());
        };
        let path = Self::path(dir, job);
        let io = |e| Self::io(dir, job, e);
        match std::fs::OpenOptions::new().write(true).open(&path) {
            Ok(mut file) => {
                file.write_all(&[0u8; 32]).map_err(io)?;
                file.sync_all().map_err(io)?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io(e)),
        }
        std::fs::remove_file(&path).map_err(io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_data_opens_only_as_itself_and_not_after_the_key_is_destroyed() {
        let dir = std::env::temp_dir().join(format!("starling-keys-{}", uuid::Uuid::new_v4()));
        let keys = JobKeys::open(&dir).expect("key dir");
        let (a, b) = (
            JobId::from_uuid(uuid::Uuid::new_v4()),
            JobId::from_uuid(uuid::Uuid::new_v4()),
        );
        let (key, _) = keys.create(a).expect("key");
        let sealed = key.seal(a, Part::Input, b"secret input").expect("seals");
        assert!(!sealed.windows(6).any(|w| w == b"secret"));
        let again = keys.get(a, None).expect("reads").expect("present");
        assert_eq!(
            again.open(a, Part::Input, &sealed).expect("opens"),
            b"secret input"
        );
        assert!(
            again.open(a, Part::Result, &sealed).is_err(),
            "another part"
        );
        assert!(again.open(b, Part::Input, &sealed).is_err(), "another job");
        let mut flipped = sealed.clone();
        flipped[20] ^= 1;
        assert!(
            again.open(a, Part::Input, &flipped).is_err(),
            "a changed byte"
        );
        assert!(
            again.open(a, Part::Input, &sealed[..5]).is_err(),
            "truncated"
        );
        keys.destroy(a).expect("destroys");
        assert!(keys.get(a, None).expect("reads").is_none());
        keys.destroy(a).expect("destroying twice is fine");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
