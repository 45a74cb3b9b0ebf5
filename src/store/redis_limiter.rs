//! The shared rate limiter in Redis: a sliding-window log per key (a sorted
//! set of reservation times), each operation one Lua script so concurrent
//! attempts on any node can never exceed a limit. Keys carry a Cluster hash
//! tag so a key's set, lock and strike counter share a slot.

use crate::resilience::DependencyGuard;
use crate::store::redis::classify;
use crate::store::{Decision, LimiterStore, StoreError, Window};
use async_trait::async_trait;
use redis::aio::ConnectionManager;
use std::sync::Arc;
use std::time::Duration;

/// KEYS: window set, lock. ARGV: now ms, period ms, limit, member.
/// Returns {allowed, count, reset_after_ms}.
const RESERVE: &str = r#"
local now, period, limit = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local lock = redis.call('PTTL', KEYS[2])
if lock > 0 then return {0, limit, lock} end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - period)
local n = redis.call('ZCARD', KEYS[1])
if n >= limit then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return {0, n, math.max(0, tonumber(oldest[2]) + period - now)}
end
redis.call('ZADD', KEYS[1], now, ARGV[4])
redis.call('PEXPIRE', KEYS[1], period)
return {1, n + 1, period}
"#;

/// KEYS: window set, lock, strikes. ARGV: now ms, period ms, limit, max lock
/// ms. Returns the lock in ms, or 0 when the window still has room.
const FAIL: &str = r#"
local now, period, limit, max = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - period)
if redis.call('ZCARD', KEYS[1]) < limit then return 0 end
local strikes = redis.call('INCR', KEYS[3])
redis.call('PEXPIRE', KEYS[3], max)
local lock = math.min(period * (2 ^ math.min(strikes - 1, 20)), max)
redis.call('SET', KEYS[2], 1, 'PX', math.floor(lock))
redis.call('DEL', KEYS[1])
return math.floor(lock)
"#;

/// KEYS: window set, strikes. ARGV: member.
const REFUND: &str = r#"
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[2])
return 1
"#;

pub struct RedisLimiter {
    conn: ConnectionManager,
    guard: Arc<DependencyGuard>,
    reserve: redis::Script,
    fail: redis::Script,
    refund: redis::Script,
}

impl RedisLimiter {
    pub fn new(conn: ConnectionManager, guard: Arc<DependencyGuard>) -> Self {
        Self {
            conn,
            guard,
            reserve: redis::Script::new(RESERVE),
            fail: redis::Script::new(FAIL),
            refund: redis::Script::new(REFUND),
        }
    }
}

fn keys(key: &str) -> (String, String, String) {
    (
        format!("hf:rl:{{{key}}}"),
        format!("hf:rl:{{{key}}}:lock"),
        format!("hf:rl:{{{key}}}:strikes"),
    )
}

#[async_trait]
impl LimiterStore for RedisLimiter {
    fn backend(&self) -> &'static str {
        "redis"
    }

    async fn reserve(
        &self,
        key: &str,
        window: Window,
        member: &str,
        now_ms: i64,
    ) -> Result<Decision, StoreError> {
        let (set, lock, _) = keys(key);
        let mut invocation = self.reserve.key(set);
        invocation
            .key(lock)
            .arg(now_ms)
            .arg(window.period.as_millis() as u64)
            .arg(window.limit)
            .arg(member);
        // ZADD of the same member is idempotent, so a retry is safe.
        let (allowed, count, reset_ms): (i64, i64, i64) = self
            .guard
            .run_idempotent(|| {
                let mut conn = self.conn.clone();
                let invocation = &invocation;
                async move { invocation.invoke_async(&mut conn).await.map_err(classify) }
            })
            .await?;
        Ok(Decision {
            allowed: allowed == 1,
            limit: window.limit,
            remaining: window.limit.saturating_sub(count.max(0) as u32),
            reset_after: Duration::from_millis(reset_ms.max(0) as u64),
        })
    }

    async fn refund(&self, key: &str, member: &str) -> Result<(), StoreError> {
        let (set, _, strikes) = keys(key);
        let mut invocation = self.refund.key(set);
        invocation.key(strikes).arg(member);
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

    async fn fail(
        &self,
        key: &str,
        window: Window,
        max_lock: Duration,
        now_ms: i64,
    ) -> Result<Option<Duration>, StoreError> {
        let (set, lock, strikes) = keys(key);
        let mut invocation = self.fail.key(set);
        invocation
            .key(lock)
            .key(strikes)
            .arg(now_ms)
            .arg(window.period.as_millis() as u64)
            .arg(window.limit)
            .arg(max_lock.as_millis() as u64);
        // Not idempotent (a strike): one attempt.
        let mut conn = self.conn.clone();
        let lock_ms: i64 = self
            .guard
            .run(crate::resilience::Call::Write, async {
                invocation.invoke_async(&mut conn).await.map_err(classify)
            })
            .await?;
        Ok((lock_ms > 0).then(|| Duration::from_millis(lock_ms as u64)))
    }
}
