//! The browser's wallet: created on the first visit from the Web Crypto CSPRNG and kept in
//! `localStorage`, so the same person keeps the same wallet across visits.

use starling_protocol::{WalletError, WalletKey};

/// The `localStorage` key holding the secret (64 hex characters).
pub const STORAGE_KEY: &str = "starling.wallet.v1";

/// Why the wallet could not be loaded or saved.
#[derive(Debug, thiserror::Error)]
pub enum KeystoreError {
    /// Storage or the CSPRNG is unavailable (private mode, old browser).
    #[error("the browser's {0} is not available")]
    Unavailable(&'static str),
    /// A stored or imported secret is malformed.
    #[error(transparent)]
    Key(#[from] WalletError),
}

fn storage() -> Result<web_sys::Storage, KeystoreError> {
    web_sys::window()
        .and_then(|w| w.local_storage().ok().flatten())
        .ok_or(KeystoreError::Unavailable("localStorage"))
}

/// This browser's wallet, created and stored on first use.
pub fn load_or_create() -> Result<WalletKey, KeystoreError> {
    let storage = storage()?;
    if let Ok(Some(stored)) = storage.get_item(STORAGE_KEY) {
        return Ok(WalletKey::from_hex(&stored)?);
    }
    let mut seed = [0u8; 32];
    web_sys::window()
        .and_then(|w| w.crypto().ok())
        .and_then(|c| c.get_random_values_with_u8_array(&mut seed).ok())
        .ok_or(KeystoreError::Unavailable("crypto.getRandomValues"))?;
    let key = WalletKey::from_seed(seed);
    save(&key)?;
    Ok(key)
}

/// Replaces this browser's wallet with `key` (a restored backup).
pub fn save(key: &WalletKey) -> Result<(), KeystoreError> {
    storage()?
        .set_item(STORAGE_KEY, &key.to_hex())
        .map_err(|_| KeystoreError::Unavailable("localStorage"))
}
