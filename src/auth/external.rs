//! Upstream identity providers (`[[idp]]`): tokens from a configured issuer
//! are verified against that issuer's JWKS.
//!
//! The JWKS is cached. It is refreshed in the background before `jwks_ttl`
//! runs out; an unknown `kid` triggers a refetch at most once per
//! `min_refetch_interval` (past that budget, AUTH003). When the issuer is
//! unreachable (every fetch goes through its own `DependencyGuard`,
//! `idp:<name>`), the cached keys keep verifying until `max_stale` after
//! the last successful fetch; past that, or for a `kid` we have never seen,
//! the answer is 503 SVC001 — never a guess.

use crate::auth::error::AuthError;
use crate::config::IdpConfig;
use crate::resilience::breaker::State;
use crate::resilience::failure::FailureKind;
use crate::resilience::{Call, DependencyGuard};
use crate::store::{Probe, StoreError};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use parking_lot::{Mutex, RwLock};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// A caller proven by an upstream issuer's token.
#[derive(Debug, Clone)]
pub struct ExternalIdentity {
    pub idp: String,
    pub sub: String,
    /// The values of the IdP's `roles_claim` (empty when none is set).
    pub roles: Vec<String>,
}

struct Jwks {
    keys: HashMap<String, (DecodingKey, Algorithm)>,
    fetched: Instant,
}

