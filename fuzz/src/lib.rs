//! What the fuzz targets share: a real key ring built in memory from fixed
//! keys (so the seed corpus's tokens verify from run to run), the emergency
//! verifier with a fixed key pair, and a signer for claims the fuzzer
//! writes, so verification is exercised past the signature check too.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use holdfast::auth::emergency::EmergencyVerifier;
use holdfast::auth::keys::{KeyKind, KeyRing, KeySchedule};
use holdfast::auth::master_key::MasterKey;
use holdfast::auth::revocation::RevocationSet;
use holdfast::auth::tokens::TokenService;
use holdfast::cache::validation::ValidationCache;
use holdfast::store::{KeyStore, StoreError, StoredKey, UnixTime};
use jsonwebtoken::{Algorithm, EncodingKey};
use parking_lot::Mutex;
use std::sync::{Arc, LazyLock};

/// The clock of every target: fixed, so a crash replays.
pub const NOW: UnixTime = 1_800_000_000;
pub const ISSUER: &str = "https://issuer.fuzz";
pub const AUDIENCE: &str = "holdfast";
pub const LEEWAY: i64 = 30;
pub const ACCESS_TTL: i64 = 900;

/// The service's signing key and the emergency key: fixed seeds, test-only.
const SIGNING_SEED: [u8; 32] = [0x11; 32];
const EMERGENCY_SEED: [u8; 32] = [0x22; 32];

/// PKCS#8 v1 of an Ed25519 private key (RFC 8410): a fixed prefix, the seed.
pub fn ed25519_pkcs8(seed: &[u8; 32]) -> Vec<u8> {
    let mut der = vec![
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    der.extend_from_slice(seed);
    der
}

/// Keys in memory: enough for the ring outside a database.
struct Keys(Mutex<Vec<StoredKey>>);

#[async_trait::async_trait]
impl KeyStore for Keys {
    async fn list(&self) -> Result<Vec<StoredKey>, StoreError> {
        Ok(self.0.lock().clone())
    }
    async fn insert(&self, key: &StoredKey) -> Result<(), StoreError> {
        self.0.lock().push(key.clone());
        Ok(())
    }
    async fn revoke_all(&self, _: &StoredKey, _: UnixTime) -> Result<u64, StoreError> {
        Ok(0)
    }
}

pub struct Access {
    pub service: TokenService,
    pub kid: String,
    pub signing: EncodingKey,
}

/// The token service as the server builds it, over a ring holding one key.
pub static ACCESS: LazyLock<Access> = LazyLock::new(|| {
    let master = MasterKey::from_bytes(&[3u8; 32]).expect("master");
    let key = holdfast::fuzzing::stored_key(&master, &ed25519_pkcs8(&SIGNING_SEED), NOW - 60)
        .expect("key");
    let kid = key.kid.clone();
    let store = Arc::new(Keys(Mutex::new(vec![key])));
    let schedule = KeySchedule {
        verify_after_superseded: ACCESS_TTL + LEEWAY,
        standby: 300,
    };
    let ring =
        futures::executor::block_on(KeyRing::load(store, master, schedule, KeyKind::EdDsa, NOW)).expect("ring");
    assert_eq!(
        ring.snapshot().signing.as_ref().map(|k| k.kid.clone()),
        Some(kid.clone()),
        "the fixed key must be the one signing"
    );
    let service = TokenService::new(
        ring,
        Arc::new(RevocationSet::new(ACCESS_TTL + LEEWAY)),
        Arc::new(ValidationCache::new(std::time::Duration::from_secs(300))),
        ISSUER.into(),
        AUDIENCE.into(),
        ACCESS_TTL,
        LEEWAY,
    );
    Access {
        service,
        kid,
        signing: EncodingKey::from_ed_der(&ed25519_pkcs8(&SIGNING_SEED)),
    }
});

pub struct Emergency {
    pub verifier: EmergencyVerifier,
    pub signing: EncodingKey,
}

/// The emergency verifier, loaded from a public key file as the server does.
pub static EMERGENCY: LazyLock<Emergency> = LazyLock::new(|| {
    use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
    let pkcs8 = ed25519_pkcs8(&EMERGENCY_SEED);
    let pair = Ed25519KeyPair::from_pkcs8(&pkcs8).expect("emergency key");
    let mut spki = vec![
        0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
    ];
    spki.extend_from_slice(pair.public_key().as_ref());
    let pem = format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        STANDARD.encode(&spki)
    );
    let path = std::env::temp_dir().join(format!("holdfast-fuzz-{}.pub", std::process::id()));
    std::fs::write(&path, pem).expect("write the public key");
    let verifier = EmergencyVerifier::load(&path, ISSUER.into(), AUDIENCE.into(), LEEWAY, &[])
        .expect("emergency verifier");
    let _ = std::fs::remove_file(&path);
    Emergency {
        verifier,
        signing: EncodingKey::from_ed_der(&pkcs8),
    }
});

/// `header.claims.signature` over the exact JSON texts given, signed EdDSA.
pub fn sign(header: &[u8], claims: &[u8], key: &EncodingKey) -> String {
    let message = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let signature =
        jsonwebtoken::crypto::sign(message.as_bytes(), key, Algorithm::EdDSA).expect("sign");
    format!("{message}.{signature}")
}

/// A fuzz input for a token verifier: byte 0 picks the mode.
/// * even: the rest is the token, as a client would send it;
/// * odd: the rest is `<header JSON>\n<claims JSON>`, signed here with the
///   verifier's own key, so the claims reach the checks after the signature.
pub enum TokenInput<'a> {
    Raw(&'a str),
    Signed { header: &'a [u8], claims: &'a [u8] },
}

pub fn token_input(data: &[u8]) -> Option<TokenInput<'_>> {
    let (&mode, rest) = data.split_first()?;
    if mode % 2 == 0 {
        return std::str::from_utf8(rest).ok().map(TokenInput::Raw);
    }
    let split = rest.iter().position(|&b| b == b'\n')?;
    Some(TokenInput::Signed {
        header: &rest[..split],
        claims: &rest[split + 1..],
    })
}
