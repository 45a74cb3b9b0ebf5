//! Fetching an issuer's JWKS: the request, its size cap, the parse, and
//! the error a fetch ends in. Kept apart from token verification
//! (`external`) because this is the part that talks to the network and
//! decides what counts against the issuer's breaker: every failed fetch.

use crate::resilience::failure::{FailureKind, GuardedError};
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey};
use std::collections::HashMap;
use std::time::Duration;

/// The keys of a JWKS that can verify: by `kid`.
pub type Keys = HashMap<String, (DecodingKey, Algorithm)>;

/// Why the keys of an issuer could not be fetched. The IdP's own error,
/// not a store's: the guard learns from `GuardedError` that every fetch
/// failure (refused, 5xx, oversized, not a JWKS) counts against the
/// issuer's breaker.
#[derive(Debug, thiserror::Error)]
pub enum IdpError {
    /// The fetch failed. `kind` is what public health may show; `reason`
    /// (which can name the URL and its host) is for logs and admins.
    #[error("{idp} unavailable: {reason}")]
    Unavailable {
        idp: &'static str,
        kind: FailureKind,
        reason: String,
    },
    /// The issuer's breaker is open: not tried.
    #[error("{idp} circuit open")]
    CircuitOpen {
        idp: &'static str,
        retry_after: Duration,
    },
}

impl GuardedError for IdpError {
    fn failure(&self) -> Option<(FailureKind, &str)> {
        match self {
            IdpError::Unavailable { kind, reason, .. } => Some((*kind, reason)),
            IdpError::CircuitOpen { .. } => None,
        }
    }

    fn timed_out(idp: &'static str, reason: String) -> Self {
        IdpError::Unavailable {
            idp,
            kind: FailureKind::Timeout,
            reason,
        }
    }

    fn rejected(idp: &'static str, retry_after: Duration) -> Self {
        IdpError::CircuitOpen { idp, retry_after }
    }
}

/// One GET of `url`, checked, capped and parsed. Not guarded here: the
/// caller runs it through the issuer's guard.
pub async fn fetch(
    client: &reqwest::Client,
    url: &str,
    idp: &'static str,
) -> Result<Keys, IdpError> {
    let unavailable =
        |kind: FailureKind, reason: String| IdpError::Unavailable { idp, kind, reason };
    let response = client
        .get(url)
        .send()
        .await
        .map_err(|e| unavailable(http_failure(&e), e.to_string()))?;
    if !response.status().is_success() {
        return Err(unavailable(
            FailureKind::of_status(response.status().as_u16()),
            format!("JWKS answered {}", response.status()),
        ));
    }
    let body = read_capped(response, MAX_JWKS_BYTES)
        .await
        .map_err(|(kind, text)| unavailable(kind, text))?;
    parse_jwks(&body).map_err(|e| unavailable(FailureKind::InvalidResponse, e))
}

/// The algorithm a JWK verifies with: its `alg`, or the one its key type
/// implies. Symmetric and unknown keys are refused.
fn algorithm_of(jwk: &jsonwebtoken::jwk::Jwk) -> Option<Algorithm> {
    let implied = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => Algorithm::ES256,
            EllipticCurve::P384 => Algorithm::ES384,
            _ => return None,
        },
        AlgorithmParameters::OctetKeyPair(_) => Algorithm::EdDSA,
        _ => return None,
    };
    match jwk.common.key_algorithm {
        None => Some(implied),
        Some(KeyAlgorithm::RS256) if implied == Algorithm::RS256 => Some(Algorithm::RS256),
        Some(KeyAlgorithm::RS384) if implied == Algorithm::RS256 => Some(Algorithm::RS384),
        Some(KeyAlgorithm::RS512) if implied == Algorithm::RS256 => Some(Algorithm::RS512),
        Some(KeyAlgorithm::PS256) if implied == Algorithm::RS256 => Some(Algorithm::PS256),
        Some(KeyAlgorithm::ES256) if implied == Algorithm::ES256 => Some(Algorithm::ES256),
        Some(KeyAlgorithm::ES384) if implied == Algorithm::ES384 => Some(Algorithm::ES384),
        Some(KeyAlgorithm::EdDSA) if implied == Algorithm::EdDSA => Some(Algorithm::EdDSA),
        _ => None,
    }
}

/// What kind of failure a JWKS request had. A TLS failure is known only
/// by its text (reqwest does not type it); the text is read here to pick a
/// word from a fixed set, never shown.
fn http_failure(e: &reqwest::Error) -> FailureKind {
    if e.is_timeout() {
        return FailureKind::Timeout;
    }
    let kind = FailureKind::of_error(e);
    if kind != FailureKind::Other {
        return kind;
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        let text = s.to_string().to_ascii_lowercase();
        if text.contains("certificate") || text.contains("tls") || text.contains("handshake") {
            return FailureKind::Tls;
        }
        source = s.source();
    }
    if e.is_connect() {
        FailureKind::Unreachable
    } else if e.is_body() || e.is_decode() {
        FailureKind::InvalidResponse
    } else {
        FailureKind::Other
    }
}

/// The largest JWKS accepted (DESIGN.md §2). A real one is a few KiB; a
/// larger answer is the issuer misbehaving (or someone between us and it)
/// and must not make every node buffer it. It is treated like any invalid
/// answer: the fetch fails and counts against the issuer's breaker, and
/// the cached keys keep serving within `max_stale`.
pub const MAX_JWKS_BYTES: usize = 1024 * 1024;

/// The body, read chunk by chunk and abandoned as soon as it passes `cap`
/// bytes (a declared length over the cap is refused before reading).
async fn read_capped(
    mut response: reqwest::Response,
    cap: usize,
) -> Result<Vec<u8>, (FailureKind, String)> {
    let too_large = || {
        (
            FailureKind::InvalidResponse,
            format!("JWKS larger than {cap} bytes refused"),
        )
    };
    if response
        .content_length()
        .is_some_and(|declared| declared > cap as u64)
    {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| (http_failure(&e), e.to_string()))?
    {
        if body.len() + chunk.len() > cap {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn parse_jwks(body: &[u8]) -> Result<Keys, String> {
    let set: JwkSet = serde_json::from_slice(body).map_err(|e| format!("not a JWKS: {e}"))?;
    let mut keys = HashMap::new();
    for jwk in &set.keys {
        let (Some(kid), Some(alg)) = (jwk.common.key_id.clone(), algorithm_of(jwk)) else {
            continue; // keys without kid or usable algorithm are ignored
        };
        if let Ok(key) = DecodingKey::from_jwk(jwk) {
            keys.insert(kid, (key, alg));
        }
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symmetric_and_mismatched_keys_are_ignored() {
        let jwks = serde_json::json!({"keys": [
            {"kty": "oct", "kid": "h", "k": "c2VjcmV0"},
            {"kty": "OKP", "crv": "Ed25519", "kid": "e", "alg": "RS256",
             "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
            {"kty": "OKP", "crv": "Ed25519", "kid": "ok",
             "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}
        ]});
        let keys = parse_jwks(jwks.to_string().as_bytes()).expect("parse");
        assert_eq!(keys.keys().collect::<Vec<_>>(), vec!["ok"]);
        assert_eq!(keys["ok"].1, Algorithm::EdDSA);
    }
}