pub struct Idp {
    config: IdpConfig,
    name: &'static str,
    guard: Arc<DependencyGuard>,
    client: reqwest::Client,
    jwks: RwLock<Option<Arc<Jwks>>>,
    /// When an unknown `kid` last caused a refetch.
    last_refetch: Mutex<Option<Instant>>,
    /// Did the last fetch succeed?
    reachable: AtomicBool,
    /// One fetch at a time.
    fetching: tokio::sync::Mutex<()>,
    leeway: u64,
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

/// The roles in an upstream claim: a string or an array of strings
/// (anything else: none). A value is kept only if it can travel in the
/// comma-separated `X-Auth-Roles` as itself: printable ASCII, no comma and
/// no surrounding space — otherwise an upstream group named
/// `"viewer,admin"` would read as the role `admin` to the proxy.
fn roles_of(claim: &serde_json::Value) -> Vec<String> {
    let values: Vec<&str> = match claim {
        serde_json::Value::String(one) => vec![one.as_str()],
        serde_json::Value::Array(many) => many.iter().filter_map(|v| v.as_str()).collect(),
        _ => Vec::new(),
    };
    values
        .into_iter()
        .filter(|v| {
            !v.is_empty()
                && v.trim() == *v
                && v.bytes().all(|b| (b' '..=b'~').contains(&b) && b != b',')
        })
        .map(str::to_string)
        .collect()
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

fn parse_jwks(body: &[u8]) -> Result<HashMap<String, (DecodingKey, Algorithm)>, String> {
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

impl Idp {
    fn new(config: IdpConfig, guard: Arc<DependencyGuard>, leeway: u64) -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            .build()
            .map_err(|e| format!("idp {}: {e}", config.name))?;
        Ok(Self {
            name: guard.name(),
            config,
            guard,
            client,
            jwks: RwLock::new(None),
            last_refetch: Mutex::new(None),
            reachable: AtomicBool::new(false),
            fetching: tokio::sync::Mutex::new(()),
            leeway,
        })
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    pub fn guard(&self) -> &Arc<DependencyGuard> {
        &self.guard
    }

    /// Fetches the JWKS now (one fetch at a time; a caller that waited for
    /// another's fetch uses its result).
    pub async fn refresh(&self) -> Result<(), StoreError> {
        let started = Instant::now();
        let _one = self.fetching.lock().await;
        if self
            .jwks
            .read()
            .as_ref()
            .is_some_and(|j| j.fetched >= started)
        {
            return Ok(());
        }
        let url = self.config.jwks_url.clone();
        let unavailable = |kind: FailureKind, reason: String| StoreError::Unavailable {
            dependency: self.name,
            kind,
            reason,
        };
        let failed = |e: reqwest::Error| unavailable(http_failure(&e), e.to_string());
        let result = self
            .guard
            .run(Call::Read, async {
                let response = self.client.get(&url).send().await.map_err(failed)?;
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
            })
            .await;
        match result {
            Ok(keys) => {
                tracing::info!(idp = %self.config.name, keys = keys.len(), "JWKS fetched");
                *self.jwks.write() = Some(Arc::new(Jwks {
                    keys,
                    fetched: Instant::now(),
                }));
                self.reachable.store(true, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => {
                tracing::warn!(idp = %self.config.name, error = %e, "JWKS fetch failed");
                self.reachable.store(false, Ordering::Relaxed);
                Err(e)
            }
        }
    }

    /// An operator's "refetch now": tried even while the breaker is open
    /// (the breaker is reset first; a failure counts against it again).
    pub async fn refresh_now(&self) -> Result<(), StoreError> {
        if self.guard.breaker().state() != State::Closed {
            tracing::warn!(idp = %self.config.name, "JWKS refresh forced by an admin; breaker reset");
            self.guard.breaker().reset();
        }
        self.refresh().await
    }

    fn unavailable(&self) -> AuthError {
        AuthError::Unavailable {
            dependency: self.name.to_string(),
            retry_after: Duration::from_secs(5),
        }
    }

    fn is_reachable(&self) -> bool {
        self.reachable.load(Ordering::Relaxed) && self.guard.breaker().state() == State::Closed
    }

    pub async fn verify(
        &self,
        token: &str,
        header: &jsonwebtoken::Header,
    ) -> Result<ExternalIdentity, AuthError> {
        let kid = header.kid.as_deref().ok_or(AuthError::TokenInvalid)?;
        let cached = self.jwks.read().clone();
        let key = match cached
            .as_ref()
            .map(|j| (j.keys.get(kid), j.fetched.elapsed()))
        {
            Some((_, age)) if age > self.config.max_stale => {
                // Too old to trust; only a fresh fetch will do.
                self.refresh().await.map_err(|_| self.unavailable())?;
                self.lookup(kid)?
            }
            Some((Some(key), _)) => key.clone(),
            _ => self.refetch_for_unknown(kid).await?,
        };
        let (decoding, algorithm) = key;
        if header.alg != algorithm {
            return Err(AuthError::TokenInvalid);
        }
        let mut validation = Validation::new(algorithm);
        validation.set_issuer(&[&self.config.issuer]);
        validation.set_audience(&[&self.config.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = self.leeway;
        // Checked when present, with the same leeway as `exp`.
        validation.validate_nbf = true;
        let claims = jsonwebtoken::decode::<serde_json::Value>(token, &decoding, &validation)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => AuthError::TokenExpired,
                _ => AuthError::TokenInvalid,
            })?
            .claims;
        let sub = claims["sub"]
            .as_str()
            .ok_or(AuthError::TokenInvalid)?
            .to_string();
        let roles = match &self.config.roles_claim {
            Some(claim) => roles_of(&claims[claim.as_str()]),
            None => Vec::new(),
        };
        Ok(ExternalIdentity {
            idp: self.config.name.clone(),
            sub,
            roles,
        })
    }

    fn lookup(&self, kid: &str) -> Result<(DecodingKey, Algorithm), AuthError> {
        self.jwks
            .read()
            .as_ref()
            .and_then(|j| j.keys.get(kid).cloned())
            .ok_or(AuthError::TokenInvalid)
    }

    /// An unknown `kid`: maybe the issuer rotated. Refetch, within budget.
    async fn refetch_for_unknown(&self, kid: &str) -> Result<(DecodingKey, Algorithm), AuthError> {
        let never_fetched = self.jwks.read().is_none();
        if !self.is_reachable() && !never_fetched {
            // The issuer is down: we cannot tell a new key from a forged one.
            return Err(self.unavailable());
        }
        {
            let mut last = self.last_refetch.lock();
            if last.is_some_and(|t| t.elapsed() < self.config.min_refetch_interval) {
                return Err(if never_fetched {
                    self.unavailable()
                } else {
                    AuthError::TokenInvalid
                });
            }
            *last = Some(Instant::now());
        }
        self.refresh().await.map_err(|_| self.unavailable())?;
        self.lookup(kid)
    }

    /// Keeps the JWKS fresh: fetches at start, then again at 80 % of its
    /// TTL; after a failure retries with capped backoff.
    fn spawn_refresher(self: &Arc<Self>) {
        let idp = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut backoff = Duration::from_secs(1);
            loop {
                let Some(idp) = idp.upgrade() else { return };
                let wait = match idp.refresh().await {
                    Ok(()) => {
                        backoff = Duration::from_secs(1);
                        idp.config.jwks_ttl.mul_f64(0.8)
                    }
                    Err(_) => {
                        backoff = (backoff * 2).min(Duration::from_secs(60));
                        backoff.min(idp.config.jwks_ttl)
                    }
                };
                drop(idp);
                tokio::time::sleep(wait).await;
            }
        });
    }
}

#[async_trait::async_trait]
impl Probe for Idp {
    fn name(&self) -> &'static str {
        self.name
    }

    fn backend(&self) -> &'static str {
        "jwks"
    }

    /// Healthy while the last fetch succeeded and the keys are within
    /// `max_stale`; otherwise a real fetch decides.
    async fn ping(&self) -> Result<(), StoreError> {
        let fresh = self
            .jwks
            .read()
            .as_ref()
            .is_some_and(|j| j.fetched.elapsed() <= self.config.max_stale);
        if fresh && self.is_reachable() {
            return Ok(());
        }
        self.refresh().await
    }
}

/// Every configured upstream issuer.
#[derive(Default)]
pub struct ExternalIdps {
    idps: Vec<Arc<Idp>>,
}

impl ExternalIdps {
    /// One provider per `[[idp]]` block, each fetching its JWKS at once.
    pub fn start(config: &crate::config::Config, leeway: u64) -> Result<Self, String> {
        let mut idps = Vec::new();
        for idp in &config.idp {
            // Guard names are `&'static str` everywhere (metrics labels);
            // one small leak per configured provider, at start.
            let name: &'static str = Box::leak(format!("idp:{}", idp.name).into_boxed_str());
            let guard = Arc::new(DependencyGuard::new(
                name,
                idp.timeout,
                config.breaker.for_dependency(name),
            ));
            let idp = Arc::new(Idp::new(idp.clone(), guard, leeway)?);
            idp.spawn_refresher();
            idps.push(idp);
        }
        Ok(Self { idps })
    }

    pub fn all(&self) -> &[Arc<Idp>] {
        &self.idps
    }

    /// The provider whose issuer the token claims (read without trusting
    /// it: the signature is checked against that provider's keys only).
    pub fn for_token(&self, token: &str) -> Option<&Arc<Idp>> {
        if self.idps.is_empty() {
            return None;
        }
        let payload = token.split('.').nth(1)?;
        let bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
        #[derive(serde::Deserialize)]
        struct Iss {
            iss: String,
        }
        let iss = serde_json::from_slice::<Iss>(&bytes).ok()?.iss;
        self.idps.iter().find(|i| i.config.issuer == iss)
    }
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

    #[test]
    fn roles_are_a_string_or_strings_that_travel_as_themselves() {
        use serde_json::json;
        assert_eq!(roles_of(&json!("admin")), ["admin"]);
        assert_eq!(
            roles_of(&json!(["a", 1, "viewer,admin", " admin", "b c", "é", ""])),
            ["a", "b c"]
        );
        assert!(roles_of(&json!({"admin": true})).is_empty());
        assert!(roles_of(&json!(null)).is_empty());
        assert!(roles_of(&json!(true)).is_empty());
    }
}
