//! One conformance suite for the session stores' compare-and-swap, run
//! against every implementation: the caches (`SessionCache`: memory,
//! Redis) and the ledger (`SessionLedger`: SQLite, PostgreSQL).
//!
//! The stores only report what the swap found; `auth::sessions` alone
//! decides what a used hash means (our own retry, or reuse). That is only
//! sound if every store reports the same facts, which is what this checks.
//! It lives here, not in `src`, because Redis and PostgreSQL come from
//! `support::procs` (private servers on free ports).

use crate::support::procs::{Postgres, Redis};
use async_trait::async_trait;
use holdfast::config::RedisTopology;
use holdfast::resilience::DependencyGuard;
use holdfast::resilience::breaker::BreakerSettings;
use holdfast::store::memory::MemorySessionCache;
use holdfast::store::redis::RedisSessionCache;
use holdfast::store::redis_link::RedisLink;
use holdfast::store::sql::SqlStore;
use holdfast::store::{
    Rotation, Session, SessionCache, SessionStore, Swap, UnixTime, User, UserStatus, UserStore,
};
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

/// A session store under test, seen through what the suite needs.
#[async_trait]
trait Subject: Send + Sync {
    /// What `rotate` answers for a session the store never had.
    const MISSING: Missing;
    async fn put(&self, session: &Session);
    async fn rotate(&self, swap: Swap<'_>) -> Option<Rotation>;
    async fn revoke(&self, id: Uuid, now: UnixTime);
}

/// A cache says "not cached" (ask the ledger); the ledger says gone.
#[derive(Debug, PartialEq)]
enum Missing {
    NotCached,
    Gone,
}

struct Cache(Arc<dyn SessionCache>);

#[async_trait]
impl Subject for Cache {
    const MISSING: Missing = Missing::NotCached;

    async fn put(&self, session: &Session) {
        self.0.put(session).await.expect("put");
    }

    async fn rotate(&self, swap: Swap<'_>) -> Option<Rotation> {
        self.0.rotate(swap).await.expect("rotate")
    }

    async fn revoke(&self, id: Uuid, now: UnixTime) {
        self.0.revoke(id, now).await.expect("revoke");
    }
}

/// The SQL store as ledger; its sessions need a user row, made once.
struct Ledger {
    store: Arc<SqlStore>,
    user: Uuid,
}

impl Ledger {
    async fn new(store: SqlStore) -> Self {
        store.migrate().await.expect("migrate");
        let user = Uuid::new_v4();
        UserStore::create(
            &store,
            &User {
                id: user,
                email: "conformance@example.com".into(),
                username: "conformance".into(),
                password_hash: "x".into(),
                status: UserStatus::Active,
                roles: vec![],
                not_before: None,
                security_version: 0,
                created_at: 1,
                updated_at: 1,
            },
        )
        .await
        .expect("user");
        Self {
            store: Arc::new(store),
            user,
        }
    }
}

#[async_trait]
impl Subject for Ledger {
    const MISSING: Missing = Missing::Gone;

    async fn put(&self, session: &Session) {
        let session = Session {
            user_id: self.user,
            ..session.clone()
        };
        SessionStore::create(&*self.store, &session, None)
            .await
            .expect("create");
    }

    async fn rotate(&self, swap: Swap<'_>) -> Option<Rotation> {
        Some(
            SessionStore::rotate(&*self.store, swap)
                .await
                .expect("rotate"),
        )
    }

