//! The chaos drill (issue 14, item 5): three `holdfast serve` processes on
//! Sentinel-managed Redis (master, replica, three sentinels) and PostgreSQL
//! with a streaming standby (both hosts in `[database] url`), behind a
//! client that spreads requests over them and tries another node on a
//! connection error, under a steady mix of verify, login, refresh and
//! logout. Events: a node SIGKILLed and restarted, PostgreSQL paused, the
//! Redis master killed, the PostgreSQL primary killed and its standby
//! promoted. It prints a
//! table per event (requests, errors by status, longest gap, time to
//! recover) and checks what must never happen: an acknowledged write lost
//! (a refresh token answered 200 that no longer refreshes; a logout not
//! honoured by every node within 2 s), a wrong verification, a verification
//! that fails at all (it needs no store), and error windows past their
//! bounds. `benches/chaos.sh` runs the long version (CHAOS_* variables).

use crate::support;

use reqwest::StatusCode;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use support::chaos::{Node, Outcome, Spread};
use support::procs::Postgres;
use support::redis_ha::RedisSentinel;
use tokio::sync::watch;

mod drill;
mod report;

use drill::{Drill, Op};
use report::{Event, print_table};

/// Seconds from the environment, or the short version's default.
fn seconds(name: &str, default: u64) -> Duration {
    Duration::from_secs(
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default),
    )
}

const NODE_CONFIG: &str = "[breaker]\nminimum_calls = 3\nopen_wait = \"1s\"\nhalf_open_permits = 1\n\
[rate_limit]\nlogin_per_ip = \"100000/min\"\nregister_per_ip = \"100000/min\"\nrefresh_per_ip = \"100000/min\"\n\
[cache]\ninvalidation_poll = \"1s\"\n";

/// How long a logout may take to reach every node (DESIGN §4).
const LOGOUT_REACH: Duration = Duration::from_secs(2);

