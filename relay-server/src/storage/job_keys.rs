//! Job data at rest. Each job's inputs and result are sealed with ChaCha20-Poly1305
//! under a key of the job's own, and the keys live outside the database, one file each
//! under `DATA_DIR/job-keys/`. Purging a job's data destroys its key file, so a copy of
//! the sealed bytes that outlives the purge (an old WAL frame, a backup of the database
//! file) can no longer be read. A backup that is to stay readable needs the key files
//! too; one that must forget on purge should leave them out.

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
}

impl Part {
    fn label(self) -> &'static [u8] {
        match self {
            Self::Input => b"input",
            Self::Result => b"result",
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

/// The directory of job keys.
#[derive(Debug)]
pub struct JobKeys {
    dir: PathBuf,
}

impl JobKeys {
    /// The keys under `data_dir/job-keys`, created (owner-only) if missing.
    pub fn open(data_dir: &Path) -> Result<Self, StorageError> {
        let dir = data_dir.join("job-keys");
        crate::data_dir::create_private_dir(&dir).map_err(|source| StorageError::DataDir {
            path: dir.display().to_string(),
            source,
        })?;
        Ok(Self { dir })
    }

    fn path(&self, job: JobId) -> PathBuf {
        self.dir.join(job.to_string())
    }

    fn io(&self, job: JobId, source: std::io::Error) -> StorageError {
        StorageError::DataDir {
            path: self.path(job).display().to_string(),
            source,
        }
    }

    /// A new random key for `job`, on disk (owner-only, synced) before it is returned.
    pub fn create(&self, job: JobId) -> Result<JobKey, StorageError> {
        let key: [u8; 32] = rand::random();
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(self.path(job)).map_err(|e| self.io(job, e))?;
        file.write_all(&key).map_err(|e| self.io(job, e))?;
        file.sync_all().map_err(|e| self.io(job, e))?;
        Ok(JobKey(*Key::from_slice(&key)))
    }

    /// `job`'s key; `None` once it was destroyed (or never made).
    pub fn get(&self, job: JobId) -> Result<Option<JobKey>, StorageError> {
        match std::fs::read(self.path(job)) {
            Ok(bytes) if bytes.len() == 32 => Ok(Some(JobKey(*Key::from_slice(&bytes)))),
            Ok(_) => Err(StorageError::Sealing(format!(
                "the key file of job {job} is damaged"
            ))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.io(job, e)),
        }
    }

    /// Destroys `job`'s key: overwritten, synced, removed. Nothing to do if it is gone.
    pub fn destroy(&self, job: JobId) -> Result<(), StorageError> {
        let path = self.path(job);
        match std::fs::OpenOptions::new().write(true).open(&path) {
            Ok(mut file) => {
                file.write_all(&[0u8; 32]).map_err(|e| self.io(job, e))?;
                file.sync_all().map_err(|e| self.io(job, e))?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(self.io(job, e)),
        }
        std::fs::remove_file(&path).map_err(|e| self.io(job, e))
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
        let key = keys.create(a).expect("key");
        let sealed = key.seal(a, Part::Input, b"secret input").expect("seals");
        assert!(!sealed.windows(6).any(|w| w == b"secret"));
        let again = keys.get(a).expect("reads").expect("present");
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
        assert!(keys.get(a).expect("reads").is_none());
        keys.destroy(a).expect("destroying twice is fine");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
