//! The SQL session ledger on its own, where replays from several nodes can
//! arrive in any order.

use holdfast::resilience::DependencyGuard;
use holdfast::resilience::breaker::BreakerSettings;
use holdfast::store::sql::SqliteStore;
use holdfast::store::{Rotation, Session, SessionLedger, SessionStore, StoreError, Swap};
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

async fn ledger(dir: &tempfile::TempDir) -> SqliteStore {
    let guard = Arc::new(DependencyGuard::new(
        "database",
        Duration::from_secs(2),
        BreakerSettings::default(),
    ));
    let path = dir.path().join("ledger.db");
    let store = SqliteStore::open(path.to_str().expect("utf8"), guard)
        .await
        .expect("open");
    store.migrate().await.expect("migrate");
    store
}

fn swap<'a>(id: Uuid, presented: &'a str, next: &'a str, at: i64) -> Swap<'a> {
    Swap {
        id,
        presented,
        next,
        at,
    }
}

#[tokio::test]
async fn replayed_rotations_only_move_forward() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger = ledger(&dir).await;
    let user = Uuid::new_v4();
    sqlx_user(&dir, user).await;
    let id = Uuid::new_v4();
    let session = Session {
        id,
        user_id: user,
        refresh_hash: "h0".into(),
        created_at: 1,
        last_used_at: 1,
        expires_at: i64::MAX / 2,
        user_agent: None,
        ip: None,
        revoked_at: None,
        roles: vec![],
        generation: 0,
    };
    ledger.create(&session, Some(0)).await.expect("create");
    // Node B's later rotation (h1 -> h2) is replayed before node A's (h0 -> h1).
    ledger
        .record_rotation(swap(id, "h1", "h2", 3), 2)
        .await
        .expect("b");
    ledger
        .record_rotation(swap(id, "h0", "h1", 2), 1)
        .await
        .expect("a");
    let now = ledger.get(id).await.expect("get").expect("session");
    assert_eq!(
        now.refresh_hash, "h2",
        "the older replay must not move it back"
    );
    assert!(ledger.was_used(id, "h0").await.expect("used"));
    assert!(ledger.was_used(id, "h1").await.expect("used"));
    // The client's current token rotates; an old one is reuse.
    assert!(matches!(
        ledger
            .rotate(swap(id, "h2", "h3", 4))
            .await
            .expect("rotate"),
        Rotation::Rotated(_)
    ));
    assert!(matches!(
        ledger.rotate(swap(id, "h1", "h9", 5)).await.expect("rotate"),
        Rotation::AlreadyRotated(Some(s)) if s.refresh_hash == "h3" && !s.holds("h9", 5)
    ));
    // A record not newer than the ledger's copy (a stale cache's fork at
    // the generation the ledger already reached) does not move it either.
    ledger
        .record_rotation(swap(id, "h2", "hz", 6), 3)
        .await
        .expect("stale");
    let now = ledger.get(id).await.expect("get").expect("session");
    assert_eq!((now.refresh_hash.as_str(), now.generation), ("h3", 3));
}

/// A login that read the user before a password change, deactivation or
/// logout-all (each bumps the security version) cannot create its session.
#[tokio::test]
async fn sessions_are_created_only_at_the_version_their_login_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger = ledger(&dir).await;
    let user = Uuid::new_v4();
    sqlx_user(&dir, user).await;
    let session = |version_note: &str| Session {
        id: Uuid::new_v4(),
        user_id: user,
        refresh_hash: format!("h-{version_note}"),
        created_at: 1,
        last_used_at: 1,
        expires_at: i64::MAX / 2,
        user_agent: None,
        ip: None,
        revoked_at: None,
        roles: vec![],
        generation: 0,
    };
    assert!(matches!(
        ledger.create(&session("stale"), Some(1)).await,
        Err(StoreError::Superseded)
    ));
    ledger
        .create(&session("current"), Some(0))
        .await
        .expect("current version");
    // A restore (no version) still needs an active user.
    ledger
        .create(&session("restore"), None)
        .await
        .expect("restore");
    sql(&dir, "UPDATE users SET status = 'disabled'").await;
    assert!(matches!(
        ledger.create(&session("disabled"), Some(0)).await,
        Err(StoreError::Superseded)
    ));
    assert!(matches!(
        ledger.create(&session("disabled-restore"), None).await,
        Err(StoreError::Superseded)
    ));
}

async fn sql(dir: &tempfile::TempDir, statement: &'static str) {
    use sqlx::Connection;
    let url = format!("sqlite://{}", dir.path().join("ledger.db").display());
    let mut conn = sqlx::SqliteConnection::connect(&url)
        .await
        .expect("connect");
    sqlx::query(statement)
        .execute(&mut conn)
        .await
        .expect("statement");
}

/// The ledger's sessions reference users; insert one directly.
async fn sqlx_user(dir: &tempfile::TempDir, id: Uuid) {
    use sqlx::Connection;
    let url = format!("sqlite://{}", dir.path().join("ledger.db").display());
    let mut conn = sqlx::SqliteConnection::connect(&url)
        .await
        .expect("connect");
    sqlx::query(
        "INSERT INTO users (id, email, username, password_hash, status, created_at, updated_at) \
         VALUES ($1, 'l@example.com', 'ledger', 'x', 'active', 1, 1)",
    )
    .bind(id)
    .execute(&mut conn)
    .await
    .expect("user");
}