    async fn revoke(&self, id: Uuid, now: UnixTime) {
        SessionStore::revoke(&*self.store, id, now)
            .await
            .expect("revoke");
    }
}

fn guard(name: &'static str) -> Arc<DependencyGuard> {
    Arc::new(DependencyGuard::new(
        name,
        Duration::from_secs(5),
        BreakerSettings::default(),
    ))
}

fn swap<'a>(id: Uuid, presented: &'a str, next: &'a str, at: UnixTime) -> Swap<'a> {
    Swap {
        id,
        presented,
        next,
        at,
    }
}

/// Now in real seconds: Redis expires a session at its `expires_at`.
fn now() -> UnixTime {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

/// Refresh hash number `n` of session `s`. Hashes are unique across
/// sessions, as real ones (SHA-256 of 256 random bits) are: the ledger
/// keys used hashes by the hash alone.
fn h(s: &Session, n: u8) -> String {
    format!("{}:h{n}", s.id)
}

/// A live session holding `h(_, 0)`, stored in `subject`.
async fn session(subject: &impl Subject, now: UnixTime) -> Session {
    let id = Uuid::new_v4();
    let session = Session {
        id,
        user_id: Uuid::new_v4(),
        refresh_hash: format!("{id}:h0"),
        created_at: now,
        last_used_at: now,
        expires_at: now + 3600,
        user_agent: None,
        ip: None,
        revoked_at: None,
        roles: vec!["reader".into()],
        generation: 0,
    };
    subject.put(&session).await;
    session
}

/// Every case, each on a session of its own.
async fn conforms<S: Subject>(subject: S) {
    let t = now();
    rotation_and_retry(&subject, t).await;
    unknown_hashes_mismatch(&subject, t).await;
    revoked_and_expired_are_gone(&subject, t).await;
    used_hashes_stay_used_after_revocation(&subject, t).await;
    let missing = subject.rotate(swap(Uuid::new_v4(), "h0", "h1", t)).await;
    match S::MISSING {
        Missing::NotCached => assert!(missing.is_none(), "{missing:?}"),
        Missing::Gone => assert!(matches!(missing, Some(Rotation::Gone)), "{missing:?}"),
    }
}

/// The current hash rotates once; the same call again (a retry whose
/// answer was lost) finds the hash used and the session holding `next`,
/// which the domain takes for its own; another `next` on the used hash
/// finds the session not holding it: reuse.
async fn rotation_and_retry(subject: &impl Subject, t: UnixTime) {
    let s = session(subject, t).await;
    match subject
        .rotate(swap(s.id, &h(&s, 0), &h(&s, 1), t + 1))
        .await
    {
        Some(Rotation::Rotated(now)) => {
            assert_eq!(now.refresh_hash, h(&s, 1));
            assert_eq!(now.last_used_at, t + 1);
            assert_eq!(now.roles, vec!["reader".to_string()]);
            assert_eq!(now.generation, 1, "every store counts rotations alike");
        }
        other => panic!("the current hash must rotate: {other:?}"),
    }
    match subject
        .rotate(swap(s.id, &h(&s, 0), &h(&s, 1), t + 2))
        .await
    {
        Some(Rotation::AlreadyRotated(Some(now))) => assert!(now.holds(&h(&s, 1), t + 2)),
        other => panic!("a retry finds the hash used and the session at next: {other:?}"),
    }
    match subject
        .rotate(swap(s.id, &h(&s, 0), &h(&s, 9), t + 3))
        .await
    {
        Some(Rotation::AlreadyRotated(Some(now))) => {
            assert!(!now.holds(&h(&s, 9), t + 3));
            assert_eq!(now.refresh_hash, h(&s, 1), "a used hash never swaps");
        }
        other => panic!("a used hash is reported as used: {other:?}"),
    }
    match subject
        .rotate(swap(s.id, &h(&s, 1), &h(&s, 2), t + 4))
        .await
    {
        Some(Rotation::Rotated(now)) => {
            assert_eq!(now.refresh_hash, h(&s, 2));
            assert_eq!(now.generation, 2, "a retry or a reuse counts no rotation");
        }
        other => panic!("the client's current hash still rotates: {other:?}"),
    }
}

async fn unknown_hashes_mismatch(subject: &impl Subject, t: UnixTime) {
    let s = session(subject, t).await;
    let answer = subject
        .rotate(swap(s.id, &format!("{}:never", s.id), &h(&s, 1), t + 1))
        .await;
    assert!(matches!(answer, Some(Rotation::Mismatch)), "{answer:?}");
    let answer = subject
        .rotate(swap(s.id, &h(&s, 0), &h(&s, 1), t + 2))
        .await;
    assert!(
        matches!(answer, Some(Rotation::Rotated(_))),
        "a mismatch changes nothing: {answer:?}"
    );
}

async fn revoked_and_expired_are_gone(subject: &impl Subject, t: UnixTime) {
    let revoked = session(subject, t).await;
    subject.revoke(revoked.id, t + 1).await;
    let answer = subject
        .rotate(swap(revoked.id, &h(&revoked, 0), &h(&revoked, 1), t + 2))
        .await;
    assert!(
        matches!(answer, Some(Rotation::Gone)),
        "revoked: {answer:?}"
    );
    let expired = session(subject, t).await;
    let after = expired.expires_at;
    let answer = subject
        .rotate(swap(expired.id, &h(&expired, 0), &h(&expired, 1), after))
        .await;
    assert!(
        matches!(answer, Some(Rotation::Gone)),
        "expired: {answer:?}"
    );
}

/// A used hash is reported as used even once the session is revoked, so
/// presenting it is still reuse (and audited as such), not a plain 401.
async fn used_hashes_stay_used_after_revocation(subject: &impl Subject, t: UnixTime) {
    let s = session(subject, t).await;
    assert!(matches!(
        subject
            .rotate(swap(s.id, &h(&s, 0), &h(&s, 1), t + 1))
            .await,
        Some(Rotation::Rotated(_))
    ));
    subject.revoke(s.id, t + 2).await;
    match subject
        .rotate(swap(s.id, &h(&s, 0), &h(&s, 9), t + 3))
        .await
    {
        Some(Rotation::AlreadyRotated(Some(now))) => {
            assert!(now.revoked_at.is_some());
            assert!(
                !now.holds(&h(&s, 1), t + 3),
                "a revoked session is no replay"
            );
        }
        other => panic!("a used hash stays used: {other:?}"),
    }
}

/// A cache that was unreachable while the ledger rotated catches up to
/// the ledger's copy: the newer generation wins, never the older, a
/// revocation on either side stays, and the hashes given join the used.
async fn caches_catch_up(cache: Arc<dyn SessionCache>) {
    let t = now();
    let subject = Cache(Arc::clone(&cache));
    let s = session(&subject, t).await;
    let newer = Session {
        refresh_hash: h(&s, 2),
        generation: 2,
        ..s.clone()
    };
    cache
        .catch_up(&newer, &[&h(&s, 1)])
        .await
        .expect("catch up");
    let older = Session {
        refresh_hash: h(&s, 1),
        generation: 1,
        ..s.clone()
    };
    cache.catch_up(&older, &[]).await.expect("older");
    match subject
        .rotate(swap(s.id, &h(&s, 1), &h(&s, 9), t + 1))
        .await
    {
        Some(Rotation::AlreadyRotated(Some(now))) => assert_eq!(now.refresh_hash, h(&s, 2)),
        other => panic!("a hash given as used is used: {other:?}"),
    }
    match subject
        .rotate(swap(s.id, &h(&s, 2), &h(&s, 3), t + 2))
        .await
    {
        Some(Rotation::Rotated(now)) => assert_eq!(now.generation, 3),
        other => panic!("the newer copy is the one held: {other:?}"),
    }
    let revoked = Session {
        revoked_at: Some(t),
        generation: 1,
        ..s.clone()
    };
    cache.catch_up(&revoked, &[]).await.expect("revoked");
    let answer = subject
        .rotate(swap(s.id, &h(&s, 3), &h(&s, 4), t + 3))
        .await;
    assert!(
        matches!(answer, Some(Rotation::Gone)),
        "a revocation wins, even from an older copy: {answer:?}"
    );
    let missing = Session {
        id: Uuid::new_v4(),
        ..newer
    };
    cache.catch_up(&missing, &[]).await.expect("missing");
    let cached = cache.get(missing.id).await.expect("get").expect("cached");
    assert_eq!(cached.generation, 2);
}

#[tokio::test]
async fn memory_cache_conforms() {
    conforms(Cache(Arc::new(MemorySessionCache::new(1000)))).await;
    caches_catch_up(Arc::new(MemorySessionCache::new(1000))).await;
}

#[tokio::test]
async fn redis_cache_conforms() {
    let redis = Redis::start();
    let topology = RedisTopology::parse(&redis.url()).expect("url");
    let conn = RedisLink::connect(&topology, Duration::from_secs(5))
        .await
        .expect("redis");
    conforms(Cache(Arc::new(RedisSessionCache::new(
        conn.clone(),
        guard("redis"),
    ))))
    .await;
    caches_catch_up(Arc::new(RedisSessionCache::new(conn, guard("redis")))).await;
}

#[tokio::test]
async fn sqlite_ledger_conforms() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("conformance.db");
    let store = SqlStore::open(path.to_str().expect("utf8"), guard("database"))
        .await
        .expect("open");
    conforms(Ledger::new(store).await).await;
}

#[tokio::test]
async fn postgres_ledger_conforms() {
    let pg = Postgres::start();
    let hosts = holdfast::config::pg_hosts(&pg.url()).expect("url");
    let store = SqlStore::connect(&hosts, &[], 4, guard("database")).expect("connect");
    conforms(Ledger::new(store).await).await;
}
