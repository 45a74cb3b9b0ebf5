//! Signing keys: generated on first start, persisted sealed by the master
//! key, and held in memory on every node so signing and verification never
//! touch the database.
//!
//! A key's role is derived from its times, so every node reaches the same
//! answer without coordination (DESIGN.md §2):
//! * not yet active (`activates_at` in the future): a *standby*, published in
//!   the JWKS but not signing, so resource servers caching the JWKS for
//!   `jwks_max_age` never meet an unknown `kid`;
//! * the newest activated key signs;
//! * an older key verifies until the last token it can have signed expires
//!   (its successor's activation + access TTL + leeway), then disappears;
//! * a revoked key (revoke-all) neither signs, verifies nor is published.
//!
//! Each node re-reads the keys every `refresh_every` and re-derives the
//! roles, which is also what promotes a standby on time.

pub use crate::auth::key_kinds::{AlgorithmChange, KeyKind, algorithm_change};
use crate::auth::master_key::MasterKey;
use crate::store::{KeyStore, StoreError, StoredKey, UnixTime};
use arc_swap::ArcSwap;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use parking_lot::Mutex;
use serde_json::json;
use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

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

/// The key that signs new tokens.
pub struct SigningKey {
    pub kid: String,
    /// The algorithm bound to this key: the JWT header's `alg`.
    pub algorithm: Algorithm,
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
    /// Keys that verify, and so are published: standby, signing, retiring.
    /// A few keys, looked up by every verification (foldhash: a lookup
    /// with a client's `kid` cannot make a map it cannot insert into slow).
    pub verifying: HashMap<String, Arc<VerifyingKey>, foldhash::fast::RandomState>,
}

/// How long a key must stay publishable after it was superseded, and how
/// far ahead a rotated key is announced.
#[derive(Debug, Clone, Copy)]
pub struct KeySchedule {
    /// Access-token TTL + leeway: the life of the last token a key signed.
    pub verify_after_superseded: i64,
    /// `jwks_max_age`: how long a new key is a standby before it signs.
    pub standby: i64,
}

/// The keys in memory, swapped whole on a reload (`ArcSwap`): readers
/// never wait behind a reload, and the verification path reads them
/// without writing shared memory (a lock or a reference count would bounce
/// a cache line between the cores on every request).
pub struct KeyRing {
    current: ArcSwap<KeySet>,
    store: Arc<dyn KeyStore>,
    master: MasterKey,
    schedule: KeySchedule,
    /// `[tokens] algorithm`: the kind this node generates.
    kind: KeyKind,
    /// The signing key last found to differ from `kind` (warned once).
    warned: Mutex<Option<String>>,
    /// Decrypted signing keys by kid, so a reload does not re-open them.
    opened: Mutex<HashMap<String, Arc<SigningKey>>>,
    /// The last list read from the store (roles are re-derived from it).
    stored: Mutex<Vec<StoredKey>>,
}

impl KeyRing {
    /// Loads every key, generating the first one (of `kind`) if none can
    /// sign, and starting one rotation when `kind` is a new algorithm for
    /// this deployment (see [`algorithm_change`]).
    pub async fn load(
        store: Arc<dyn KeyStore>,
        master: MasterKey,
        schedule: KeySchedule,
        kind: KeyKind,
        now: UnixTime,
    ) -> Result<Arc<Self>, KeyError> {
        let ring = Self::empty(store, master, schedule, kind);
        ring.initialise(now).await?;
        Ok(ring)
    }

    /// A ring with no keys yet (not ready): what a node started during a
    /// database outage holds until `initialise` succeeds.
    pub fn empty(
        store: Arc<dyn KeyStore>,
        master: MasterKey,
        schedule: KeySchedule,
        kind: KeyKind,
    ) -> Arc<Self> {
        Arc::new(Self {
            current: ArcSwap::from_pointee(KeySet::default()),
            store,
            master,
            schedule,
            kind,
            warned: Mutex::new(None),
            opened: Mutex::new(HashMap::new()),
            stored: Mutex::new(Vec::new()),
        })
    }

