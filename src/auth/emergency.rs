//! Break-glass tokens (DESIGN.md §2): signed offline with a dedicated
//! Ed25519 key whose private half never reaches the service; the service
//! holds only the public half (`[emergency] public_key_file`). Verified in
//! memory, so they work with PostgreSQL and Redis both down. Every use is
//! logged at WARN with its reason and jti and counted in metrics.

use crate::error::ApiError;
use crate::store::UnixTime;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use std::path::Path;
use uuid::Uuid;

/// The `kid` of every emergency token: it routes verification here.
pub const KID: &str = "emergency";
/// The longest an emergency token may live, checked when issued and again
/// when verified (a token signed with a longer life is refused).
pub const MAX_TTL: i64 = 3600;

/// The fixed DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410).
const SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EmergencyClaims {
    pub iss: String,
    pub aud: String,
    pub sub: String,
    pub iat: UnixTime,
    pub nbf: UnixTime,
    pub exp: UnixTime,
    pub jti: Uuid,
    pub emergency: bool,
    pub reason: String,
    /// What it may do, e.g. `["admin"]`.
    pub scope: Vec<String>,
}

/// The service side: the public key and the expected issuer and audience.
pub struct EmergencyVerifier {
    decoding: DecodingKey,
    issuer: String,
    audience: String,
    leeway: i64,
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .filter_map(|c| std::str::from_utf8(c).ok())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

/// A new key pair as PEM: (private PKCS#8, public SPKI).
pub fn keygen() -> Result<(String, String), String> {
    use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let pkcs8 = Ed25519KeyPair::generate_pkcs8v1(&rng).map_err(|_| "key generation failed")?;
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).map_err(|_| "key generation failed")?;
    let mut spki = SPKI_PREFIX.to_vec();
    spki.extend_from_slice(pair.public_key().as_ref());
    Ok((pem("PRIVATE KEY", pkcs8.as_ref()), pem("PUBLIC KEY", &spki)))
}

/// What `holdfast emergency issue` signs.
pub struct Issue<'a> {
    pub issuer: &'a str,
    pub audience: &'a str,
    pub reason: &'a str,
    pub ttl_secs: i64,
    pub scope: Vec<String>,
    pub now: UnixTime,
}

/// Signs an emergency token with the offline private key (PEM).
pub fn issue(private_pem: &[u8], request: Issue<'_>) -> Result<String, String> {
    if request.ttl_secs <= 0 || request.ttl_secs > MAX_TTL {
        return Err(format!(
            "ttl must be between 1s and 1h, not {}s",
            request.ttl_secs
        ));
    }
    if request.reason.trim().is_empty() {
        return Err("a reason is required: it is logged at every use".into());
    }
    let key = EncodingKey::from_ed_pem(private_pem).map_err(|e| format!("bad key file: {e}"))?;
    let claims = EmergencyClaims {
        iss: request.issuer.to_string(),
        aud: request.audience.to_string(),
        sub: KID.to_string(),
        iat: request.now,
        nbf: request.now,
        exp: request.now + request.ttl_secs,
        jti: Uuid::new_v4(),
        emergency: true,
        reason: request.reason.to_string(),
        scope: request.scope,
    };
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(KID.to_string());
    jsonwebtoken::encode(&header, &claims, &key).map_err(|e| e.to_string())
}

impl EmergencyVerifier {
    pub fn load(
        public_key_file: &Path,
        issuer: String,
        audience: String,
        leeway: i64,
    ) -> Result<Self, String> {
        let pem = std::fs::read(public_key_file)
            .map_err(|e| format!("cannot read {}: {e}", public_key_file.display()))?;
        let decoding = DecodingKey::from_ed_pem(&pem).map_err(|e| {
            format!(
                "{} is not an Ed25519 public key: {e}",
                public_key_file.display()
            )
        })?;
        Ok(Self {
            decoding,
            issuer,
            audience,
            leeway,
        })
    }

    /// Verifies an emergency token, then logs and counts its use.
    pub fn verify(&self, token: &str, now: UnixTime) -> Result<EmergencyClaims, ApiError> {
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "nbf", "iat", "iss", "aud"]);
        validation.validate_exp = false;
        validation.validate_nbf = false;
        let claims = jsonwebtoken::decode::<EmergencyClaims>(token, &self.decoding, &validation)
            .map_err(|_| ApiError::TokenInvalid)?
            .claims;
        // Wide arithmetic: times at the ends of i64 must not wrap past the
        // cap (a wrapped life came out negative, "under an hour").
        let life = i128::from(claims.exp) - i128::from(claims.iat);
        if !claims.emergency || life > i128::from(MAX_TTL) {
            return Err(ApiError::TokenInvalid);
        }
        if now > claims.exp.saturating_add(self.leeway) {
            return Err(ApiError::TokenExpired);
        }
        if now + self.leeway < claims.nbf {
            return Err(ApiError::TokenInvalid);
        }
        tracing::warn!(
            jti = %claims.jti,
            reason = %claims.reason,
            scope = ?claims.scope,
            "emergency token used"
        );
        metrics::counter!("holdfast_emergency_token_uses_total").increment(1);
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verifier(public: &str) -> EmergencyVerifier {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("emergency.pub");
        std::fs::write(&path, public).expect("write");
        EmergencyVerifier::load(&path, "https://a.test".into(), "aud".into(), 30).expect("load")
    }

    fn request(ttl_secs: i64) -> Issue<'static> {
        Issue {
            issuer: "https://a.test",
            audience: "aud",
            reason: "database down, INC-42",
            ttl_secs,
            scope: vec!["admin".into()],
            now: 1_000,
        }
    }

    #[test]
    fn issued_tokens_verify_only_with_their_key_and_within_their_life() {
        let (private, public) = keygen().expect("keygen");
        let token = issue(private.as_bytes(), request(1800)).expect("issue");
        let kid = jsonwebtoken::decode_header(&token).expect("header").kid;
        assert_eq!(kid.as_deref(), Some(KID));
        let claims = verifier(&public).verify(&token, 1_100).expect("verify");
        assert_eq!(claims.scope, vec!["admin".to_string()]);
        assert!(matches!(
            verifier(&public).verify(&token, 2_900),
            Err(ApiError::TokenExpired)
        ));
        let (_, other_public) = keygen().expect("keygen");
        assert!(matches!(
            verifier(&other_public).verify(&token, 1_100),
            Err(ApiError::TokenInvalid)
        ));
    }

    #[test]
    fn ttl_is_capped_at_an_hour_and_a_reason_is_required() {
        let (private, _) = keygen().expect("keygen");
        assert!(issue(private.as_bytes(), request(3601)).is_err());
        assert!(
            issue(
                private.as_bytes(),
                Issue {
                    reason: " ",
                    ..request(60)
                }
            )
            .is_err()
        );
    }
}
