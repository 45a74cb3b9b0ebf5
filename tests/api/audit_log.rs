//! Issue 15 item 7: the audit log read as an operator investigating an
//! incident reads it — by kind, by user, by time, a page at a time with a
//! cursor — and kept only as long as `[audit] retention` says, on both
//! SQL backends. Bad filters are 422 VAL001 naming each field, never a
//! query that silently ignores them.

use crate::support;

use reqwest::StatusCode;
use serde_json::Value;
use std::collections::HashSet;
use std::time::Duration;
use support::{Backend, Stack, TestApp};

/// Two users with failed and successful logins: events of three kinds
/// (`login_failed`, `login_succeeded` and the admin's), two users.
async fn incident(app: &TestApp) -> (String, String, String) {
    let admin = app.admin_token().await;
    let eve = app.user("eve").await;
    app.user("fay").await;
    for who in ["eve", "eve", "fay"] {
        app.login(who, "wrong password")
            .await
            .expect_error(401, "AUTH001");
    }
    let eve_id = app.get("/api/v1/users/me", Some(&eve.access)).await.body["id"]
        .as_str()
        .expect("id")
        .to_string();
    let fay_id = {
        let fay = app.login_ok("fay").await;
        app.get("/api/v1/users/me", Some(&fay.access)).await.body["id"]
            .as_str()
            .expect("id")
            .to_string()
    };
    (admin, eve_id, fay_id)
}

async fn page(app: &TestApp, admin: &str, query: &str) -> Value {
    let reply = app
        .get(&format!("/api/v1/admin/audit?{query}"), Some(admin))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{query}: {}", reply.body);
    reply.body
}

fn items(page: &Value) -> &Vec<Value> {
    page["items"].as_array().expect("items")
}

async fn filters_and_pages(backend: Backend) {
    let stack = Stack::start_with(backend, "").await;
    let app = &stack.app;
    let (admin, eve, fay) = incident(app).await;

    let failed = page(app, &admin, "kind=login_failed").await;
    assert_eq!(items(&failed).len(), 3, "{failed}");
    assert!(items(&failed).iter().all(|e| e["kind"] == "login_failed"));

    let of_eve = page(app, &admin, &format!("user_id={eve}&kind=login_failed")).await;
    assert_eq!(items(&of_eve).len(), 2, "{of_eve}");
    assert!(items(&of_eve).iter().all(|e| e["user_id"] == eve.as_str()));
    let of_fay = page(app, &admin, &format!("user_id={fay}")).await;
    assert!(items(&of_fay).iter().all(|e| e["user_id"] == fay.as_str()));
    assert!(
        items(&of_fay)
            .iter()
            .any(|e| e["kind"] == "login_succeeded")
    );

    let now = holdfast::auth::now();
    let future = page(app, &admin, &format!("since={}", now + 3600)).await;
    assert!(items(&future).is_empty(), "{future}");
    let before = page(
        app,
        &admin,
        &format!("since={}&until={}", now - 3600, now - 1800),
    )
    .await;
    assert!(items(&before).is_empty(), "{before}");

    // Every event once, in order, two at a time.
    let all = page(app, &admin, "limit=1000").await;
    let mut seen = Vec::new();
    let mut query = "limit=2".to_string();
    loop {
        let body = page(app, &admin, &query).await;
        seen.extend(items(&body).iter().map(|e| e["id"].as_i64().expect("id")));
        match body["next_cursor"].as_str() {
            Some(cursor) => query = format!("limit=2&cursor={cursor}"),
            None => break,
        }
        assert!(seen.len() < 1000, "the cursor never ends");
    }
    let ids: Vec<i64> = items(&all)
        .iter()
        .map(|e| e["id"].as_i64().expect("id"))
        .collect();
    assert_eq!(seen, ids, "paging gives each event once, in order");
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), seen.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_and_cursor_on_sqlite() {
    filters_and_pages(Backend::Embedded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_and_cursor_on_postgres() {
    filters_and_pages(Backend::PostgresRedis).await;
}

/// From the attacker's side: filters are data, never SQL, and a wrong one
/// is an error naming it, not a silently wider answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_filters_are_refused_field_by_field() {
    let stack = Stack::start_with(Backend::Embedded, "").await;
    let app = &stack.app;
    let admin = app.admin_token().await;
    let reply = app
        .get(
            "/api/v1/admin/audit?kind=x'%20OR%201=1--&user_id=nope&limit=0&until=soon",
            Some(&admin),
        )
        .await;
    assert_named(&reply, &["kind", "user_id", "limit", "until"]);
    // A cursor not from this endpoint, and a cursor sent with filters that
    // would compete with the ones it carries.
    for query in [
        "cursor=-3",
        "cursor=eyJhZnRlciI6MX0&kind=login_failed",
        "kind=",
    ] {
        let reply = app
            .get(&format!("/api/v1/admin/audit?{query}"), Some(&admin))
            .await;
        let field = if query == "kind=" { "kind" } else { "cursor" };
        assert_named(&reply, &[field]);
    }
    // A misspelt filter is an error, not an unfiltered answer.
    app.get("/api/v1/admin/audit?user=nobody", Some(&admin))
        .await
        .expect_error(400, "REQ001");
    let user = app.user("gus").await;
    app.get("/api/v1/admin/audit?kind=login_failed", Some(&user.access))
        .await
        .expect_error(403, "AUTH005");
}

fn assert_named(reply: &support::Reply, expected: &[&str]) {
    reply.expect_error(422, "VAL001");
    let fields: HashSet<&str> = reply.body["error"]["details"]["fields"]
        .as_array()
        .map(|f| f.iter().filter_map(|f| f["field"].as_str()).collect())
        .unwrap_or_default();
    for field in expected {
        assert!(fields.contains(field), "{field} not named: {}", reply.body);
    }
}

/// `[audit] retention`: the purge deletes what is older, keeps the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_purges_only_older_events() {
    let stack =
        Stack::start_with(Backend::PostgresRedis, "[audit]\nretention = \"30days\"\n").await;
    let app = &stack.app;
    let admin = app.admin_token().await;
    app.login("root", "wrong password")
        .await
        .expect_error(401, "AUTH001");
    let pg = stack.pg.as_ref().expect("pg");
    old_events(&pg.url(), 3).await;
    let all = page(app, &admin, "since=0&limit=1000").await;
    assert!(items(&all).iter().any(|e| e["kind"] == "ancient"), "{all}");

    let purged = app
        .state
        .audit()
        .purge(Duration::from_secs(30 * 86_400))
        .await
        .expect("purge");
    assert_eq!(purged, 3);
    let left = page(app, &admin, "since=0&limit=1000").await;
    assert!(
        !items(&left).iter().any(|e| e["kind"] == "ancient"),
        "{left}"
    );
    assert!(
        items(&left).iter().any(|e| e["kind"] == "login_failed"),
        "recent events stay: {left}"
    );
}