    /// Reads every key, generating the first one (of this node's kind) if
    /// none can sign, and starting one rotation when the kind is a new
    /// algorithm for this deployment (see [`algorithm_change`]).
    pub async fn initialise(&self, now: UnixTime) -> Result<(), KeyError> {
        self.reload(now).await?;
        if self.snapshot().signing.is_none() {
            let key = generate(&self.master, self.kind, now, now)?;
            self.store.insert(&key).await?;
            tracing::info!(kid = %key.kid, algorithm = self.kind.name(), "generated the first signing key");
            self.reload(now).await?;
            return Ok(());
        }
        let change = algorithm_change(&self.stored.lock(), self.kind, now);
        match change {
            AlgorithmChange::None => {}
            AlgorithmChange::Rotate => {
                tracing::warn!(
                    algorithm = self.kind.name(),
                    "[tokens] algorithm is new to this deployment: rotating to a key of that kind"
                );
                self.rotate(now).await?;
            }
            AlgorithmChange::UnderWay => tracing::info!(
                algorithm = self.kind.name(),
                "a rotation to this node's algorithm is already under way"
            ),
            AlgorithmChange::Older => tracing::warn!(
                algorithm = self.kind.name(),
                "[tokens] algorithm is that of an older signing key: not rotating back \
                 (run `holdfast keys rotate` with this configuration to switch on purpose)"
            ),
        }
        Ok(())
    }

    /// Re-reads the store and re-derives the roles.
    pub async fn reload(&self, now: UnixTime) -> Result<(), KeyError> {
        let stored = self.store.list().await?;
        self.install(&stored, now)?;
        *self.stored.lock() = stored;
        Ok(())
    }

    /// Re-derives the roles from the last list read (no I/O): promotes a
    /// standby and drops expired keys on time even with the database down.
    pub fn rederive(&self, now: UnixTime) -> Result<(), KeyError> {
        let stored = self.stored.lock().clone();
        self.install(&stored, now)
    }

    /// Announces a new key as standby; it signs after `jwks_max_age`.
    pub async fn rotate(&self, now: UnixTime) -> Result<String, KeyError> {
        let key = generate(&self.master, self.kind, now, now + self.schedule.standby)?;
        self.store.insert(&key).await?;
        self.reload(now).await?;
        tracing::warn!(kid = %key.kid, activates_in_secs = self.schedule.standby, "signing key rotation started");
        Ok(key.kid)
    }

    /// Key leak: every key revoked, a new one signing at once, every session
    /// revoked. Returns the new kid and how many sessions were revoked.
    pub async fn revoke_all(&self, now: UnixTime) -> Result<(String, u64), KeyError> {
        let key = generate(&self.master, self.kind, now, now)?;
        let sessions = self.store.revoke_all(&key, now).await?;
        self.reload(now).await?;
        tracing::warn!(kid = %key.kid, sessions, "all signing keys revoked; every session revoked");
        Ok((key.kid, sessions))
    }

    /// Keeps this node's view current: re-reads the store every `every`
    /// (other nodes' rotations), re-deriving from the last list when the
    /// store does not answer.
    pub fn spawn_refresher(self: &Arc<Self>, every: Duration) {
        let ring: Weak<Self> = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(ring) = ring.upgrade() else { return };
                let now = crate::auth::now();
                if let Err(e) = ring.reload(now).await {
                    // A key sealed under another master key (a rotation
                    // half rolled out): keep the keys already open, loudly.
                    if matches!(e, KeyError::WrongMasterKey { .. }) {
                        tracing::warn!(error = %e, "reloaded keys cannot all be opened; keeping the keys in memory");
                    } else {
                        tracing::debug!(error = %e, "key reload failed; re-deriving from the last list");
                    }
                    if let Err(e) = ring.rederive(now) {
                        tracing::error!(error = %e, "signing keys could not be re-derived");
                    }
                }
            }
        });
    }

    /// Reloads now, in the background: another node rotated or revoked.
    pub fn reload_soon(self: &Arc<Self>) {
        let ring = Arc::clone(self);
        tokio::spawn(async move {
            if let Err(e) = ring.reload(crate::auth::now()).await {
                tracing::warn!(error = %e, "key reload after an invalidation failed; the refresher will retry");
            }
        });
    }

    fn install(&self, stored: &[StoredKey], now: UnixTime) -> Result<(), KeyError> {
        let set = derive(stored, now, self.schedule, |key| self.open(key))?;
        if let Some(signer) = &set.signing {
            let mut warned = self.warned.lock();
            if signer.algorithm != self.kind.algorithm() && warned.as_ref() != Some(&signer.kid) {
                tracing::warn!(
                    kid = %signer.kid,
                    signing = ?signer.algorithm,
                    configured = self.kind.name(),
                    "the active signing key's algorithm is not this node's [tokens] algorithm; \
                     signing with the active key"
                );
                *warned = Some(signer.kid.clone());
            }
        }
        self.current.store(Arc::new(set));
        Ok(())
    }

    fn open(&self, key: &StoredKey) -> Result<Arc<SigningKey>, KeyError> {
        if let Some(open) = self.opened.lock().get(&key.kid) {
            return Ok(Arc::clone(open));
        }
        let signing = Arc::new(open_signing(&self.master, key)?);
        self.opened
            .lock()
            .insert(key.kid.clone(), Arc::clone(&signing));
        Ok(signing)
    }

    pub fn snapshot(&self) -> Arc<KeySet> {
        self.current.load_full()
    }

    /// Whether the key `kid` still verifies.
    pub fn verifies(&self, kid: &str) -> bool {
        self.current.load().verifying.contains_key(kid)
    }

    /// The public JWKS: exactly the keys that verify.
    pub fn jwks(&self) -> serde_json::Value {
        let set = self.snapshot();
        let mut keys: Vec<_> = set.verifying.values().map(|k| k.jwk.clone()).collect();
        keys.sort_by(|a, b| a["kid"].as_str().cmp(&b["kid"].as_str()));
        json!({ "keys": keys })
    }

    /// The algorithms of the keys that verify, the signing key's first.
    pub fn algorithms(&self) -> Vec<&'static str> {
        let set = self.snapshot();
        let mut names: Vec<&'static str> = Vec::new();
        let signing = set.signing.as_ref().map(|s| s.algorithm);
        let kinds = signing
            .into_iter()
            .chain(set.verifying.values().map(|k| k.algorithm));
        for algorithm in kinds {
            if let Some(kind) = KeyKind::ALL
                .into_iter()
                .find(|k| k.algorithm() == algorithm)
                && !names.contains(&kind.name())
            {
                names.push(kind.name());
            }
        }
        names
    }

    pub fn is_ready(&self) -> bool {
        let set = self.snapshot();
        set.signing.is_some() && !set.verifying.is_empty()
    }
}

