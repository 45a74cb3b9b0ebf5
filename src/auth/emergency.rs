//! Break-glass tokens (DESIGN.md §2): signed offline with a dedicated
//! Ed25519 key whose private half never reaches the service; the service
//! holds only the public half (`[emergency] public_key_file`). Verified in
//! memory, so they work with PostgreSQL and Redis both down. Every use is
//! logged at WARN with its reason and jti and counted in metrics; so is
//! every refusal, with why: whoever sends one is in an emergency and must
//! be able to tell a wrong audience from a denied token.
//!
//! A leaked token is refused by its `jti` (`[emergency] deny_jti`). The
//! list is swapped whole on reload (SIGHUP), with no store involved: it
//! must work while PostgreSQL and Redis are down, which is when these
//! tokens are used.

use crate::auth::audit::Audit;
use crate::auth::error::AuthError;
use crate::store::UnixTime;
use arc_swap::ArcSwap;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
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
    /// Optional (DESIGN.md §2); never before `iat` when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<UnixTime>,
    pub exp: UnixTime,
    pub jti: Uuid,
    pub emergency: bool,
    pub reason: String,
    /// What it may do, e.g. `["admin"]`.
    pub scope: Vec<String>,
}

/// Why an emergency token was refused: logged at WARN, never sent to the
/// caller (the answer is the contract's code only).
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("not signed by the configured emergency key, or malformed: {0}")]
    Undecodable(String),
    #[error("issuer {claimed:?}, this node is {expected:?}")]
    Issuer { claimed: String, expected: String },
    #[error("audience {claimed:?}, this node is {expected:?}")]
    Audience { claimed: String, expected: String },
    #[error("claim `emergency` is not true")]
    NotEmergency,
    #[error("no reason given")]
    NoReason,
    #[error("iat {iat} in the future (now {now}, leeway {leeway}s)")]
    IssuedInFuture { iat: i64, now: i64, leeway: i64 },
    #[error("lifetime exp - iat = {0}s, allowed 1s to 1h")]
    Lifetime(i64),
    #[error("nbf {nbf} before iat {iat}")]
    NotBeforeIssued { nbf: i64, iat: i64 },
    #[error("not valid before {nbf} (now {now}, leeway {leeway}s)")]
    NotYetValid { nbf: i64, now: i64, leeway: i64 },
    #[error("expired at {exp} (now {now}, leeway {leeway}s)")]
    Expired { exp: i64, now: i64, leeway: i64 },
    #[error("jti denied by [emergency] deny_jti")]
    Denied,
}

impl Refusal {
    fn error(&self) -> AuthError {
        match self {
            Refusal::Expired { .. } => AuthError::TokenExpired,
            Refusal::Denied => AuthError::Revoked,
            _ => AuthError::TokenInvalid,
        }
    }
}

