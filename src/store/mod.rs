//! Persistence behind small traits, one per capability (`UserStore`,
//! `SessionStore`, `KeyStore`). Backends are chosen once at start in
//! `app.rs`; the domain never asks which one it has. Stores know nothing of
//! HTTP or tokens: they keep rows and answer questions about them.

pub mod deferred;
pub mod event_logs;
pub mod grants;
pub mod layered;
pub mod memory;
pub mod memory_limiter;
pub mod private_files;
pub mod redis;
pub mod redis_deferred;
pub mod redis_limiter;
pub mod redis_link;
pub mod sql;

use crate::resilience::failure::FailureKind;
use async_trait::async_trait;
use uuid::Uuid;

pub use event_logs::{AuditEvent, AuditFilter, AuditStore, InvalidationLog, LoggedInvalidation};
pub use grants::{ApiKey, ApiKeyStore, Role, RoleStore};

/// Seconds since the Unix epoch. Stored as BIGINT on every backend so that
/// comparisons behave the same in PostgreSQL and SQLite.
pub type UnixTime = i64;

/// The current `UnixTime`, straight from the clock: `OffsetDateTime::now_utc`
/// computes a calendar date first, on every verification.
pub fn unix_now() -> UnixTime {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs() as UnixTime)
}

/// Why a store call did not give an answer. A missing row is not an error
/// (`Ok(None)`); only `Unavailable` counts against a dependency's health.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// Infrastructure failure: refused or reset connection, timeout, pool
    /// exhausted, server shutting down.
    /// `kind` is what public health may show; `reason` (the driver's
    /// text, which can name hosts and addresses) is for logs and admins.
    #[error("{dependency} unavailable: {reason}")]
    Unavailable {
        dependency: &'static str,
        kind: FailureKind,
        reason: String,
    },
    /// The dependency's circuit breaker is open: refused without trying.
    #[error("{dependency} circuit open")]
    CircuitOpen {
        dependency: &'static str,
        retry_after: std::time::Duration,
    },
    /// The primary is unavailable and only a read replica answers: reads
    /// work, this write cannot (503 SVC002).
    #[error("read-only: the primary database is unavailable")]
    ReadOnly,
    /// A uniqueness rule refused the write; names the field.
    #[error("{0} already taken")]
    Conflict(&'static str),
    /// A conditional write refused because the user's security version
    /// changed since it was read (a password change, deactivation or
    /// logout-all won the race).
    #[error("superseded by a security change of the user")]
    Superseded,
    /// The store answered something we cannot interpret (a bug or bad data).
    #[error("unexpected store answer: {0}")]
    Corrupt(String),
}

impl StoreError {
    /// True when the dependency could not answer (failed or refused by its
    /// breaker): the cases where a degraded path may take over.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            StoreError::Unavailable { .. } | StoreError::CircuitOpen { .. } | StoreError::ReadOnly
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserStatus {
    Active,
    Disabled,
}

impl UserStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            UserStatus::Active => "active",
            UserStatus::Disabled => "disabled",
        }
    }

    pub fn parse(text: &str) -> Result<Self, StoreError> {
        match text {
            "active" => Ok(UserStatus::Active),
            "disabled" => Ok(UserStatus::Disabled),
            other => Err(StoreError::Corrupt(format!("unknown user status {other}"))),
        }
    }
}

/// Marks `User::password_hash` as made from the raw password, before
/// NFKC normalisation. No PHC string starts with it, so code unaware of it
/// fails closed (a mismatch).
pub const PRE_NFKC_PREFIX: &str = "pre-nfkc:";

/// A stored password hash as (PHC string, made from the NFKC form?).
pub fn split_password_hash(stored: &str) -> (&str, bool) {
    match stored.strip_prefix(PRE_NFKC_PREFIX) {
        Some(phc) => (phc, false),
        None => (stored, true),
    }
}

