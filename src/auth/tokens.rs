//! Access tokens: JWTs (EdDSA, ES256 or RS256) signed with the key ring's active key and
//! verified strictly — the algorithm is the one bound to the key (never
//! `none`, never HS* with a public key), `iss` and `aud` must match, `exp`
//! and `nbf` are checked here against a passed-in `now` with the configured
//! leeway, and revocations are consulted in memory. No I/O on this path.

use crate::auth::error::AuthError;
use crate::auth::keys::KeyRing;
use crate::auth::revocation::RevocationSet;
use crate::auth::sha256;
use crate::cache::validation::{ValidationCache, Verified};
use crate::store::{UnixTime, User};
use jsonwebtoken::{Header, Validation};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use uuid::Uuid;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AccessClaims {
    pub iss: String,
    pub sub: Uuid,
    pub aud: String,
    pub iat: UnixTime,
    pub nbf: UnixTime,
    pub exp: UnixTime,
    pub jti: Uuid,
    pub sid: Uuid,
    pub roles: Vec<String>,
}

pub struct TokenService {
    keys: Arc<KeyRing>,
    revocations: Arc<RevocationSet>,
    cache: Arc<ValidationCache>,
    issuer: String,
    audience: String,
    access_ttl: i64,
    leeway: i64,
}

impl TokenService {
    pub fn new(
        keys: Arc<KeyRing>,
        revocations: Arc<RevocationSet>,
        cache: Arc<ValidationCache>,
        issuer: String,
        audience: String,
        access_ttl: i64,
        leeway: i64,
    ) -> Self {
        Self {
            keys,
            revocations,
            cache,
            issuer,
            audience,
            access_ttl,
            leeway,
        }
    }

    pub fn access_ttl(&self) -> i64 {
        self.access_ttl
    }

    pub fn issue(&self, user: &User, sid: Uuid, now: UnixTime) -> Result<String, AuthError> {
        self.issue_for(user.id, &user.roles, sid, now)
    }

    /// Issues for a subject and roles known without a `User` row (refresh
    /// while the database is down uses the session's roles snapshot).
    pub fn issue_for(
        &self,
        sub: Uuid,
        roles: &[String],
        sid: Uuid,
        now: UnixTime,
    ) -> Result<String, AuthError> {
        let set = self.keys.snapshot();
        let key = set
            .signing
            .as_ref()
            .ok_or_else(|| AuthError::internal("no active signing key"))?;
        let claims = AccessClaims {
            iss: self.issuer.clone(),
            sub,
            aud: self.audience.clone(),
            iat: now,
            nbf: now,
            exp: now + self.access_ttl,
            jti: Uuid::new_v4(),
            sid,
            roles: roles.to_vec(),
        };
        let mut header = Header::new(key.algorithm);
        header.kid = Some(key.kid.clone());
        jsonwebtoken::encode(&header, &claims, &key.encoding).map_err(AuthError::internal)
    }

    pub fn verify(&self, token: &str, now: UnixTime) -> Result<Arc<AccessClaims>, AuthError> {
        if let Some(result) = self.verify_cached(token, now) {
            return result;
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::TokenInvalid)?;
        self.verify_with_header(token, header, now)
    }

    /// The answer from the validation cache, if this token is in it: the
    /// checks that can change since it was verified are made again.
    pub fn verify_cached(
        &self,
        token: &str,
        now: UnixTime,
    ) -> Option<Result<Arc<AccessClaims>, AuthError>> {
        let hit = self.cache.get(&sha256(token), now)?;
        if !self.keys.verifies(&hit.kid) {
            return Some(Err(AuthError::TokenInvalid));
        }
        Some(
            self.check_live(&hit.claims, now)
                .map(|()| self.with_current_roles(hit.claims)),
        )
    }

