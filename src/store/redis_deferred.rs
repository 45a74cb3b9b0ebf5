//! The deferred write-through queue in Redis (`store::deferred`): a stream
//! `hf:deferred` that every node appends to before it answers a write the
//! ledger could not take, and that any node replays when the ledger
//! answers again. A node killed during a PostgreSQL outage loses nothing
//! that was acknowledged.
//!
//! "Acknowledged" (DESIGN.md §4): held by the Redis master and, when the
//! master has a replica, by one replica too (`WAIT 1`), so a Sentinel
//! failover right after the answer does not lose it either.

use crate::resilience::failure::FailureKind;
use crate::resilience::{Call, DependencyGuard};
use crate::store::StoreError;
use crate::store::deferred::{Deferred, DeferredLog, MAX_DEFERRED, Queued, full};
use crate::store::redis::{DEPENDENCY, classify};
use crate::store::redis_link::RedisLink;
use async_trait::async_trait;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::marker::PhantomData;
use std::sync::Arc;

/// The session writes' stream. The outboxes have theirs
/// (`RedisDeferredLog::on_stream`).
pub const STREAM: &str = "hf:deferred";
/// Who replays a stream now (`claim_replay`, key `<stream>:replayer`), and
/// for how long at most:
/// a node killed while replaying (during a PostgreSQL outage every node
/// tries every 500 ms, so one usually holds it) delays the replay by no
/// more than that. Renewed before each write, so it outlasts any one
/// ledger call at the database timeouts holdfast is run with.
const REPLAY_CLAIM_MS: u64 = 5_000;

/// Takes the claim, or extends it when it is already ours.
const CLAIM: &str = r#"
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"#;

/// Deletes the claim only if it is still ours.
const RELEASE: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"#;

/// Appends unless the stream is full (never trimmed: a full queue refuses,
/// it does not drop). Returns the new length (-1: full) and how many
/// replicas the master has, which decides whether the caller must `WAIT`.
const PUSH: &str = r#"
if redis.call('XLEN', KEYS[1]) >= tonumber(ARGV[2]) then return {-1, 0} end
redis.call('XADD', KEYS[1], '*', 'w', ARGV[1])
local info = redis.call('INFO', 'replication')
local replicas = tonumber(string.match(info, 'connected_slaves:(%d+)')) or 0
return {redis.call('XLEN', KEYS[1]), replicas}
"#;

pub struct RedisDeferredLog<T = Deferred> {
    stream: &'static str,
    replayer: String,
    conn: RedisLink,
    guard: Arc<DependencyGuard>,
    push: redis::Script,
    claim: redis::Script,
    release: redis::Script,
    /// This node's name in the replayer key.
    node: String,
    writes: PhantomData<fn() -> T>,
}

impl RedisDeferredLog {
    /// The session writes' log.
    pub fn new(conn: RedisLink, guard: Arc<DependencyGuard>) -> Self {
        Self::on_stream(STREAM, conn, guard)
    }
}

impl<T> RedisDeferredLog<T> {
    /// A log on its own `stream` (one key, so one Cluster slot per log).
    pub fn on_stream(stream: &'static str, conn: RedisLink, guard: Arc<DependencyGuard>) -> Self {
        Self {
            stream,
            replayer: format!("{stream}:replayer"),
            writes: PhantomData,
            conn,
            guard,
            push: redis::Script::new(PUSH),
            claim: redis::Script::new(CLAIM),
            release: redis::Script::new(RELEASE),
            node: uuid::Uuid::new_v4().to_string(),
        }
    }

    /// Waits (within the guard's timeout) until a replica holds every
    /// write this connection sent so far, ours included.
    async fn replicated(&self) -> Result<(), StoreError> {
        // WAIT answers (0 replicas) when its own timeout ends; it must end
        // before the guard's, or a slow replica would count as Redis down.
        let wait_ms = (self.guard.timeout().as_millis() * 3 / 4).max(1) as u64;
        let mut conn = self.conn.clone();
        let acked: i64 = self
            .guard
            .run(Call::Write, async {
                redis::cmd("WAIT")
                    .arg(1)
                    .arg(wait_ms)
                    .query_async(&mut conn)
                    .await
                    .map_err(classify)
            })
            .await?;
        if acked < 1 {
            return Err(StoreError::Unavailable {
                dependency: DEPENDENCY,
                kind: FailureKind::Timeout,
                reason: "no replica acknowledged the deferred write".into(),
            });
        }
        Ok(())
    }
}