#[derive(Debug, Clone)]
pub struct User {
    pub id: Uuid,
    pub email: String,
    pub username: String,
    /// PHC string (Argon2id) of the NFKC form of the password; never leaves
    /// the domain. A hash made before passwords were normalised (from the
    /// raw input) carries `PRE_NFKC_PREFIX` in front (stored as the column
    /// `password_normalized = false`).
    pub password_hash: String,
    pub status: UserStatus,
    pub roles: Vec<String>,
    /// Tokens of this user issued before this instant are refused.
    pub not_before: Option<UnixTime>,
    /// Bumped by each password change, deactivation and logout-all: a
    /// session is created only while the version its login read is current.
    pub security_version: i64,
    pub created_at: UnixTime,
    pub updated_at: UnixTime,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Session {
    pub id: Uuid,
    pub user_id: Uuid,
    /// Hex SHA-256 of the current refresh secret.
    pub refresh_hash: String,
    pub created_at: UnixTime,
    pub last_used_at: UnixTime,
    pub expires_at: UnixTime,
    pub user_agent: Option<String>,
    pub ip: Option<String>,
    pub revoked_at: Option<UnixTime>,
    /// The user's roles at the last login: used to issue a token only when
    /// the users table cannot be read (database down).
    #[serde(default, deserialize_with = "roles_from_json")]
    pub roles: Vec<String>,
    /// How many times the refresh hash has rotated, counted by every store
    /// that rotates it: of two copies that disagree (a cache that was
    /// unreachable while the ledger rotated, or the reverse), the higher
    /// generation is the newer one. Copies cached before it existed read
    /// as 0.
    #[serde(default)]
    pub generation: i64,
}

/// Redis's Lua cjson re-encodes an empty array as `{}` when a script
/// rewrites a session; read that back as no roles.
fn roles_from_json<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    use serde::Deserialize;
    match serde_json::Value::deserialize(d)? {
        serde_json::Value::Array(items) => items
            .into_iter()
            .map(|v| match v {
                serde_json::Value::String(s) => Ok(s),
                other => Err(serde::de::Error::custom(format!(
                    "role {other} is not a string"
                ))),
            })
            .collect(),
        serde_json::Value::Object(map) if map.is_empty() => Ok(Vec::new()),
        serde_json::Value::Null => Ok(Vec::new()),
        other => Err(serde::de::Error::custom(format!(
            "roles {other} is not a list"
        ))),
    }
}

impl Session {
    pub fn is_live(&self, now: UnixTime) -> bool {
        self.revoked_at.is_none() && self.expires_at > now
    }

    /// Live and holding the refresh hash `hash`.
    pub fn holds(&self, hash: &str, now: UnixTime) -> bool {
        self.refresh_hash == hash && self.is_live(now)
    }
}

/// A compare-and-swap of a session's refresh hash: `presented` (the hash
/// of the token the client sent) for `next` (the hash of a fresh secret).
#[derive(Debug, Clone, Copy)]
pub struct Swap<'a> {
    pub id: Uuid,
    pub presented: &'a str,
    pub next: &'a str,
    pub at: UnixTime,
}

/// What a compare-and-swap of a session's refresh hash found. Stores only
/// report it; what it means — above all whether a used hash is our own
/// retry or a stolen token — is decided once, in `auth::sessions`.
#[derive(Debug, Clone)]
pub enum Rotation {
    /// The presented hash was current; the session now holds the next one.
    Rotated(Session),
    /// The presented hash was current once and has been rotated away from:
    /// the session as it stands now, when this store still has it.
    AlreadyRotated(Option<Session>),
    /// Not this session's hash, now or ever (as far as this store knows).
    Mismatch,
    /// No such session, or revoked, or expired.
    Gone,
}

/// A signing key as persisted: the private half sealed by the master key.
#[derive(Debug, Clone)]
pub struct StoredKey {
    pub kid: String,
    pub algorithm: String,
    pub public_key: Vec<u8>,
    pub private_key_sealed: Vec<u8>,
    pub created_at: UnixTime,
    /// When it starts signing; until then it is a published standby.
    pub activates_at: UnixTime,
    /// Set by revoke-all: the key neither signs, verifies nor is published.
    pub revoked_at: Option<UnixTime>,
}

#[async_trait]
pub trait UserStore: Send + Sync {
    /// Fails with `Conflict("email" | "username")` when either is taken.
    async fn create(&self, user: &User) -> Result<(), StoreError>;
    async fn by_id(&self, id: Uuid) -> Result<Option<User>, StoreError>;
    /// `login` is an email or a username, compared case-insensitively.
    async fn by_login(&self, login: &str) -> Result<Option<User>, StoreError>;
    async fn update_profile(
        &self,
        id: Uuid,
        email: Option<&str>,
        username: Option<&str>,
        now: UnixTime,
    ) -> Result<(), StoreError>;
    async fn set_password(&self, id: Uuid, hash: &str, now: UnixTime) -> Result<(), StoreError>;
    /// Replaces a pre-normalisation hash (`old`, as in `User::password_hash`)
    /// with `new`, only if it is still the stored one: a password changed
    /// meanwhile is never overwritten. True when a row was replaced.
    async fn upgrade_password_hash(&self, old: &str, new: &str) -> Result<bool, StoreError>;
    /// Soft delete: status `disabled` and `not_before = now`. This, a new
    /// password and a new not-before time each bump `security_version`.
    async fn disable(&self, id: Uuid, now: UnixTime) -> Result<(), StoreError>;
    async fn set_not_before(&self, id: Uuid, at: UnixTime) -> Result<(), StoreError>;
    /// Active again; the not-before time set by `disable` stays, so tokens
    /// issued before the deactivation stay refused.
    async fn enable(&self, id: Uuid, now: UnixTime) -> Result<(), StoreError>;
    /// Users whose `not_before` is later than `since` (revocation warm-up).
    async fn not_before_since(&self, since: UnixTime) -> Result<Vec<(Uuid, UnixTime)>, StoreError>;
    /// Users whose roles changed after `since_ms`, with their roles now and
    /// when they changed (ms): the warm-up of the lost-role set.
    async fn roles_changed_since(
        &self,
        since_ms: i64,
    ) -> Result<Vec<(Uuid, Vec<String>, i64)>, StoreError>;
    async fn count(&self) -> Result<i64, StoreError>;
    /// Users whose email or username contains `query` (case-insensitive),
    /// at most `limit`, by username.
    async fn search(&self, query: &str, limit: i64) -> Result<Vec<User>, StoreError>;
}

