//! holdfast itself on a private Redis Cluster (issue 14 item 2): two nodes
//! log in, refresh, log out and lock out through one cluster — each Lua
//! script's keys on one slot, or the cluster would refuse it with
//! `CROSSSLOT` — hear each other's invalidations over the cluster's
//! pub/sub, and carry on once a killed master's replica is promoted.

use crate::support::ha_stack::{Caller, HaStack, eventually, redis_healthy};
use crate::support::redis_ha::RedisCluster;
use crate::support::{PASSWORD, TestApp, Tokens};
use reqwest::StatusCode;
use std::time::Duration;

/// The log poll is a minute, so an invalidation seen within 2 s came over
/// pub/sub. A Cluster, unlike Sentinel, announces no promotion holdfast
/// could probe on, so an open Redis breaker waits out `open_wait`:
/// shortened here, as an operator on a Cluster would.
const CONFIG: &str = "[cache]\ninvalidation_poll = \"60s\"\n[redis]\ntimeout = \"250ms\"\n\
    [breaker.redis]\nopen_wait = \"2s\"\n[rate_limit]\nlogin_per_ip = \"100000/min\"\n\
    register_per_ip = \"100000/min\"\nrefresh_per_ip = \"100000/min\"\n\
    login_failures_per_account = \"3/1h\"\nlockout_max = \"30s\"\nlogin_failures_account_ceiling = \"100/30s\"\n";

/// DESIGN.md §1: another node honours an invalidation within 2 s.
const PUBSUB_LIMIT: Duration = Duration::from_secs(2);

/// Promotion is awaited first; then slots refresh and the breaker closes.
const FOLLOW_BUDGET: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_share_a_cluster_and_follow_a_promotion() {
    let cluster = tokio::task::spawn_blocking(RedisCluster::start)
        .await
        .expect("cluster harness");
    let stack = HaStack::start(cluster.url(), CONFIG).await;
    let two = stack.another_node().await;
    let (one, two) = (&stack.app, &two);
    assert!(redis_healthy(one).await && redis_healthy(two).await);
    works_on_both(one, two, "before").await;

    let cluster = tokio::task::spawn_blocking(move || {
        let mut cluster = cluster;
        cluster.kill_master();
        cluster.wait_for_promotion();
        cluster
    })
    .await
    .expect("promotion");
    let (c1, c2) = (Caller::of(one), Caller::of(two));
    let took = eventually("logins back on both nodes", FOLLOW_BUDGET, || {
        both_log_in(&c1, &c2)
    })
    .await;
    eprintln!("both nodes log in again {took:?} after the promotion");
    works_on_both(one, two, "after").await;
    eventually("health shows redis recovered", FOLLOW_BUDGET, || {
        redis_healthy(one)
    })
    .await;
    drop(cluster);
}

/// Login, refresh and logout across the two nodes, invalidations each
/// way over pub/sub, and a lockout made on one node holding on the other.
async fn works_on_both(one: &TestApp, two: &TestApp, tag: &str) {
    let name = format!("ada{tag}");
    let first = one.user(&name).await;
    let reply = two.refresh(&first.refresh).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let rotated = Tokens::from(&reply.body);
    let (c1, c2) = (Caller::of(one), Caller::of(two));
    assert_eq!(c1.logout(&rotated.access).await, StatusCode::NO_CONTENT);
    eventually("node two hears the logout", PUBSUB_LIMIT, || {
        refused(&c2, &rotated.access)
    })
    .await;
    let second = two.login_ok(&name).await;
    assert_eq!(c1.verify(&second.access).await, StatusCode::NO_CONTENT);
    assert_eq!(c2.logout(&second.access).await, StatusCode::NO_CONTENT);
    eventually("node one hears the logout", PUBSUB_LIMIT, || {
        refused(&c1, &second.access)
    })
    .await;
    assert_eq!(
        one.refresh(&second.refresh).await.status,
        StatusCode::UNAUTHORIZED
    );

    let victim = format!("victim{tag}");
    one.register(&format!("{victim}@example.com"), &victim)
        .await;
    for _ in 0..3 {
        one.login(&victim, "not-the-password-at-all")
            .await
            .expect_error(401, "AUTH001");
    }
    two.login(&victim, PASSWORD)
        .await
        .expect_error(429, "RATE001");
}

async fn both_log_in(one: &Caller, two: &Caller) -> bool {
    one.login("adabefore").await == StatusCode::OK && two.login("adabefore").await == StatusCode::OK
}

async fn refused(node: &Caller, access: &str) -> bool {
    node.verify(access).await == StatusCode::UNAUTHORIZED
}
