//! The private Sentinel and Cluster deployments work as the HA tests need
//! them (issue 14 item 7): both start on free ports, a Sentinel failover
//! follows a master kill, and the cluster promotes a replica — and
//! holdfast's `RedisLink` follows both. Holdfast itself on each, under
//! the failures DESIGN.md §4 names: `on_sentinel`, `on_cluster`.

mod on_cluster;
mod on_sentinel;

use crate::support::procs::Redis;
use crate::support::redis_ha::{DOWN_AFTER, RedisCluster, RedisSentinel, query};
use holdfast::config::RedisTopology;
use holdfast::resilience::DependencyGuard;
use holdfast::resilience::breaker::BreakerSettings;
use holdfast::store::redis_limiter::RedisLimiter;
use holdfast::store::redis_link::RedisLink;
use holdfast::store::{LimiterStore, Window};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_fails_over_after_a_master_kill() {
    let (old, new) = tokio::task::spawn_blocking(|| {
        let mut ha = RedisSentinel::start();
        let old = ha.kill_master();
        let new = ha.wait_for_failover(old);
        assert_eq!(
            query::<String>(new, &["SET", "after-failover", "1"]).as_deref(),
            Some("OK"),
            "the promoted replica takes writes"
        );
        (old, new)
    })
    .await
    .expect("sentinel harness");
    assert_ne!(old, new);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_promotes_a_replica_after_a_master_kill() {
    tokio::task::spawn_blocking(|| {
        let mut cluster = RedisCluster::start();
        assert_eq!(cluster.masters().len(), 3);
        let killed = cluster.kill_master();
        cluster.wait_for_promotion();
        assert!(!cluster.masters().contains(&killed));
    })
    .await
    .expect("cluster harness");
}

/// `RedisLink` (src/store/redis_link.rs) against the private Sentinel: after
/// a master kill its next commands reach the promoted replica within the
/// sentinels' detection time plus a few seconds, without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_follows_a_sentinel_failover() {
    let ha = tokio::task::spawn_blocking(RedisSentinel::start)
        .await
        .expect("sentinel harness");
    let mut link = connect(&ha.url()).await;
    set(&mut link, "before").await.expect("the master answers");
    let first = ha.master_port().expect("a master");
    assert_eq!(link.sentinel_master().map(|m| m.port), Some(first));

    let (ha, killed, at) = tokio::task::spawn_blocking(move || {
        let mut ha = ha;
        let killed = ha.kill_master();
        (ha, killed, Instant::now())
    })
    .await
    .expect("kill");
    let budget = DOWN_AFTER + FOLLOW_SLACK;
    while set(&mut link, "after").await.is_err() {
        assert!(
            at.elapsed() < budget,
            "no write reached a master in {budget:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let now = link.sentinel_master().map(|m| m.port);
    assert_ne!(now, Some(killed), "writes went to the promoted replica");
    assert_eq!(now, ha.master_port());
    eprintln!(
        "link followed the failover {:?} after the kill",
        at.elapsed()
    );
}

/// All sentinels gone, the master alive: the link keeps using it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_keeps_the_master_when_every_sentinel_is_gone() {
    let ha = tokio::task::spawn_blocking(RedisSentinel::start)
        .await
        .expect("sentinel harness");
    let mut link = connect(&ha.url()).await;
    set(&mut link, "first").await.expect("the master answers");
    let master = link.sentinel_master();
    let ha = tokio::task::spawn_blocking(move || {
        let mut ha = ha;
        ha.kill_sentinels();
        ha
    })
    .await
    .expect("kill sentinels");
    // Cut the link's connection: the error sends it to the sentinels, none
    // answers, and it must stay on the master it has.
    let port = master.as_ref().expect("a master").port;
    let killed = tokio::task::spawn_blocking(move || {
        query::<i64>(port, &["CLIENT", "KILL", "TYPE", "normal"])
    });
    assert!(killed.await.expect("client kill").unwrap_or(0) >= 1);
    let _ = set(&mut link, "cut").await;
    for i in 0..20 {
        set(&mut link, &i.to_string())
            .await
            .expect("the master still answers");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(link.sentinel_master(), master);
    drop(ha);
}

/// With no traffic during the failover, the `+switch-master` event alone
/// moves the link: the first command after it already reaches the new
/// master.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_hears_switch_master_without_traffic() {
    let ha = tokio::task::spawn_blocking(RedisSentinel::start)
        .await
        .expect("sentinel harness");
    let link = connect(&ha.url()).await;
    let (ha, new) = tokio::task::spawn_blocking(move || {
        let mut ha = ha;
        let old = ha.kill_master();
        let new = ha.wait_for_failover(old);
        (ha, new)
    })
    .await
    .expect("failover");
    let heard = Instant::now();
    while link.sentinel_master().map(|m| m.port) != Some(new) {
        assert!(
            heard.elapsed() < Duration::from_secs(3),
            "the link did not hear +switch-master"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(ha);
}

/// `RedisLink` on the private Cluster: keys on every master, one master
/// killed, every key writable again once its replica is promoted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_writes_through_a_cluster_promotion() {
    let cluster = tokio::task::spawn_blocking(RedisCluster::start)
        .await
        .expect("cluster harness");
    let mut link = connect(&cluster.url()).await;
    let keys: Vec<String> = (0..30).map(|i| format!("key-{i}")).collect();
    for key in &keys {
        set_key(&mut link, key).await.expect("the cluster answers");
    }
    let (cluster, at) = tokio::task::spawn_blocking(move || {
        let mut cluster = cluster;
        cluster.kill_master();
        (cluster, Instant::now())
    })
    .await
    .expect("kill");
    let budget = Duration::from_secs(20);
    for key in &keys {
        while set_key(&mut link, key).await.is_err() {
            assert!(at.elapsed() < budget, "{key} not writable in {budget:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    drop(cluster);
}

/// A master new after a failover has none of our scripts: `EVALSHA` is
/// answered `NOSCRIPT`, the script is loaded again and the call goes
/// through — here on one server whose script cache is flushed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripts_load_again_where_the_server_lost_them() {
    let redis = tokio::task::spawn_blocking(Redis::start)
        .await
        .expect("redis");
    let mut link = connect(&redis.url()).await;
    let guard = DependencyGuard::new("redis", Duration::from_secs(2), BreakerSettings::default());
    let limiter = RedisLimiter::new(link.clone(), Arc::new(guard));
    let window = Window {
        limit: 2,
        period: Duration::from_secs(60),
    };
    let mut allowed = Vec::new();
    for member in ["one", "two", "three"] {
        let _: () = redis::cmd("SCRIPT")
            .arg("FLUSH")
            .query_async(&mut link)
            .await
            .expect("flush scripts");
        let decision = limiter
            .reserve("flushed", window, member, 1_000)
            .await
            .expect("the script runs after NOSCRIPT");
        allowed.push(decision.allowed);
    }
    assert_eq!(allowed, [true, true, false], "the limit still holds");
}

/// Election, promotion and the link's own re-resolution after detection.
const FOLLOW_SLACK: Duration = Duration::from_secs(10);

async fn connect(url: &str) -> RedisLink {
    let topology = RedisTopology::parse(url).expect("harness URL parses");
    RedisLink::connect(&topology, Duration::from_millis(250))
        .await
        .expect("link")
}

async fn set(link: &mut RedisLink, value: &str) -> redis::RedisResult<()> {
    redis::cmd("SET")
        .arg("k")
        .arg(value)
        .query_async(link)
        .await
}

async fn set_key(link: &mut RedisLink, key: &str) -> redis::RedisResult<()> {
    redis::cmd("SET").arg(key).arg("v").query_async(link).await
}