#[async_trait]
pub trait SessionStore: Send + Sync {
    /// Creates the session only while its user is active and, when given,
    /// still at security version `user_version` (the one its login read);
    /// otherwise `StoreError::Superseded`. `None` is for restoring a
    /// session a faster store already holds; logins always give one.
    async fn create(&self, session: &Session, user_version: Option<i64>) -> Result<(), StoreError>;
    async fn get(&self, id: Uuid) -> Result<Option<Session>, StoreError>;
    /// Compare-and-swap of the refresh hash, atomic per session; safe to
    /// retry with the same `next` (a retry finds `AlreadyRotated` with the
    /// session holding `next`).
    async fn rotate(&self, swap: Swap<'_>) -> Result<Rotation, StoreError>;
    async fn revoke(&self, id: Uuid, now: UnixTime) -> Result<(), StoreError>;
    /// Revokes every live session of the user except `keep`; returns the ids.
    async fn revoke_user(
        &self,
        user_id: Uuid,
        keep: Option<Uuid>,
        now: UnixTime,
    ) -> Result<Vec<Uuid>, StoreError>;
    /// Live sessions of the user, newest first.
    async fn list_for_user(&self, user_id: Uuid, now: UnixTime)
    -> Result<Vec<Session>, StoreError>;
}

/// A fast copy of sessions in front of the ledger (Redis in production,
/// process memory embedded). It may lose entries at any time (a Redis
/// restart); the ledger refills it. Rotation is atomic inside the cache and
/// answers as `SessionStore::rotate` does.
#[async_trait]
pub trait SessionCache: Send + Sync {
    fn backend(&self) -> &'static str;
    async fn put(&self, session: &Session) -> Result<(), StoreError>;
    async fn get(&self, id: Uuid) -> Result<Option<Session>, StoreError>;
    /// `None` when the session is not cached: ask the ledger.
    async fn rotate(&self, swap: Swap<'_>) -> Result<Option<Rotation>, StoreError>;
    /// Marks a cached session revoked (kept, so a later refresh is `Gone`).
    async fn revoke(&self, id: Uuid, now: UnixTime) -> Result<(), StoreError>;
    /// Repairs a stale copy from a newer one (the ledger's): `session`
    /// replaces the cached copy when its generation is higher or nothing is
    /// cached, a revocation on either side is kept, and `used` joins the
    /// hashes known as used. Never moves a copy back to an older rotation.
    async fn catch_up(&self, session: &Session, used: &[&str]) -> Result<(), StoreError>;
}

/// What only the durable (SQL) session store can answer.
#[async_trait]
pub trait SessionLedger: SessionStore {
    /// Records a rotation already decided by a faster store (write-through):
    /// `swap.presented` used, `swap.next` current at `generation` (the
    /// deciding store's count).
    /// Forward only: a rotation not newer than the one recorded (a lower
    /// generation, or a `next` already used) only adds its used hash.
    async fn record_rotation(&self, swap: Swap<'_>, generation: i64) -> Result<(), StoreError>;
    /// Was `hash` ever a refresh hash of this session that has been used?
    async fn was_used(&self, id: Uuid, hash: &str) -> Result<bool, StoreError>;
    /// Sessions revoked after `since` that have not expired (warm-up of the
    /// in-memory revocation set).
    async fn revoked_since(&self, since: UnixTime) -> Result<Vec<Uuid>, StoreError>;
}

#[async_trait]
pub trait KeyStore: Send + Sync {
    async fn list(&self) -> Result<Vec<StoredKey>, StoreError>;
    async fn insert(&self, key: &StoredKey) -> Result<(), StoreError>;
    /// Emergency rotation, in one transaction: every key revoked, `key`
    /// inserted, every live session revoked. Returns the sessions revoked.
    async fn revoke_all(&self, key: &StoredKey, now: UnixTime) -> Result<u64, StoreError>;
    /// Master-key rotation, in one transaction: each `(kid, sealed)` replaces
    /// that key's sealed private half. Refused (nothing written) unless the
    /// pairs cover every stored key, so a key inserted meanwhile by a live
    /// node is never left under the old master key.
    /// Stores without transactions (test doubles) refuse.
    async fn reseal(&self, _sealed: &[(String, Vec<u8>)]) -> Result<(), StoreError> {
        Err(StoreError::Corrupt(
            "this key store cannot re-seal keys in a transaction".into(),
        ))
    }
}

/// A rate window is configuration (`[rate_limit]`).
pub use crate::config::Window;

/// A rate-limit answer, with what the `RateLimit-*` headers report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitDecision {
    pub allowed: bool,
    pub limit: u32,
    pub remaining: u32,
    /// When a slot frees up (or the lock ends).
    pub reset_after: std::time::Duration,
}

/// The windows DESIGN.md §5 puts on failed passwords for one account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccountWindows {
    /// Failures from one address before that (account, address) pair is
    /// locked: nobody locks anyone else out from their own address.
    pub pair: Window,
    /// Failures from all addresses together before the account is
    /// throttled for addresses that have not logged into it lately.
    pub ceiling: Window,
    /// The longest any lock or throttle lasts.
    pub lockout_max: std::time::Duration,
    /// How long a successful login exempts its address from the ceiling.
    pub known_for: std::time::Duration,
}

/// Who is trying which account: the account (a user id, or the lowercased
/// login tried when no such user exists) and the client address.
#[derive(Debug, Clone, Copy)]
pub struct LoginSubject<'a> {
    pub account: &'a str,
    pub address: &'a str,
}