#[async_trait]
impl<T> DeferredLog<T> for RedisDeferredLog<T>
where
    T: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    fn backend(&self) -> &'static str {
        "redis"
    }

    async fn push(&self, write: &T) -> Result<(), StoreError> {
        let json = serde_json::to_string(write)
            .map_err(|e| StoreError::Corrupt(format!("encode deferred write: {e}")))?;
        let mut invocation = self.push.key(self.stream);
        invocation.arg(json).arg(MAX_DEFERRED);
        let mut conn = self.conn.clone();
        // Not retried: a retry after a lost answer would append it twice
        // (harmless on replay, but a write, so the guard's rule holds).
        let (len, replicas): (i64, i64) = self
            .guard
            .run(Call::Write, async {
                invocation.invoke_async(&mut conn).await.map_err(classify)
            })
            .await?;
        if len < 0 {
            return Err(full());
        }
        if replicas > 0 {
            self.replicated().await?;
        }
        Ok(())
    }

    async fn oldest(&self, limit: usize) -> Result<Vec<Queued<T>>, StoreError> {
        let entries: Vec<(String, Vec<String>)> = self
            .guard
            .run_idempotent(|| {
                let mut conn = self.conn.clone();
                async move {
                    redis::cmd("XRANGE")
                        .arg(self.stream)
                        .arg("-")
                        .arg("+")
                        .arg("COUNT")
                        .arg(limit)
                        .query_async(&mut conn)
                        .await
                        .map_err(classify)
                }
            })
            .await?;
        Ok(entries
            .into_iter()
            .map(|(key, fields)| {
                // A write this binary cannot read (a bug, or a newer
                // version's) is handed on as such, so replay can report it
                // and move past it instead of stalling every node.
                let write = fields
                    .get(1)
                    .and_then(|json| serde_json::from_str(json).ok());
                Queued { key, write }
            })
            .collect())
    }

    async fn remove(&self, key: &str) -> Result<(), StoreError> {
        self.remove_all(&[key.to_string()]).await
    }

    async fn remove_all(&self, keys: &[String]) -> Result<(), StoreError> {
        if keys.is_empty() {
            return Ok(());
        }
        self.guard
            .run_idempotent(|| {
                let mut conn = self.conn.clone();
                async move {
                    redis::cmd("XDEL")
                        .arg(self.stream)
                        .arg(keys)
                        .query_async::<i64>(&mut conn)
                        .await
                        .map_err(classify)?;
                    Ok(())
                }
            })
            .await
    }

    async fn backlog(&self) -> Result<usize, StoreError> {
        let len: usize = self
            .guard
            .run_idempotent(|| {
                let mut conn = self.conn.clone();
                async move {
                    redis::cmd("XLEN")
                        .arg(self.stream)
                        .query_async(&mut conn)
                        .await
                        .map_err(classify)
                }
            })
            .await?;
        Ok(len)
    }

    async fn claim_replay(&self) -> Result<bool, StoreError> {
        let mut invocation = self.claim.key(&self.replayer);
        invocation.arg(&self.node).arg(REPLAY_CLAIM_MS);
        let mut conn = self.conn.clone();
        let claimed: i64 = self
            .guard
            .run(Call::Write, async {
                invocation.invoke_async(&mut conn).await.map_err(classify)
            })
            .await?;
        Ok(claimed == 1)
    }

    async fn release_replay(&self) -> Result<(), StoreError> {
        let mut invocation = self.release.key(&self.replayer);
        invocation.arg(&self.node);
        self.guard
            .run_idempotent(|| {
                let mut conn = self.conn.clone();
                let invocation = &invocation;
                async move {
                    invocation
                        .invoke_async::<i64>(&mut conn)
                        .await
                        .map_err(classify)?;
                    Ok(())
                }
            })
            .await
    }
}