struct Cluster {
    primary: Postgres,
    standby: Postgres,
    redis: RedisSentinel,
    nodes: Vec<Node>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    async fn start(count: usize) -> Self {
        let (primary, standby, redis) = tokio::task::spawn_blocking(|| {
            let primary = Postgres::start();
            let standby = Postgres::start_replica(&primary);
            (primary, standby, RedisSentinel::start())
        })
        .await
        .expect("servers");
        let dir = tempfile::tempdir().expect("tempdir");
        // libpq's multi-host form: holdfast writes to whichever host is
        // not in recovery.
        let db = format!(
            "postgres://holdfast@127.0.0.1:{},127.0.0.1:{}/postgres",
            primary.port, standby.port
        );
        let cache = redis.url();
        // The first node migrates and makes the signing key; the others
        // start once it is ready and load them.
        let mut nodes = vec![Node::start(dir.path(), 0, &db, &cache, NODE_CONFIG)];
        nodes[0].ready(Duration::from_secs(30)).await;
        for i in 1..count {
            nodes.push(Node::start(dir.path(), i, &db, &cache, NODE_CONFIG));
        }
        for node in &mut nodes {
            node.ready(Duration::from_secs(30)).await;
        }
        Self {
            primary,
            standby,
            redis,
            nodes,
            _dir: dir,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_keep_every_acknowledged_write_through_kills_and_pauses() {
    let mut cluster = Cluster::start(3).await;
    let spread = Arc::new(Spread::new(cluster.nodes.iter().map(Node::url).collect()));
    let drill = Drill::new(Arc::clone(&spread));
    let users = drill
        .register_users(seconds("CHAOS_USERS", 12).as_secs() as usize)
        .await;
    let (stop, stopped) = watch::channel(false);
    let workers = drill.run(
        users,
        seconds("CHAOS_WORKERS", 4).as_secs() as usize,
        stopped,
    );
    let settle = seconds("CHAOS_SETTLE_SECS", 2);
    tokio::time::sleep(settle).await;

    let mut events = Vec::new();
    events.push(kill_a_node(&drill, &mut cluster, settle).await);
    events.push(pause_postgres(&drill, &cluster, seconds("CHAOS_PAUSE_SECS", 4), settle).await);
    events.push(kill_the_redis_master(&drill, &mut cluster, settle).await);
    events.push(promote_the_standby(&drill, &mut cluster, settle).await);

    stop.send(true).expect("stop workers");
    for worker in workers {
        worker.await.expect("worker");
    }
    print_table(&drill.records(), &events);
    drill.final_checks(cluster.nodes.len()).await;
    check_bounds(&drill, &events);
}

/// SIGKILL a node and start it again. The client's balancer takes it out
/// while it is not ready, as a health-checking load balancer would.
async fn kill_a_node(drill: &Drill, cluster: &mut Cluster, settle: Duration) -> Event {
    let begun = drill.elapsed();
    cluster.nodes[1].kill();
    drill.spread().set_enabled(1, false);
    cluster.nodes[1].restart();
    cluster.nodes[1].ready(Duration::from_secs(30)).await;
    drill.spread().set_enabled(1, true);
    let ended = drill.elapsed();
    tokio::time::sleep(settle).await;
    Event::new(
        "holdfast node SIGKILLed, restarted",
        begun,
        ended,
        drill.elapsed(),
    )
}

async fn pause_postgres(
    drill: &Drill,
    cluster: &Cluster,
    pause: Duration,
    settle: Duration,
) -> Event {
    let begun = drill.elapsed();
    cluster.primary.pause();
    tokio::time::sleep(pause).await;
    cluster.primary.resume();
    let ended = drill.elapsed();
    tokio::time::sleep(settle * 2).await;
    Event::new(
        &format!("PostgreSQL paused {} s", pause.as_secs()),
        begun,
        ended,
        drill.elapsed(),
    )
}

/// The fault ends when the sentinels have promoted the replica.
async fn kill_the_redis_master(drill: &Drill, cluster: &mut Cluster, settle: Duration) -> Event {
    let begun = drill.elapsed();
    let redis = &mut cluster.redis;
    tokio::task::block_in_place(|| {
        let old = redis.kill_master();
        redis.wait_for_failover(old);
    });
    let ended = drill.elapsed();
    tokio::time::sleep(settle * 2).await;
    Event::new(
        "Redis master SIGKILLed (Sentinel failover)",
        begun,
        ended,
        drill.elapsed(),
    )
}

/// The primary is killed; until the standby is promoted holdfast is in
/// read-only mode (logins still work, from the standby). The fault ends
/// when `pg_ctl promote` returns.
async fn promote_the_standby(drill: &Drill, cluster: &mut Cluster, settle: Duration) -> Event {
    let begun = drill.elapsed();
    cluster.primary.kill();
    tokio::time::sleep(settle).await;
    let standby = &cluster.standby;
    tokio::task::block_in_place(|| standby.promote());
    let ended = drill.elapsed();
    tokio::time::sleep(settle * 2).await;
    Event::new(
        "PostgreSQL primary SIGKILLed, standby promoted",
        begun,
        ended,
        drill.elapsed(),
    )
}

/// Verification needs no store: it never fails. Logins may fail while a
/// store they need is down, and must work again within the breaker's
/// open wait (1 s) and a margin for a loaded 2-core machine.
fn check_bounds(drill: &Drill, events: &[Event]) {
    let records = drill.records();
    let failed_verifications = records
        .iter()
        .filter(|r| r.op == Op::Verify && !r.ok())
        .count();
    assert_eq!(failed_verifications, 0, "verifications that failed");
    for event in events {
        let recovered = event.recovery(&records, Op::Login);
        let bound = Duration::from_secs(5);
        assert!(
            recovered.is_some_and(|r| r <= bound),
            "{}: logins not back within {bound:?} of the event's end ({recovered:?})",
            event.name
        );
    }
    let violations = drill.violations();
    assert!(violations.is_empty(), "{violations:#?}");
}

/// Everything the drill needs from a reply.
fn answered(outcome: &Outcome) -> Option<(StatusCode, &Value)> {
    match outcome {
        Outcome::Answered(status, body) => Some((*status, body)),
        Outcome::Unreachable => None,
    }
}

fn login_body(user: &str) -> Value {
    json!({"login": user, "password": support::PASSWORD})
}

fn errors_by_status(records: &[drill::Record]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for r in records.iter().filter(|r| !r.ok()) {
        let key = r.status.map_or("no answer".to_string(), |s| s.to_string());
        *counts.entry(key).or_insert(0) += 1;
    }
    counts
}
