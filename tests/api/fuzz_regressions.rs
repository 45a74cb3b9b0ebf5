//! Inputs the fuzz targets (fuzz/) found or aimed at, kept as tests so the
//! answer stays right without a fuzzing run: tokens whose times sit at the
//! ends of i64, signed with the right key.

use holdfast::auth::emergency::{EmergencyVerifier, keygen};
use holdfast::auth::error::AuthError;
use holdfast::auth::keys::{KeyKind, KeyRing, KeySchedule, generate};
use holdfast::auth::master_key::MasterKey;
use holdfast::auth::revocation::RevocationSet;
use holdfast::auth::tokens::TokenService;
use holdfast::cache::validation::ValidationCache;
use holdfast::store::{KeyStore, StoreError, StoredKey, UnixTime};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;
use std::sync::{Arc, Mutex};

const NOW: UnixTime = 1_800_000_000;

/// An emergency token the offline signer could be made to sign (its CLI
/// refuses such times; a hand-rolled signer would not).
fn emergency(iat: i64, exp: i64) -> (EmergencyVerifier, String) {
    let (private, public) = keygen().expect("keygen");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("emergency.pub");
    std::fs::write(&path, public).expect("write");
    let verifier = EmergencyVerifier::load(&path, "https://a.test".into(), "aud".into(), 30, &[])
        .expect("load");
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some("emergency".into());
    let claims = json!({
        "iss": "https://a.test", "aud": "aud", "sub": "emergency",
        "iat": iat, "nbf": 0, "exp": exp,
        "jti": "0190a0b0-c0d0-7e00-8000-000000000004",
        "emergency": true, "reason": "INC-42", "scope": ["admin"],
    });
    let key = EncodingKey::from_ed_pem(private.as_bytes()).expect("key");
    (
        verifier,
        jsonwebtoken::encode(&header, &claims, &key).expect("sign"),
    )
}

#[test]
fn an_emergency_token_cannot_escape_the_one_hour_cap_by_overflowing_its_life() {
    // exp - iat overflows i64: wrapped, it came out negative, "shorter than
    // an hour", and a token valid for ~146 billion years got in.
    let (verifier, token) = emergency(-(1 << 62) - 2, 1 << 62);
    assert!(matches!(
        verifier.verify(&token, NOW),
        Err(AuthError::TokenInvalid)
    ));
}

#[test]
fn an_emergency_token_expiring_at_the_end_of_time_is_judged_without_overflow() {
    let (verifier, token) = emergency(i64::MAX - 100, i64::MAX);
    // Its life is 100s, but it was issued at the end of time: refused as
    // issued in the future (DESIGN.md §2), not an overflow panic adding the
    // leeway to its times.
    assert!(matches!(
        verifier.verify(&token, NOW),
        Err(AuthError::TokenInvalid)
    ));
    // Issued now and expiring at the end of time: the one-hour cap.
    let (verifier, token) = emergency(NOW, i64::MAX);
    assert!(matches!(
        verifier.verify(&token, NOW),
        Err(AuthError::TokenInvalid)
    ));
}

/// Keys in memory: enough for the ring outside a database.
struct Keys(Mutex<Vec<StoredKey>>);

#[async_trait::async_trait]
impl KeyStore for Keys {
    async fn list(&self) -> Result<Vec<StoredKey>, StoreError> {
        Ok(self.0.lock().expect("lock").clone())
    }
    async fn insert(&self, key: &StoredKey) -> Result<(), StoreError> {
        self.0.lock().expect("lock").push(key.clone());
        Ok(())
    }
    async fn revoke_all(&self, _: &StoredKey, _: UnixTime) -> Result<u64, StoreError> {
        Ok(0)
    }
}

#[test]
fn an_access_token_expiring_at_the_end_of_time_is_judged_without_overflow() {
    let master = MasterKey::from_bytes(&[3u8; 32]).expect("master");
    let key = generate(&master, KeyKind::EdDsa, NOW, NOW).expect("key");
    let store = Arc::new(Keys(Mutex::new(vec![key])));
    let schedule = KeySchedule {
        verify_after_superseded: 930,
        standby: 300,
    };
    let ring =
        futures::executor::block_on(KeyRing::load(store, master, schedule, KeyKind::EdDsa, NOW))
            .expect("ring");
    let signing = ring.snapshot().signing.clone().expect("signing key");
    let service = TokenService::new(
        ring,
        Arc::new(RevocationSet::new(930)),
        Arc::new(ValidationCache::new(std::time::Duration::from_secs(300))),
        "https://issuer.test".into(),
        "aud".into(),
        900,
        30,
    );
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(signing.kid.clone());
    let claims = json!({
        "iss": "https://issuer.test", "aud": "aud",
        "sub": "0190a0b0-c0d0-7e00-8000-000000000002",
        "iat": NOW, "nbf": NOW, "exp": i64::MAX,
        "jti": "0190a0b0-c0d0-7e00-8000-000000000003",
        "sid": "0190a0b0-c0d0-7e00-8000-000000000001", "roles": [],
    });
    let token = jsonwebtoken::encode(&header, &claims, &signing.encoding).expect("sign");
    // Only a holder of the signing key can make one; the answer must still
    // be an answer (it is current), not an overflow panic.
    let verified = service.verify(&token, NOW).expect("current");
    assert_eq!(verified.exp, i64::MAX);
}