/// Sliding-window counters with reservations, shared by all nodes (Redis)
/// or per node (memory). Every operation is atomic per key, and the login
/// operations atomic per account.
#[async_trait]
pub trait LimiterStore: Send + Sync {
    fn backend(&self) -> &'static str;
    /// Takes a slot for `member` if the window has one and `key` is not
    /// locked.
    async fn reserve(
        &self,
        key: &str,
        window: Window,
        member: &str,
        now_ms: i64,
    ) -> Result<LimitDecision, StoreError>;
    /// Reserves a password check for `member` on the pair (account,
    /// address) and, unless the address logged into the account within
    /// `known_for`, on the account-wide ceiling. Refused while the pair is
    /// locked or either window is full.
    async fn reserve_login(
        &self,
        subject: LoginSubject<'_>,
        windows: AccountWindows,
        member: &str,
        now_ms: i64,
    ) -> Result<LimitDecision, StoreError>;
    /// Gives a reserved password check back. `succeeded`: the password was
    /// right, so the pair's lock history is forgotten and the address is
    /// remembered as the account's for `known_for`.
    async fn refund_login(
        &self,
        subject: LoginSubject<'_>,
        windows: AccountWindows,
        member: &str,
        succeeded: bool,
        now_ms: i64,
    ) -> Result<(), StoreError>;
    /// Confirms a failed password check (it stays counted in both
    /// windows); when the pair's window is full, locks the pair for a
    /// growing interval (window × 2^(strikes-1), at most `lockout_max`) and
    /// returns the lock.
    async fn fail_login(
        &self,
        subject: LoginSubject<'_>,
        windows: AccountWindows,
        now_ms: i64,
    ) -> Result<Option<std::time::Duration>, StoreError>;
}

/// A dependency that health can ping.
#[async_trait]
pub trait Probe: Send + Sync {
    fn name(&self) -> &'static str;
    /// `"postgres"`, `"sqlite"`, `"redis"` or `"memory"`.
    fn backend(&self) -> &'static str;
    async fn ping(&self) -> Result<(), StoreError>;
    /// Where several hosts may be primary, the position (1 = first) of the
    /// one that is now; health shows it.
    fn primary_host(&self) -> Option<usize> {
        None
    }
    /// The only host that answers is a standby (a URL naming standbys
    /// only, or a proxy pointing at one after a failover): reads work,
    /// writes are refused. Read-only mode.
    fn standby_only(&self) -> bool {
        false
    }
}

/// The stores' errors: `Unavailable` is the failure; a conflict, a missing
/// row or a refused write is the store answering.
impl crate::resilience::failure::GuardedError for StoreError {
    fn failure(&self) -> Option<(FailureKind, &str)> {
        match self {
            StoreError::Unavailable { kind, reason, .. } => Some((*kind, reason)),
            _ => None,
        }
    }

    fn timed_out(dependency: &'static str, reason: String) -> Self {
        StoreError::Unavailable {
            dependency,
            kind: FailureKind::Timeout,
            reason,
        }
    }

    fn rejected(dependency: &'static str, retry_after: std::time::Duration) -> Self {
        StoreError::CircuitOpen {
            dependency,
            retry_after,
        }
    }
}
