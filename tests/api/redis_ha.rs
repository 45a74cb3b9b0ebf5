//! The private Sentinel and Cluster deployments work as the HA tests need
//! them (issue 14 item 7): both start on free ports, a Sentinel failover
//! follows a master kill, and the cluster promotes a replica.

use crate::support::redis_ha::{RedisCluster, RedisSentinel, query};

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
