//! Trust for relays served over HTTPS: reqwest on rustls with ring, the system's roots,
//! and, for a relay with a self-signed certificate or a private CA, the certificate the
//! operator hands out (`--ca-cert`, `STARLING_CA_CERT`).

use std::path::{Path, PathBuf};

/// A `--ca-cert` file at most this big is read: a certificate bundle is a few KiB.
const MAX_CA_BYTES: u64 = 1024 * 1024;

/// Why a `--ca-cert` file cannot be trusted.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    /// The file could not be read.
    #[error("cannot read the CA certificate {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file holds no PEM certificate (or a damaged one).
    #[error("{path} holds no PEM certificate (-----BEGIN CERTIFICATE-----){detail}")]
    NoCertificate {
        /// The file.
        path: PathBuf,
        /// What the parser said, if anything.
        detail: String,
    },
}

/// Makes ring the process's rustls provider, which reqwest (built without a provider of
/// its own, so only one crypto library is linked) needs before any client is built.
/// Idempotent; a provider installed earlier by someone else is kept.
pub fn install_ring() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A reqwest client builder that trusts the system's roots and, when given, every
/// certificate in the PEM file `ca_cert`.
pub fn http_client_builder(ca_cert: Option<&Path>) -> Result<reqwest::ClientBuilder, TrustError> {
    install_ring();
    let builder = reqwest::Client::builder();
    let Some(path) = ca_cert else {
        return Ok(builder);
    };
    let read = |source| TrustError::Read {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read)?;
    let mut pem = Vec::new();
    std::io::Read::read_to_end(&mut std::io::Read::take(file, MAX_CA_BYTES + 1), &mut pem)
        .map_err(read)?;
    if pem.len() as u64 > MAX_CA_BYTES {
        return Err(read(std::io::Error::other(
            "larger than 1 MiB: not a PEM certificate",
        )));
    }
    let certs =
        reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| TrustError::NoCertificate {
            path: path.to_owned(),
            detail: format!(": {e}"),
        })?;
    if certs.is_empty() {
        return Err(TrustError::NoCertificate {
            path: path.to_owned(),
            detail: String::new(),
        });
    }
    Ok(builder.tls_certs_merge(certs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unusable_ca_file_is_a_clear_error_not_a_client_trusting_nothing_new() {
        let dir = std::env::temp_dir().join(format!("starling-https-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let missing = dir.join("missing.pem");
        let garbage = dir.join("garbage.pem");
        std::fs::write(&garbage, "not a certificate\n").expect("write");
        let key_only = dir.join("key.pem");
        std::fs::write(
            &key_only,
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        )
        .expect("write");

        let error = http_client_builder(Some(&missing)).expect_err("missing");
        assert!(matches!(error, TrustError::Read { .. }), "{error}");
        assert!(error.to_string().contains("missing.pem"), "{error}");
        for path in [&garbage, &key_only] {
            let error = http_client_builder(Some(path)).expect_err("no certificate");
            assert!(matches!(error, TrustError::NoCertificate { .. }), "{error}");
        }
        assert!(http_client_builder(None).is_ok_and(|b| b.build().is_ok()));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
