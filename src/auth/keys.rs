//! Signing keys: generated on first start, persisted with the private half
//! sealed by the master key (AES-256-GCM, the key id as associated data so a
//! sealed blob cannot be swapped between rows), and held in memory on every
//! node so signing and verification never touch the database.

use crate::config::{Config, Environment};
use crate::store::{KeyState, KeyStore, StoreError, StoredKey, UnixTime};
use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use parking_lot::RwLock;
use serde_json::json;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

pub const ALGORITHM: &str = "EdDSA";

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("master key: {0}")]
    MasterKey(String),
    #[error("signing key {kid} cannot be opened with this master key (wrong master key?)")]
    WrongMasterKey { kid: String },
    #[error("key generation failed")]
    Generation,
    #[error(transparent)]
    Store(#[from] StoreError),
}

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

    fn read_file(path: &Path) -> Result<Self, KeyError> {
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

    fn seal(&self, kid: &str, plaintext: &[u8]) -> Result<Vec<u8>, KeyError> {
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

    fn open(&self, kid: &str, sealed: &[u8]) -> Result<Vec<u8>, KeyError> {
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

/// Writes a file readable by its owner only.
pub fn write_private_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// The key that signs new tokens.
pub struct SigningKey {
    pub kid: String,
    pub encoding: EncodingKey,
}

/// A key that verifies tokens, with its public JWK.
pub struct VerifyingKey {
    pub algorithm: Algorithm,
    pub decoding: DecodingKey,
    pub jwk: serde_json::Value,
}

/// One consistent view of the keys; replaced whole, never edited in place.
#[derive(Default)]
pub struct KeySet {
    pub signing: Option<Arc<SigningKey>>,
    pub verifying: HashMap<String, Arc<VerifyingKey>>,
}

/// The keys in memory. Readers take an `Arc<KeySet>` and drop the lock at
/// once, so verification never waits behind a reload.
pub struct KeyRing {
    current: RwLock<Arc<KeySet>>,
}

impl KeyRing {
    /// Loads every key from the store, generating the first one if none is
    /// active. Two nodes racing to generate it: the loser re-reads.
    pub async fn load(
        store: &dyn KeyStore,
        master: &MasterKey,
        now: UnixTime,
    ) -> Result<Self, KeyError> {
        let mut stored = store.list().await?;
        if !stored.iter().any(|k| k.state == KeyState::Active) {
            let key = generate(master, now)?;
            match store.insert(&key).await {
                Ok(()) => tracing::info!(kid = %key.kid, "generated the first signing key"),
                Err(StoreError::Conflict(_)) => {}
                Err(e) => return Err(e.into()),
            }
            stored = store.list().await?;
        }
        Self::from_stored(&stored, master)
    }

    /// A ring over keys already read from a store.
    pub fn from_stored(stored: &[StoredKey], master: &MasterKey) -> Result<Self, KeyError> {
        let ring = Self {
            current: RwLock::new(Arc::new(KeySet::default())),
        };
        ring.install(stored, master)?;
        Ok(ring)
    }

    fn install(&self, stored: &[StoredKey], master: &MasterKey) -> Result<(), KeyError> {
        let mut set = KeySet::default();
        for key in stored {
            let x = URL_SAFE_NO_PAD.encode(&key.public_key);
            let decoding = DecodingKey::from_ed_components(&x).map_err(|_| {
                StoreError::Corrupt(format!("signing key {} has a bad public key", key.kid))
            })?;
            let jwk = json!({
                "kty": "OKP", "crv": "Ed25519", "x": x,
                "kid": key.kid, "alg": ALGORITHM, "use": "sig",
            });
            set.verifying.insert(
                key.kid.clone(),
                Arc::new(VerifyingKey {
                    algorithm: Algorithm::EdDSA,
                    decoding,
                    jwk,
                }),
            );
            if key.state == KeyState::Active {
                let pkcs8 = master.open(&key.kid, &key.private_key_sealed)?;
                set.signing = Some(Arc::new(SigningKey {
                    kid: key.kid.clone(),
                    encoding: EncodingKey::from_ed_der(&pkcs8),
                }));
            }
        }
        *self.current.write() = Arc::new(set);
        Ok(())
    }

    pub fn snapshot(&self) -> Arc<KeySet> {
        Arc::clone(&self.current.read())
    }

    /// The public JWKS: exactly the keys that verify.
    pub fn jwks(&self) -> serde_json::Value {
        let set = self.snapshot();
        let mut keys: Vec<_> = set.verifying.values().map(|k| k.jwk.clone()).collect();
        keys.sort_by(|a, b| a["kid"].as_str().cmp(&b["kid"].as_str()));
        json!({ "keys": keys })
    }

    pub fn is_ready(&self) -> bool {
        let set = self.snapshot();
        set.signing.is_some() && !set.verifying.is_empty()
    }
}

/// A fresh Ed25519 key, its id the RFC 7638 thumbprint of its public JWK.
pub fn generate(master: &MasterKey, now: UnixTime) -> Result<StoredKey, KeyError> {
    let pkcs8 =
        Ed25519KeyPair::generate_pkcs8v1(&SystemRandom::new()).map_err(|_| KeyError::Generation)?;
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).map_err(|_| KeyError::Generation)?;
    let public_key = pair.public_key().as_ref().to_vec();
    let x = URL_SAFE_NO_PAD.encode(&public_key);
    let canonical = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, canonical.as_bytes());
    let kid = URL_SAFE_NO_PAD.encode(digest.as_ref());
    Ok(StoredKey {
        private_key_sealed: master.seal(&kid, pkcs8.as_ref())?,
        kid,
        algorithm: ALGORITHM.to_string(),
        public_key,
        state: KeyState::Active,
        created_at: now,
    })
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