/// The roles of `stored` at `now` (see the module comment).
fn derive(
    stored: &[StoredKey],
    now: UnixTime,
    schedule: KeySchedule,
    open: impl Fn(&StoredKey) -> Result<Arc<SigningKey>, KeyError>,
) -> Result<KeySet, KeyError> {
    let mut live: Vec<&StoredKey> = stored.iter().filter(|k| k.revoked_at.is_none()).collect();
    live.sort_by_key(|k| (k.activates_at, k.created_at));
    let active: Vec<&StoredKey> = live
        .iter()
        .copied()
        .filter(|k| k.activates_at <= now)
        .collect();
    let mut set = KeySet::default();
    if let Some(signer) = active.last() {
        set.signing = Some(open(signer)?);
    }
    for (i, key) in live.iter().enumerate() {
        // Superseded when the next key activated; keep verifying its tokens.
        let superseded_at = live
            .get(i + 1)
            .map(|next| next.activates_at)
            .filter(|at| *at <= now);
        let verifies = match superseded_at {
            None => true,
            Some(at) => now < at + schedule.verify_after_superseded,
        };
        if verifies {
            set.verifying
                .insert(key.kid.clone(), Arc::new(verifying(key)?));
        }
    }
    Ok(set)
}

/// The kind a stored key says it is; an unknown name is a corrupt row
/// (never guessed: the algorithm is what verification is bound to).
fn kind_of(key: &StoredKey) -> Result<KeyKind, KeyError> {
    KeyKind::parse(&key.algorithm).ok_or_else(|| {
        KeyError::Store(StoreError::Corrupt(format!(
            "signing key {} has an unknown algorithm {:?}",
            key.kid, key.algorithm
        )))
    })
}

fn verifying(key: &StoredKey) -> Result<VerifyingKey, KeyError> {
    let kind = kind_of(key)?;
    let public = kind.public_jwk(&key.public_key).ok_or_else(|| {
        StoreError::Corrupt(format!("signing key {} has a bad public key", key.kid))
    })?;
    Ok(VerifyingKey {
        algorithm: kind.algorithm(),
        decoding: public.decoding,
        jwk: public.jwk,
    })
}

/// The private half of `key`, unsealed, ready to sign.
fn open_signing(master: &MasterKey, key: &StoredKey) -> Result<SigningKey, KeyError> {
    let kind = kind_of(key)?;
    let pkcs8 = master.open(&key.kid, &key.private_key_sealed)?;
    Ok(SigningKey {
        kid: key.kid.clone(),
        algorithm: kind.algorithm(),
        encoding: kind.encoding_key(&pkcs8)?,
    })
}

