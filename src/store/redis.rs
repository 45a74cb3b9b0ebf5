//! The production session cache in Redis, shared by every node.
//!
//! A session is one JSON string under `hf:session:{<id>}` expiring with the
//! session; the refresh hashes it rotated away from are a set under
//! `hf:session:{<id>}:used`. The braces are a Redis Cluster hash tag: both
//! keys of a session land on one slot, so the rotation script (compare,
//! swap, remember the used hash, atomically) also works on a cluster.
//!
//! Commands go through a `RedisLink`, which follows a Sentinel failover
//! or a Cluster's slots. A new master has none of our scripts:
//! `Script::invoke_async` sends `EVALSHA`, and on `NOSCRIPT` loads the
//! script and sends it again; a `NOSCRIPT` that still gets through (the
//! link moved between the load and the second try) is a server not ready
//! yet, which a retry answers.

use crate::resilience::failure::FailureKind;
use crate::resilience::{Call, DependencyGuard};
use crate::store::redis_link::RedisLink;
use crate::store::{Probe, Rotation, Session, SessionCache, StoreError, Swap, UnixTime};
use async_trait::async_trait;
use std::sync::Arc;
use uuid::Uuid;

pub const DEPENDENCY: &str = "redis";

/// Rotation as one atomic step. Returns the updated session JSON, `used:`
/// and the session JSON when the presented hash was already rotated away
/// from (`used` alone once the session has expired from the cache), or one
/// of `miss`, `gone`, `mismatch`. Safe for the guard to retry: a retry
/// finds `used:` with the session already holding the fresh hash, which
/// `auth::sessions` recognises as its own.
const ROTATE: &str = r#"
local raw = redis.call('GET', KEYS[1])
local used = redis.call('SISMEMBER', KEYS[2], ARGV[1]) == 1
if used then
  if raw then return 'used:' .. raw end
  return 'used'
end
if not raw then return 'miss' end
local s = cjson.decode(raw)
local now = tonumber(ARGV[3])
if s.revoked_at ~= cjson.null or s.expires_at <= now then return 'gone' end
if s.refresh_hash ~= ARGV[1] then return 'mismatch' end
s.refresh_hash = ARGV[2]
s.last_used_at = now
s.generation = (tonumber(s.generation) or 0) + 1
local out = cjson.encode(s)
redis.call('SET', KEYS[1], out, 'KEEPTTL')
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('EXPIREAT', KEYS[2], s.expires_at)
return out
"#;

/// Marks a cached session revoked, keeping its TTL.
const REVOKE: &str = r#"
local raw = redis.call('GET', KEYS[1])
if not raw then return 0 end
local s = cjson.decode(raw)
if s.revoked_at == cjson.null then
  s.revoked_at = tonumber(ARGV[1])
  redis.call('SET', KEYS[1], cjson.encode(s), 'KEEPTTL')
end
return 1
"#;

/// Repairs a stale copy from a newer one (`SessionCache::catch_up`):
/// ARGV[1] is the newer store's session JSON, ARGV[2..] hashes it knows as
/// used. The higher generation wins; a revocation on either side stays.
const CATCH_UP: &str = r#"
local new = cjson.decode(ARGV[1])
local raw = redis.call('GET', KEYS[1])
local out = new
if raw then
  local s = cjson.decode(raw)
  if (tonumber(s.generation) or 0) >= (tonumber(new.generation) or 0) then out = s end
  if out.revoked_at == cjson.null then
    if s.revoked_at ~= cjson.null then out.revoked_at = s.revoked_at end
    if new.revoked_at ~= cjson.null then out.revoked_at = new.revoked_at end
  end
end
redis.call('SET', KEYS[1], cjson.encode(out), 'EXAT', out.expires_at)
for i = 2, #ARGV do redis.call('SADD', KEYS[2], ARGV[i]) end
if #ARGV > 1 then redis.call('EXPIREAT', KEYS[2], out.expires_at) end
return 1
"#;

pub struct RedisSessionCache {
    conn: RedisLink,
    guard: Arc<DependencyGuard>,
    rotate: redis::Script,
    revoke: redis::Script,
    catch_up: redis::Script,
}

impl RedisSessionCache {
    pub fn new(conn: RedisLink, guard: Arc<DependencyGuard>) -> Self {
        Self {
            conn,
            guard,
            rotate: redis::Script::new(ROTATE),
            revoke: redis::Script::new(REVOKE),
            catch_up: redis::Script::new(CATCH_UP),
        }
    }

    fn session_key(id: Uuid) -> String {
        format!("hf:session:{{{id}}}")
    }

    fn used_key(id: Uuid) -> String {
        format!("hf:session:{{{id}}}:used")
    }
}

fn decode(raw: &str) -> Result<Session, StoreError> {
    serde_json::from_str(raw).map_err(|e| StoreError::Corrupt(format!("session in redis: {e}")))
}

