//! What each held thing costs in memory, measured on the real structures:
//!
//! * the revocation set (every node holds it): resident memory per revoked
//!   session at 10k, 100k and 1M entries, from this process's RSS;
//! * a session in Redis: bytes of `used_memory` per session after the
//!   cache's own `put` and one rotation (the `:used` key it leaves), with
//!   `HOLDFAST_BENCH_REDIS_URL` naming a private, empty Redis
//!   (`benches/memory.sh` starts one).
//!
//! `cargo bench --bench memory`; prints a Markdown table.

use holdfast::auth::revocation::RevocationSet;
use holdfast::config::{BreakerSettings, RedisTopology};
use holdfast::resilience::DependencyGuard;
use holdfast::store::redis::RedisSessionCache;
use holdfast::store::redis_link::RedisLink;
use holdfast::store::{Session, SessionCache, Swap};
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

fn main() {
    // `cargo test --all-targets` runs benches once without `--bench`: a
    // million insertions in a debug build measure nothing.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    println!("| what | entries | bytes per entry |");
    println!("|---|---|---|");
    revocations();
    if let Ok(url) = std::env::var("HOLDFAST_BENCH_REDIS_URL") {
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        runtime.block_on(redis_sessions(&url, 100_000));
    } else {
        eprintln!("HOLDFAST_BENCH_REDIS_URL unset: Redis not measured (benches/memory.sh sets it)");
    }
}

/// Resident set size of this process, in bytes.
fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("statm");
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .expect("rss pages");
    pages * 4096
}

fn revocations() {
    let set = RevocationSet::new(15 * 60 + 30);
    let now = holdfast::auth::now();
    let before = rss();
    let mut held = 0u64;
    for target in [10_000u64, 100_000, 1_000_000] {
        while held < target {
            set.revoke_session(Uuid::new_v4(), now);
            held += 1;
        }
        let grown = rss().saturating_sub(before);
        println!("| revocation set (RSS) | {target} | {} |", grown / target);
    }
}

async fn redis_sessions(url: &str, count: usize) {
    let topology = RedisTopology::parse(url).expect("redis url");
    let link = RedisLink::connect(&topology, Duration::from_secs(2))
        .await
        .expect("connect");
    let guard = Arc::new(DependencyGuard::new(
        "redis",
        Duration::from_secs(2),
        BreakerSettings::default(),
    ));
    let cache = Arc::new(RedisSessionCache::new(link.clone(), guard));
    let before = used_memory(&link).await;
    let now = holdfast::auth::now();
    let tasks: Vec<_> = (0..8)
        .map(|worker| {
            let cache = Arc::clone(&cache);
            tokio::spawn(async move {
                for _ in (worker..count).step_by(8) {
                    let session = session(now);
                    cache.put(&session).await.expect("put");
                    let next = format!("{:064x}", rand_u128());
                    cache
                        .rotate(Swap {
                            id: session.id,
                            presented: &session.refresh_hash,
                            next: &next,
                            at: now + 60,
                        })
                        .await
                        .expect("rotate");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("worker");
    }
    let grown = used_memory(&link).await.saturating_sub(before);
    println!(
        "| Redis `used_memory`, session + one rotation | {count} | {} |",
        grown / count as u64
    );
}

/// A session as a login makes one: a browser's user agent, an address,
/// one role.
fn session(now: i64) -> Session {
    Session {
        id: Uuid::new_v4(),
        user_id: Uuid::new_v4(),
        refresh_hash: format!("{:064x}", rand_u128()),
        created_at: now,
        last_used_at: now,
        expires_at: now + 30 * 24 * 3600,
        user_agent: Some(
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36"
                .into(),
        ),
        ip: Some("203.0.113.7".into()),
        revoked_at: None,
        roles: vec!["user".into()],
        generation: 0,
    }
}

fn rand_u128() -> u128 {
    Uuid::new_v4().as_u128()
}

async fn used_memory(link: &RedisLink) -> u64 {
    let mut conn = link.clone();
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(&mut conn)
        .await
        .expect("info");
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("used_memory")
}
