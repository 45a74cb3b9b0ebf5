//! The master key: 32 bytes that seal the private halves of signing keys at
//! rest (AES-256-GCM, the key id as associated data so a sealed blob cannot
//! be swapped between rows). Never stored in the database.

use crate::auth::error::KeyError;
use crate::config::{Config, Environment};
use crate::store::KeyStore;
use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use std::path::Path;

/// 32 bytes that seal the private halves of signing keys at rest.
pub struct MasterKey(LessSafeKey);

impl MasterKey {
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, KeyError> {
        let unbound = UnboundKey::new(&AES_256_GCM, bytes)
            .map_err(|_| KeyError::MasterKey("must be exactly 32 bytes".into()))?;
        Ok(Self(LessSafeKey::new(unbound)))
    }

    /// `HOLDFAST_MASTER_KEY` (base64) or `master_key_file` (32 raw bytes or
    /// their base64). Without either, development generates `master.key` in
    /// the data dir (mode 0600); production refuses (config validation).
    pub fn load(config: &Config) -> Result<Self, KeyError> {
        if let Some(b64) = &config.master_key {
            let bytes = STANDARD.decode(b64.expose().trim()).map_err(|e| {
                KeyError::MasterKey(format!("HOLDFAST_MASTER_KEY is not base64: {e}"))
            })?;
            return Self::from_bytes(&bytes);
        }
        if let Some(path) = &config.master_key_file {
            return Self::read_file(path);
        }
        if config.env == Environment::Production {
            return Err(KeyError::MasterKey("production needs a master key".into()));
        }
        let path = config.data_dir.join("master.key");
        if path.exists() {
            return Self::read_file(&path);
        }
        let mut bytes = [0u8; 32];
        aws_lc_rs::rand::fill(&mut bytes).map_err(|_| KeyError::Generation)?;
        write_private_file(&path, &bytes)
            .map_err(|e| KeyError::MasterKey(format!("cannot write {}: {e}", path.display())))?;
        tracing::warn!(path = %path.display(), "generated a development master key");
        Self::from_bytes(&bytes)
    }

    /// A key file: 32 raw bytes or their base64.
    pub fn read_file(path: &Path) -> Result<Self, KeyError> {
        let raw = std::fs::read(path)
            .map_err(|e| KeyError::MasterKey(format!("cannot read {}: {e}", path.display())))?;
        if raw.len() == 32 {
            return Self::from_bytes(&raw);
        }
        let text = String::from_utf8_lossy(&raw);
        let bytes = STANDARD.decode(text.trim()).map_err(|_| {
            KeyError::MasterKey(format!(
                "{} must hold 32 raw bytes or their base64",
                path.display()
            ))
        })?;
        Self::from_bytes(&bytes)
    }

    pub(crate) fn seal(&self, kid: &str, plaintext: &[u8]) -> Result<Vec<u8>, KeyError> {
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce).map_err(|_| KeyError::Generation)?;
        let mut in_out = plaintext.to_vec();
        self.0
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(kid.as_bytes()),
                &mut in_out,
            )
            .map_err(|_| KeyError::Generation)?;
        let mut sealed = nonce.to_vec();
        sealed.extend_from_slice(&in_out);
        Ok(sealed)
    }

    pub(crate) fn open(&self, kid: &str, sealed: &[u8]) -> Result<Vec<u8>, KeyError> {
        let wrong = || KeyError::WrongMasterKey {
            kid: kid.to_string(),
        };
        if sealed.len() < NONCE_LEN {
            return Err(wrong());
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| wrong())?;
        let mut in_out = body.to_vec();
        let plain = self
            .0
            .open_in_place(nonce, Aad::from(kid.as_bytes()), &mut in_out)
            .map_err(|_| wrong())?;
        Ok(plain.to_vec())
    }
}

/// `holdfast master-key rotate`: every private signing key (revoked ones
/// too) re-sealed under `new`, in one transaction. Running nodes keep their
/// keys open in memory, so they go on signing and verifying. A key already
/// under `new` is left as it is, so a second run finishes what a live
/// node's rotation (sealed under `old`) left behind. Returns the count.
pub async fn rotate(
    store: &dyn KeyStore,
    old: &MasterKey,
    new: &MasterKey,
) -> Result<usize, KeyError> {
    let mut sealed = Vec::new();
    for key in store.list().await? {
        let blob = if new.open(&key.kid, &key.private_key_sealed).is_ok() {
            key.private_key_sealed
        } else {
            let plain = old.open(&key.kid, &key.private_key_sealed)?;
            new.seal(&key.kid, &plain)?
        };
        sealed.push((key.kid, blob));
    }
    store.reseal(&sealed).await?;
    Ok(sealed.len())
}

/// Writes a file readable by its owner only, in a folder created 0700.
pub fn write_private_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    crate::store::private_files::write_private_file(path, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_keys_open_only_with_their_master_key_and_kid() {
        let master = MasterKey::from_bytes(&[7u8; 32]).expect("key");
        let sealed = master.seal("kid-1", b"private").expect("seal");
        assert_eq!(master.open("kid-1", &sealed).expect("open"), b"private");
        assert!(master.open("kid-2", &sealed).is_err());
        let other = MasterKey::from_bytes(&[8u8; 32]).expect("key");
        assert!(other.open("kid-1", &sealed).is_err());
        assert!(MasterKey::from_bytes(&[1u8; 16]).is_err());
    }
}