#[async_trait]
impl SessionCache for RedisSessionCache {
    fn backend(&self) -> &'static str {
        "redis"
    }

    async fn put(&self, session: &Session) -> Result<(), StoreError> {
        let json = serde_json::to_string(session)
            .map_err(|e| StoreError::Corrupt(format!("encode session: {e}")))?;
        let key = Self::session_key(session.id);
        // NX: never overwrite a copy that may already be newer.
        let cmd = redis::cmd("SET")
            .arg(&key)
            .arg(&json)
            .arg("NX")
            .arg("EXAT")
            .arg(session.expires_at)
            .to_owned();
        self.guard
            .run_idempotent(|| {
                let mut conn = self.conn.clone();
                let cmd = cmd.clone();
                async move { cmd.query_async::<()>(&mut conn).await.map_err(classify) }
            })
            .await
    }

    async fn get(&self, id: Uuid) -> Result<Option<Session>, StoreError> {
        let key = Self::session_key(id);
        let raw: Option<String> = self
            .guard
            .run_idempotent(|| {
                let mut conn = self.conn.clone();
                let key = key.clone();
                async move {
                    redis::cmd("GET")
                        .arg(key)
                        .query_async(&mut conn)
                        .await
                        .map_err(classify)
                }
            })
            .await?;
        raw.as_deref().map(decode).transpose()
    }

    async fn rotate(&self, swap: Swap<'_>) -> Result<Option<Rotation>, StoreError> {
        let mut invocation = self.rotate.key(Self::session_key(swap.id));
        invocation
            .key(Self::used_key(swap.id))
            .arg(swap.presented)
            .arg(swap.next)
            .arg(swap.at);
        let answer: String = self
            .guard
            .run_idempotent(|| {
                let mut conn = self.conn.clone();
                let invocation = &invocation;
                async move { invocation.invoke_async(&mut conn).await.map_err(classify) }
            })
            .await?;
        if let Some(json) = answer.strip_prefix("used:") {
            return Ok(Some(Rotation::AlreadyRotated(Some(decode(json)?))));
        }
        Ok(match answer.as_str() {
            "miss" => None,
            "used" => Some(Rotation::AlreadyRotated(None)),
            "gone" => Some(Rotation::Gone),
            "mismatch" => Some(Rotation::Mismatch),
            json => Some(Rotation::Rotated(decode(json)?)),
        })
    }

    async fn revoke(&self, id: Uuid, now: UnixTime) -> Result<(), StoreError> {
        let mut invocation = self.revoke.key(Self::session_key(id));
        invocation.arg(now);
        self.run_script(&invocation).await
    }

    async fn catch_up(&self, session: &Session, used: &[&str]) -> Result<(), StoreError> {
        let json = serde_json::to_string(session)
            .map_err(|e| StoreError::Corrupt(format!("encode session: {e}")))?;
        let mut invocation = self.catch_up.key(Self::session_key(session.id));
        invocation.key(Self::used_key(session.id)).arg(json);
        for hash in used {
            invocation.arg(*hash);
        }
        self.run_script(&invocation).await
    }
}

impl RedisSessionCache {
    /// Runs a script whose answer is only "done"; both callers' scripts
    /// are idempotent (a retry finds the work done), so the guard may retry.
    async fn run_script(&self, invocation: &redis::ScriptInvocation<'_>) -> Result<(), StoreError> {
        self.guard
            .run_idempotent(|| {
                let mut conn = self.conn.clone();
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

#[async_trait]
impl Probe for RedisSessionCache {
    fn name(&self) -> &'static str {
        DEPENDENCY
    }

    fn backend(&self) -> &'static str {
        "redis"
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        // A single attempt: health reports what a caller would meet now.
        self.guard
            .run(Call::Read, async {
                redis::cmd("PING")
                    .query_async::<String>(&mut conn)
                    .await
                    .map_err(classify)?;
                Ok(())
            })
            .await
    }
}

/// Connection trouble and a server that cannot serve (loading, read-only
/// replica, cluster down, a new master still without our scripts) are
/// infrastructure failures; the rest are answers.
pub(crate) fn classify(e: redis::RedisError) -> StoreError {
    let text = e.to_string();
    let server_unready = [
        "LOADING",
        "BUSY",
        "READONLY",
        "MASTERDOWN",
        "TRYAGAIN",
        "CLUSTERDOWN",
        "NOSCRIPT",
    ]
    .iter()
    .any(|code| text.contains(code));
    let kind = if e.is_timeout() {
        FailureKind::Timeout
    } else if e.is_connection_refusal() {
        FailureKind::Refused
    } else if e.is_connection_dropped() {
        FailureKind::Reset
    } else if server_unready || e.is_cluster_error() {
        FailureKind::ServerUnavailable
    } else if e.is_io_error() {
        FailureKind::of_error(&e)
    } else {
        return StoreError::Corrupt(text);
    };
    StoreError::Unavailable {
        dependency: DEPENDENCY,
        kind,
        reason: text,
    }
}