    /// `claims` with any role its user has lost since the token was issued
    /// taken out (DESIGN.md §2: a token never carries more authority than
    /// its user holds now). Allocates only when a role was lost.
    fn with_current_roles(&self, claims: Arc<AccessClaims>) -> Arc<AccessClaims> {
        match self
            .revocations
            .strip_lost_roles(claims.sub, &claims.roles, claims.iat)
        {
            None => claims,
            Some(roles) => Arc::new(AccessClaims {
                roles,
                ..(*claims).clone()
            }),
        }
    }

    /// The roles a refresh may issue from a session's snapshot when the
    /// user's row cannot be read: the snapshot less every role the node
    /// knows the user has lost since (changes are remembered for the
    /// refresh-token lifetime, so none since the snapshot is missed).
    pub fn snapshot_roles(&self, user: Uuid, snapshot: &[String]) -> Vec<String> {
        let known = match self.revocations.current_roles(user) {
            Some(current) => snapshot
                .iter()
                .filter(|r| current.contains(r))
                .cloned()
                .collect(),
            None => snapshot.to_vec(),
        };
        self.revocations
            .strip_lost_roles(user, &known, UnixTime::MIN)
            .unwrap_or(known)
    }

    /// `verify` for a caller that already decoded the header (to route the
    /// token), so the hot path parses it once. Successes are cached.
    pub fn verify_with_header(
        &self,
        token: &str,
        header: jsonwebtoken::Header,
        now: UnixTime,
    ) -> Result<Arc<AccessClaims>, AuthError> {
        let kid = header.kid.ok_or(AuthError::TokenInvalid)?;
        let set = self.keys.snapshot();
        let key = set.verifying.get(&kid).ok_or(AuthError::TokenInvalid)?;
        if header.alg != key.algorithm {
            return Err(AuthError::TokenInvalid);
        }
        let mut validation = Validation::new(key.algorithm);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "nbf", "iat", "iss", "aud", "sub"]);
        // Time is checked below against the caller's `now`.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        let claims = jsonwebtoken::decode::<AccessClaims>(token, &key.decoding, &validation)
            .map_err(|_| AuthError::TokenInvalid)?
            .claims;
        let claims = Arc::new(claims);
        self.check_live(&claims, now)?;
        // Issued in the future: not a token this service signed with a sane
        // clock. Checked once; a cached token only gets older.
        if claims.iat > now + self.leeway {
            return Err(AuthError::TokenInvalid);
        }
        self.cache.insert(
            sha256(token),
            Verified {
                claims: Arc::clone(&claims),
                kid: kid.into(),
            },
            now,
        );
        Ok(self.with_current_roles(claims))
    }

    /// Time and revocation: what can turn a verified token invalid later.
    fn check_live(&self, claims: &AccessClaims, now: UnixTime) -> Result<(), AuthError> {
        // A 1 s token must not live 31 s: the leeway on `exp` never
        // exceeds the TTL (DESIGN.md §2).
        if now > claims.exp.saturating_add(self.leeway.min(self.access_ttl)) {
            return Err(AuthError::TokenExpired);
        }
        if now + self.leeway < claims.nbf {
            return Err(AuthError::TokenInvalid);
        }
        if self.revocations.is_session_revoked(claims.sid)
            || self
                .revocations
                .is_user_token_revoked(claims.sub, claims.iat)
        {
            return Err(AuthError::Revoked);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::keys::{KeyKind, KeySchedule, generate};
    use crate::auth::master_key::MasterKey;
    use crate::store::{KeyStore, StoreError, StoredKey};
    use jsonwebtoken::Algorithm;
    use parking_lot::Mutex;

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
    use crate::store::UserStatus;
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    const NOW: UnixTime = 1_800_000_000;

    fn service() -> (TokenService, Arc<RevocationSet>) {
        let master = MasterKey::from_bytes(&[3u8; 32]).expect("master");
        let key = generate(&master, KeyKind::EdDsa, NOW, NOW).expect("key");
        let store = Arc::new(Keys(Mutex::new(vec![key])));
        let schedule = KeySchedule {
            verify_after_superseded: 930,
            standby: 300,
        };
        let ring = futures::executor::block_on(KeyRing::load(
            store,
            master,
            schedule,
            KeyKind::EdDsa,
            NOW,
        ))
        .expect("ring");
        let revocations = Arc::new(RevocationSet::new(930));
        let svc = TokenService::new(
            ring,
            Arc::clone(&revocations),
            Arc::new(ValidationCache::new(std::time::Duration::from_secs(300))),
            "https://issuer.test".into(),
            "aud".into(),
            900,
            30,
        );
        (svc, revocations)
    }

    fn user() -> User {
        User {
            id: Uuid::new_v4(),
            email: "a@example.com".into(),
            username: "alice".into(),
            password_hash: String::new(),
            status: UserStatus::Active,
            roles: vec!["admin".into()],
            not_before: None,
            security_version: 0,
            created_at: NOW,
            updated_at: NOW,
        }
    }

    fn b64(value: serde_json::Value) -> String {
        URL_SAFE_NO_PAD.encode(value.to_string())
    }

    #[test]
    fn a_fresh_token_verifies_with_its_claims() {
        let (svc, _) = service();
        let user = user();
        let sid = Uuid::new_v4();
        let token = svc.issue(&user, sid, NOW).expect("issue");
        let claims = svc.verify(&token, NOW + 10).expect("verify");
        assert_eq!(
            (claims.sub, claims.sid, claims.exp),
            (user.id, sid, NOW + 900)
        );
        assert_eq!(claims.roles, vec!["admin".to_string()]);
    }

    #[test]
    fn expiry_and_not_before_respect_the_leeway() {
        let (svc, _) = service();
        let token = svc.issue(&user(), Uuid::new_v4(), NOW).expect("issue");
        assert!(svc.verify(&token, NOW + 900 + 30).is_ok());
        assert!(matches!(
            svc.verify(&token, NOW + 931),
            Err(AuthError::TokenExpired)
        ));
        assert!(svc.verify(&token, NOW - 30).is_ok());
        assert!(matches!(
            svc.verify(&token, NOW - 31),
            Err(AuthError::TokenInvalid)
        ));
    }

    #[test]
    fn revoked_sessions_and_not_before_are_refused() {
        let (svc, revocations) = service();
        let user = user();
        let sid = Uuid::new_v4();
        let token = svc.issue(&user, sid, NOW).expect("issue");
        revocations.set_user_not_before(user.id, NOW + 1);
        assert!(matches!(
            svc.verify(&token, NOW + 2),
            Err(AuthError::Revoked)
        ));
        let (svc, revocations) = service();
        let token = svc.issue(&user, sid, NOW).expect("issue");
        revocations.revoke_session(sid, NOW);
        assert!(matches!(svc.verify(&token, NOW), Err(AuthError::Revoked)));
    }

    #[test]
    fn forged_algorithms_and_tampering_are_refused() {
        let (svc, _) = service();
        let token = svc.issue(&user(), Uuid::new_v4(), NOW).expect("issue");
        let parts: Vec<&str> = token.split('.').collect();
        let header: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).expect("b64")).expect("json");
        let kid = header["kid"].as_str().expect("kid").to_string();
        // alg none, with and without a signature.
        let none = format!(
            "{}.{}.",
            b64(serde_json::json!({"alg":"none","kid":kid})),
            parts[1]
        );
        assert!(matches!(
            svc.verify(&none, NOW),
            Err(AuthError::TokenInvalid)
        ));
        // HS256 keyed with the public key bytes (the classic confusion).
        let hs = jsonwebtoken::encode(
            &{
                let mut h = Header::new(Algorithm::HS256);
                h.kid = Some(kid.clone());
                h
            },
            &serde_json::from_slice::<serde_json::Value>(
                &URL_SAFE_NO_PAD.decode(parts[1]).expect("b64"),
            )
            .expect("json"),
            &jsonwebtoken::EncodingKey::from_secret(kid.as_bytes()),
        )
        .expect("hs");
        assert!(matches!(svc.verify(&hs, NOW), Err(AuthError::TokenInvalid)));
        // A changed payload breaks the signature.
        let mut claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).expect("b64")).expect("json");
        claims["roles"] = serde_json::json!(["root"]);
        let tampered = format!("{}.{}.{}", parts[0], b64(claims), parts[2]);
        assert!(matches!(
            svc.verify(&tampered, NOW),
            Err(AuthError::TokenInvalid)
        ));
        // Unknown kid.
        let unknown = format!(
            "{}.{}.{}",
            b64(serde_json::json!({"alg":"EdDSA","kid":"nope","typ":"JWT"})),
            parts[1],
            parts[2]
        );
        assert!(matches!(
            svc.verify(&unknown, NOW),
            Err(AuthError::TokenInvalid)
        ));
        assert!(matches!(
            svc.verify("garbage", NOW),
            Err(AuthError::TokenInvalid)
        ));
    }

    /// Signs `claims` with the ring's active key, as a forger holding the
    /// key (or a node with a broken clock) would.
    fn sign(svc: &TokenService, claims: &AccessClaims) -> String {
        let set = svc.keys.snapshot();
        let key = set.signing.as_ref().expect("signing key");
        let mut header = Header::new(key.algorithm);
        header.kid = Some(key.kid.clone());
        jsonwebtoken::encode(&header, claims, &key.encoding).expect("sign")
    }

    #[test]
    fn a_token_issued_in_the_future_is_refused() {
        let (svc, _) = service();
        let claims = |iat| AccessClaims {
            iss: svc.issuer.clone(),
            sub: Uuid::new_v4(),
            aud: svc.audience.clone(),
            iat,
            nbf: NOW,
            exp: NOW + 900,
            jti: Uuid::new_v4(),
            sid: Uuid::new_v4(),
            roles: vec![],
        };
        assert!(svc.verify(&sign(&svc, &claims(NOW + 30)), NOW).is_ok());
        assert!(matches!(
            svc.verify(&sign(&svc, &claims(NOW + 31)), NOW),
            Err(AuthError::TokenInvalid)
        ));
        assert!(matches!(
            svc.verify(&sign(&svc, &claims(NOW + 5 * 3600)), NOW),
            Err(AuthError::TokenInvalid)
        ));
    }

    #[test]
    fn lost_roles_are_taken_out_of_verified_and_cached_tokens() {
        let (svc, revocations) = service();
        let user = user();
        let token = svc.issue(&user, Uuid::new_v4(), NOW).expect("issue");
        assert_eq!(svc.verify(&token, NOW).expect("first").roles, ["admin"]);
        revocations.set_user_roles(user.id, &[], NOW * 1000 + 1);
        // The second verification is a cache hit: stripped all the same.
        assert!(svc.verify(&token, NOW).expect("cached").roles.is_empty());
        assert!(
            svc.snapshot_roles(user.id, &["admin".to_string()])
                .is_empty()
        );
    }

    #[test]
    fn another_issuer_or_audience_is_refused() {
        let (svc, _) = service();
        let token = svc.issue(&user(), Uuid::new_v4(), NOW).expect("issue");
        let (mut other, _) = service();
        // Same key ring, different expectations.
        other.keys = Arc::clone(&svc.keys);
        other.issuer = "https://elsewhere.test".into();
        assert!(matches!(
            other.verify(&token, NOW),
            Err(AuthError::TokenInvalid)
        ));
        other.issuer = svc.issuer.clone();
        other.audience = "other".into();
        assert!(matches!(
            other.verify(&token, NOW),
            Err(AuthError::TokenInvalid)
        ));
    }
}
