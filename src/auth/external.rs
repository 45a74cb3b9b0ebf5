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
//!
//! Ages (of the keys, of the last refetch) are measured on tokio's clock,
//! read once per verification and handed to the rules (`Jwks::key_for`,
//! `may_refetch`), so the rules are tested with the time given.

mod jwks;

pub use jwks::{IdpError, MAX_JWKS_BYTES};

use crate::auth::error::AuthError;
use crate::config::IdpConfig;
use crate::resilience::breaker::State;
use crate::resilience::{Call, DependencyGuard};
use crate::store::{Probe, StoreError};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use parking_lot::{Mutex, RwLock};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::time::Instant;

/// A caller proven by an upstream issuer's token.
#[derive(Debug, Clone)]
pub struct ExternalIdentity {
    pub idp: String,
    pub sub: String,
    /// The values of the IdP's `roles_claim` (empty when none is set).
    pub roles: Vec<String>,
}

struct Jwks {
    keys: jwks::Keys,
    fetched: Instant,
}

/// What the cached keys can say about a `kid` at some moment.
enum Cached<K> {
    /// Known, and the keys are within `max_stale`.
    Key(K),
    /// Past `max_stale` since the last good fetch: only a fresh fetch will do.
    TooOld,
    /// Never fetched, or not a `kid` the issuer published.
    Unknown,
}

impl Jwks {
    fn age(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.fetched)
    }

    fn key_for(
        &self,
        kid: &str,
        now: Instant,
        max_stale: Duration,
    ) -> Cached<&(DecodingKey, Algorithm)> {
        if self.age(now) > max_stale {
            return Cached::TooOld;
        }
        self.keys.get(kid).map_or(Cached::Unknown, Cached::Key)
    }
}

/// May an unknown `kid` cause a refetch at `now`, given the last one?
fn may_refetch(last: Option<Instant>, now: Instant, min_interval: Duration) -> bool {
    last.is_none_or(|t| now.saturating_duration_since(t) >= min_interval)
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
    pub async fn refresh(&self) -> Result<(), IdpError> {
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
        let result = self
            .guard
            .run(
                Call::Read,
                jwks::fetch(&self.client, &self.config.jwks_url, self.name),
            )
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
    pub async fn refresh_now(&self) -> Result<(), IdpError> {
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
        let now = Instant::now();
        let key = match cached.as_ref().map_or(Cached::Unknown, |j| {
            j.key_for(kid, now, self.config.max_stale)
        }) {
            Cached::TooOld => {
                // Too old to trust; only a fresh fetch will do.
                self.refresh().await.map_err(|_| self.unavailable())?;
                self.lookup(kid)?
            }
            Cached::Key(key) => key.clone(),
            Cached::Unknown => self.refetch_for_unknown(kid, now).await?,
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
    async fn refetch_for_unknown(
        &self,
        kid: &str,
        now: Instant,
    ) -> Result<(DecodingKey, Algorithm), AuthError> {
        let never_fetched = self.jwks.read().is_none();
        if !self.is_reachable() && !never_fetched {
            // The issuer is down: we cannot tell a new key from a forged one.
            return Err(self.unavailable());
        }
        {
            let mut last = self.last_refetch.lock();
            if !may_refetch(*last, now, self.config.min_refetch_interval) {
                return Err(if never_fetched {
                    self.unavailable()
                } else {
                    AuthError::TokenInvalid
                });
            }
            *last = Some(now);
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
    ///
    /// Health's probe speaks the stores' error; only success or failure is
    /// read from it, so the fetch error travels as its kind and text.
    async fn ping(&self) -> Result<(), StoreError> {
        let now = Instant::now();
        let fresh = self
            .jwks
            .read()
            .as_ref()
            .is_some_and(|j| j.age(now) <= self.config.max_stale);
        if fresh && self.is_reachable() {
            return Ok(());
        }
        self.refresh().await.map_err(|e| match e {
            IdpError::Unavailable { idp, kind, reason } => StoreError::Unavailable {
                dependency: idp,
                kind,
                reason,
            },
            IdpError::CircuitOpen { idp, retry_after } => StoreError::CircuitOpen {
                dependency: idp,
                retry_after,
            },
        })
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

    /// The time rules with the time given: keys serve until `max_stale`
    /// after their fetch (inclusive), then only a fetch will do; an unknown
    /// `kid` refetches at most once per `min_refetch_interval`.
    #[test]
    fn cached_keys_serve_until_max_stale_and_refetches_keep_their_budget() {
        let fetched = Instant::now();
        let mut known = jwks::Keys::new();
        known.insert(
            "k1".into(),
            (DecodingKey::from_secret(b"k"), Algorithm::HS256),
        );
        let keys = Jwks {
            keys: known,
            fetched,
        };
        let max_stale = Duration::from_secs(3);
        let at = |ms: u64| fetched + Duration::from_millis(ms);
        assert!(matches!(
            keys.key_for("k1", at(3000), max_stale),
            Cached::Key(_)
        ));
        assert!(matches!(
            keys.key_for("k2", at(3000), max_stale),
            Cached::Unknown
        ));
        assert!(matches!(
            keys.key_for("k1", at(3001), max_stale),
            Cached::TooOld
        ));

        let interval = Duration::from_secs(1);
        assert!(may_refetch(None, at(0), interval));
        assert!(!may_refetch(Some(at(0)), at(999), interval));
        assert!(may_refetch(Some(at(0)), at(1000), interval));
    }
}