/// A fresh key of `kind`, its id the RFC 7638 thumbprint of its public JWK.
pub fn generate(
    master: &MasterKey,
    kind: KeyKind,
    now: UnixTime,
    activates_at: UnixTime,
) -> Result<StoredKey, KeyError> {
    let pkcs8 = kind.generate()?;
    stored_from_pkcs8(master, kind, &pkcs8, now, activates_at)
}

/// A stored key for a given Ed25519 private key (PKCS#8): what the fuzz
/// targets use so a corpus's tokens stay valid from run to run.
pub(crate) fn from_pkcs8(
    master: &MasterKey,
    pkcs8: &[u8],
    now: UnixTime,
    activates_at: UnixTime,
) -> Result<StoredKey, KeyError> {
    stored_from_pkcs8(master, KeyKind::EdDsa, pkcs8, now, activates_at)
}

fn stored_from_pkcs8(
    master: &MasterKey,
    kind: KeyKind,
    pkcs8: &[u8],
    now: UnixTime,
    activates_at: UnixTime,
) -> Result<StoredKey, KeyError> {
    let public_key = kind.public_key(pkcs8)?;
    let kid = kind
        .public_jwk(&public_key)
        .ok_or(KeyError::Generation)?
        .kid;
    Ok(StoredKey {
        private_key_sealed: master.seal(&kid, pkcs8)?,
        kid,
        algorithm: kind.name().to_string(),
        public_key,
        created_at: now,
        activates_at,
        revoked_at: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCHEDULE: KeySchedule = KeySchedule {
        verify_after_superseded: 930,
        standby: 300,
    };

    fn roles(stored: &[StoredKey], now: UnixTime) -> (Option<String>, Vec<String>) {
        let master = MasterKey::from_bytes(&[5u8; 32]).expect("master");
        let set = derive(stored, now, SCHEDULE, |k| {
            Ok(Arc::new(open_signing(&master, k)?))
        })
        .expect("derive");
        let mut verifying: Vec<String> = set.verifying.keys().cloned().collect();
        verifying.sort();
        (set.signing.map(|s| s.kid.clone()), verifying)
    }

    #[test]
    fn a_rotated_key_is_standby_then_signs_and_the_old_one_retires_on_time() {
        let master = MasterKey::from_bytes(&[5u8; 32]).expect("master");
        let old = generate(&master, KeyKind::EdDsa, 0, 0).expect("old");
        let new = generate(&master, KeyKind::EdDsa, 1_000, 1_300).expect("new");
        let keys = vec![old.clone(), new.clone()];
        let mut both = vec![old.kid.clone(), new.kid.clone()];
        both.sort();
        // Standby: published, old still signs.
        assert_eq!(roles(&keys, 1_100), (Some(old.kid.clone()), both.clone()));
        // Activated: new signs, old still verifies its tokens.
        assert_eq!(roles(&keys, 1_300), (Some(new.kid.clone()), both));
        assert_eq!(roles(&keys, 1_300 + 929).1.len(), 2);
        // The last token the old key signed has expired: gone.
        assert_eq!(
            roles(&keys, 1_300 + 930),
            (Some(new.kid.clone()), vec![new.kid])
        );
    }

    #[test]
    fn revoked_keys_neither_sign_verify_nor_publish() {
        let master = MasterKey::from_bytes(&[5u8; 32]).expect("master");
        let mut old = generate(&master, KeyKind::EdDsa, 0, 0).expect("old");
        old.revoked_at = Some(50);
        let new = generate(&master, KeyKind::EdDsa, 50, 50).expect("new");
        assert_eq!(
            roles(&[old, new.clone()], 51),
            (Some(new.kid.clone()), vec![new.kid])
        );
    }

    #[test]
    fn every_kind_is_stored_sealed_and_opens_to_sign_with_its_own_algorithm() {
        let master = MasterKey::from_bytes(&[5u8; 32]).expect("master");
        for kind in KeyKind::ALL {
            let key = generate(&master, kind, 0, 0).expect("key");
            assert_eq!(key.algorithm, kind.name());
            let signing = open_signing(&master, &key).expect("opens");
            assert_eq!(signing.algorithm, kind.algorithm());
            let verifying = verifying(&key).expect("verifying");
            assert_eq!(verifying.algorithm, kind.algorithm());
            assert_eq!(verifying.jwk["kid"], key.kid.as_str());
            let other = MasterKey::from_bytes(&[6u8; 32]).expect("other");
            assert!(open_signing(&other, &key).is_err());
        }
        let mut unknown = generate(&master, KeyKind::EdDsa, 0, 0).expect("key");
        unknown.algorithm = "HS256".into();
        assert!(verifying(&unknown).is_err());
    }
}