/// `count` events from 40 days ago, written as an old node would have.
async fn old_events(url: &str, count: usize) {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(url).await.expect("connect");
    let at = holdfast::auth::now() - 40 * 86_400;
    for _ in 0..count {
        sqlx::query(
            "INSERT INTO audit_log (at, kind, user_id, detail) VALUES ($1, 'ancient', NULL, '{}')",
        )
        .bind(at)
        .execute(&mut conn)
        .await
        .expect("insert");
    }
}

/// A batch written twice (it timed out but committed, then was moved again
/// out of the Redis spill stream) is stored once: events carry their id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_written_twice_is_stored_once() {
    use holdfast::resilience::DependencyGuard;
    use holdfast::resilience::breaker::BreakerSettings;
    use holdfast::store::sql::SqliteStore;
    use holdfast::store::{AuditEvent, AuditFilter, AuditStore};
    use std::sync::Arc;

    let dir = tempfile::tempdir().expect("tempdir");
    let guard = Arc::new(DependencyGuard::new(
        "database",
        Duration::from_secs(2),
        BreakerSettings::default(),
    ));
    let path = dir.path().join("audit.db");
    let store = SqliteStore::open(path.to_str().expect("utf8"), guard)
        .await
        .expect("open");
    store.migrate().await.expect("migrate");
    let event = |event_id| AuditEvent {
        id: 0,
        event_id,
        at: holdfast::auth::now(),
        kind: "login_failed".into(),
        user_id: None,
        detail: serde_json::json!({}),
    };
    let once = event(Some(uuid::Uuid::new_v4()));
    store
        .append_audit(std::slice::from_ref(&once))
        .await
        .expect("first");
    store
        .append_audit(&[once.clone(), event(Some(uuid::Uuid::new_v4()))])
        .await
        .expect("again, with a new one");
    // Rows from before event ids existed have none, and stay apart.
    store
        .append_audit(&[event(None), event(None)])
        .await
        .expect("old rows");
    let filter = AuditFilter {
        since: 0,
        until: None,
        kind: None,
        user_id: None,
        after: None,
        limit: 100,
    };
    let stored = store.audit_query(&filter).await.expect("query");
    assert_eq!(stored.len(), 4, "{stored:?}");
    let repeated = stored
        .iter()
        .filter(|e| e.event_id == once.event_id)
        .count();
    assert_eq!(repeated, 1);
}