/// The service side: the public key, the expected issuer and audience, and
/// the jtis refused by configuration.
pub struct EmergencyVerifier {
    decoding: DecodingKey,
    issuer: String,
    audience: String,
    leeway: i64,
    denied: ArcSwap<HashSet<Uuid>>,
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
        nbf: Some(request.now),
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
        denied: &[Uuid],
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
            denied: ArcSwap::from_pointee(denied.iter().copied().collect()),
        })
    }

    /// Replaces the denied jtis at once: a verification sees the old list
    /// or the new one, never a mix.
    pub fn set_denied(&self, denied: &[Uuid]) {
        self.denied
            .store(Arc::new(denied.iter().copied().collect()));
        tracing::info!(denied = denied.len(), "emergency deny list loaded");
    }

    /// `verify`, and the use recorded in the audit log: every use of a
    /// break-glass token is a security event, whoever checks it.
    pub fn admit(
        &self,
        token: &str,
        now: UnixTime,
        audit: &Arc<Audit>,
    ) -> Result<EmergencyClaims, AuthError> {
        let claims = self.verify(token, now)?;
        // Accepted with both stores down (DESIGN.md §2): the WARN line and
        // the metric are its record then, the audit row follows if it can.
        audit.record_detached(
            "emergency_token_used",
            None,
            serde_json::json!({"jti": claims.jti, "sub": claims.sub, "reason": claims.reason}),
        );
        Ok(claims)
    }

    /// Verifies an emergency token, then logs and counts its use; a refusal
    /// is logged with its cause.
    pub fn verify(&self, token: &str, now: UnixTime) -> Result<EmergencyClaims, AuthError> {
        match self.examine(token, now) {
            Ok(claims) => {
                tracing::warn!(
                    jti = %claims.jti,
                    reason = %claims.reason,
                    scope = ?claims.scope,
                    "emergency token used"
                );
                metrics::counter!("holdfast_emergency_token_uses_total").increment(1);
                Ok(claims)
            }
            Err((jti, refusal)) => {
                let jti = jti.map_or_else(|| "unreadable".to_string(), |j| j.to_string());
                tracing::warn!(jti = %jti, "emergency token refused: {refusal}");
                Err(refusal.error())
            }
        }
    }

    /// The signature first: only a token our offline key signed has claims
    /// worth naming in the log.
    fn examine(
        &self,
        token: &str,
        now: UnixTime,
    ) -> Result<EmergencyClaims, (Option<Uuid>, Refusal)> {
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.validate_aud = false;
        validation.validate_exp = false;
        validation.validate_nbf = false;
        let claims = jsonwebtoken::decode::<EmergencyClaims>(token, &self.decoding, &validation)
            .map_err(|e| (None, Refusal::Undecodable(e.to_string())))?
            .claims;
        let refuse = |refusal| Err((Some(claims.jti), refusal));
        let leeway = self.leeway;
        if claims.iss != self.issuer {
            return refuse(Refusal::Issuer {
                claimed: claims.iss.clone(),
                expected: self.issuer.clone(),
            });
        }
        if claims.aud != self.audience {
            return refuse(Refusal::Audience {
                claimed: claims.aud.clone(),
                expected: self.audience.clone(),
            });
        }
        if !claims.emergency {
            return refuse(Refusal::NotEmergency);
        }
        if claims.reason.trim().is_empty() {
            return refuse(Refusal::NoReason);
        }
        if claims.iat > now.saturating_add(leeway) {
            return refuse(Refusal::IssuedInFuture {
                iat: claims.iat,
                now,
                leeway,
            });
        }
        // Wide arithmetic: times at the ends of i64 must not wrap past the
        // cap (a wrapped life came out negative, "under an hour").
        let lifetime = i128::from(claims.exp) - i128::from(claims.iat);
        if lifetime <= 0 || lifetime > i128::from(MAX_TTL) {
            return refuse(Refusal::Lifetime(
                i64::try_from(lifetime).unwrap_or(i64::MAX),
            ));
        }
        if let Some(nbf) = claims.nbf {
            if nbf < claims.iat {
                return refuse(Refusal::NotBeforeIssued {
                    nbf,
                    iat: claims.iat,
                });
            }
            if nbf > now.saturating_add(leeway) {
                return refuse(Refusal::NotYetValid { nbf, now, leeway });
            }
        }
        if now > claims.exp.saturating_add(leeway) {
            return refuse(Refusal::Expired {
                exp: claims.exp,
                now,
                leeway,
            });
        }
        if self.denied.load().contains(&claims.jti) {
            return refuse(Refusal::Denied);
        }
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
        EmergencyVerifier::load(&path, "https://a.test".into(), "aud".into(), 30, &[])
            .expect("load")
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
            Err(AuthError::TokenExpired)
        ));
        let (_, other_public) = keygen().expect("keygen");
        assert!(matches!(
            verifier(&other_public).verify(&token, 1_100),
            Err(AuthError::TokenInvalid)
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

    /// Signs `claims` with `private` as an emergency token, whatever they say.
    fn sign(private: &str, claims: serde_json::Value) -> String {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(KID.to_string());
        let key = EncodingKey::from_ed_pem(private.as_bytes()).expect("key");
        jsonwebtoken::encode(&header, &claims, &key).expect("sign")
    }

    #[test]
    fn each_broken_claim_is_refused_for_its_own_reason() {
        let (private, public) = keygen().expect("keygen");
        let v = verifier(&public);
        let now = 10_000;
        let good = serde_json::json!({"iss": "https://a.test", "aud": "aud", "sub": KID,
            "iat": now, "exp": now + 600, "jti": Uuid::new_v4(), "emergency": true,
            "reason": "INC-1", "scope": ["admin"]});
        let with = |key: &str, value: serde_json::Value| {
            let mut claims = good.clone();
            claims[key] = value;
            sign(&private, claims)
        };
        assert!(v.examine(&sign(&private, good.clone()), now).is_ok());
        let refusal = |token: String| v.examine(&token, now).err().map(|(_, r)| r);
        assert!(matches!(
            refusal(with("iat", (now + 5 * 3600).into())),
            Some(Refusal::IssuedInFuture { .. })
        ));
        // iat 5 h ahead with exp 6 h ahead: once refused only for its life.
        let mut ahead = good.clone();
        ahead["iat"] = (now + 5 * 3600).into();
        ahead["exp"] = (now + 6 * 3600).into();
        assert!(matches!(
            refusal(sign(&private, ahead)),
            Some(Refusal::IssuedInFuture { .. })
        ));
        assert!(matches!(
            refusal(with("exp", (now + 3601).into())),
            Some(Refusal::Lifetime(3601))
        ));
        assert!(matches!(
            refusal(with("nbf", (now - 1).into())),
            Some(Refusal::NotBeforeIssued { .. })
        ));
        assert!(matches!(
            refusal(with("nbf", (now + 120).into())),
            Some(Refusal::NotYetValid { .. })
        ));
        assert!(matches!(
            refusal(with("reason", " ".into())),
            Some(Refusal::NoReason)
        ));
        assert!(matches!(
            refusal(with("aud", "other".into())),
            Some(Refusal::Audience { .. })
        ));
        assert!(matches!(
            refusal(with("emergency", false.into())),
            Some(Refusal::NotEmergency)
        ));
        let jti = Uuid::new_v4();
        let denied = with("jti", jti.to_string().into());
        assert!(v.examine(&denied, now).is_ok());
        v.set_denied(&[jti]);
        assert!(matches!(v.verify(&denied, now), Err(AuthError::Revoked)));
        v.set_denied(&[]);
        assert!(v.verify(&denied, now).is_ok());
    }
}
