//! The shared rate limiter in Redis: a sliding-window log per key (a sorted
//! set of reservation times), each operation one Lua script so concurrent
//! attempts on any node can never exceed a limit. The keys one script
//! touches share a Cluster hash tag (the key, or for logins the account),
//! so they sit in one slot.

use crate::resilience::DependencyGuard;
use crate::store::redis::classify;
use crate::store::redis_link::RedisLink;
use crate::store::{AccountWindows, LimitDecision, LimiterStore, LoginSubject, StoreError, Window};
use async_trait::async_trait;
use std::sync::Arc;
use std::time::Duration;

/// KEYS: window set. ARGV: now ms, period ms, limit, member.
/// Returns {allowed, count, reset_after_ms}.
const RESERVE: &str = r#"
local now, period, limit = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
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

/// KEYS: pair set, pair lock, account set, known addresses (one hash tag:
/// the account). ARGV: now ms, pair period ms, pair limit, ceiling period
/// ms, ceiling limit, lockout max ms, known-for ms, member, address.
/// Returns {allowed, count, reset_after_ms, limit}.
const RESERVE_LOGIN: &str = r#"
local now = tonumber(ARGV[1])
local pp, pl = tonumber(ARGV[2]), tonumber(ARGV[3])
local cp, cl = tonumber(ARGV[4]), tonumber(ARGV[5])
local max, known_for = tonumber(ARGV[6]), tonumber(ARGV[7])
local lock = redis.call('PTTL', KEYS[2])
if lock > 0 then return {0, pl, lock, pl} end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - pp)
local n = redis.call('ZCARD', KEYS[1])
if n >= pl then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return {0, n, math.max(0, tonumber(oldest[2]) + pp - now), pl}
end
local seen = tonumber(redis.call('ZSCORE', KEYS[4], ARGV[9]) or 0)
if seen <= now - known_for then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - cp)
  local all = redis.call('ZCARD', KEYS[3])
  if all >= cl then
    local oldest = redis.call('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')
    return {0, all, math.min(max, math.max(0, tonumber(oldest[2]) + cp - now)), cl}
  end
  redis.call('ZADD', KEYS[3], now, ARGV[8])
  redis.call('PEXPIRE', KEYS[3], cp)
end
redis.call('ZADD', KEYS[1], now, ARGV[8])
redis.call('PEXPIRE', KEYS[1], pp)
return {1, n + 1, pp, pl}
"#;

/// KEYS: pair set, pair lock, pair strikes. ARGV: now ms, pair period ms,
/// pair limit, lockout max ms. Returns the lock in ms, or 0 when the window
/// still has room. The failure stays counted in the account set.
const FAIL_LOGIN: &str = r#"
local now, period, limit, max = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - period)
if redis.call('ZCARD', KEYS[1]) < limit then return 0 end
local strikes = redis.call('INCR', KEYS[3])
local lock = math.floor(math.min(period * (2 ^ math.min(strikes - 1, 20)), max))
redis.call('PEXPIRE', KEYS[3], lock + max)
redis.call('SET', KEYS[2], 1, 'PX', lock)
redis.call('DEL', KEYS[1])
return lock
"#;

/// KEYS: pair set, account set, pair strikes, known addresses. ARGV:
/// member, succeeded (1/0), now ms, known-for ms, address, most known.
const REFUND_LOGIN: &str = r#"
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
if ARGV[2] == '1' then
  local now, known_for = tonumber(ARGV[3]), tonumber(ARGV[4])
  redis.call('DEL', KEYS[3])
  redis.call('ZADD', KEYS[4], now, ARGV[5])
  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now - known_for)
  local extra = redis.call('ZCARD', KEYS[4]) - tonumber(ARGV[6])
  if extra > 0 then redis.call('ZREMRANGEBYRANK', KEYS[4], 0, extra - 1) end
  redis.call('PEXPIRE', KEYS[4], known_for)
end
return 1
"#;

/// Addresses remembered per account; the oldest goes first.
const KNOWN_PER_ACCOUNT: u32 = 256;

pub struct RedisLimiter {
    conn: RedisLink,
    guard: Arc<DependencyGuard>,
    reserve: redis::Script,
    reserve_login: redis::Script,
    fail_login: redis::Script,
    refund_login: redis::Script,
}

impl RedisLimiter {
    pub fn new(conn: RedisLink, guard: Arc<DependencyGuard>) -> Self {
        Self {
            conn,
            guard,
            reserve: redis::Script::new(RESERVE),
            reserve_login: redis::Script::new(RESERVE_LOGIN),
            fail_login: redis::Script::new(FAIL_LOGIN),
            refund_login: redis::Script::new(REFUND_LOGIN),
        }
    }

    /// Runs a script that may safely run twice.
    async fn idempotent<T: redis::FromRedisValue>(
        &self,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Result<T, StoreError> {
        self.guard
            .run_idempotent(|| {
                let mut conn = self.conn.clone();
                async move { invocation.invoke_async(&mut conn).await.map_err(classify) }
            })
            .await
    }
}

/// The keys of one account's login limits. They share the account as
/// their hash tag, so each script's keys sit in one Cluster slot.
struct LoginKeys {
    pair: String,
    lock: String,
    strikes: String,
    all: String,
    known: String,
}

fn login_keys(s: LoginSubject<'_>) -> LoginKeys {
    let account = format!("hf:rl:{{a:{}}}", s.account);
    let pair = format!("{account}:p:{}", s.address);
    LoginKeys {
        lock: format!("{pair}:lock"),
        strikes: format!("{pair}:strikes"),
        pair,
        all: format!("{account}:all"),
        known: format!("{account}:known"),
    }
}

/// A script's answer (allowed as 0/1, members counted, ms until a slot
/// frees) as a `LimitDecision` against `limit`.
fn decision(allowed: i64, limit: u32, count: i64, reset_ms: i64) -> LimitDecision {
    LimitDecision {
        allowed: allowed == 1,
        limit,
        remaining: limit.saturating_sub(count.max(0) as u32),
        reset_after: Duration::from_millis(reset_ms.max(0) as u64),
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
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
    ) -> Result<LimitDecision, StoreError> {
        let mut invocation = self.reserve.key(format!("hf:rl:{{{key}}}"));
        invocation
            .arg(now_ms)
            .arg(millis(window.period))
            .arg(window.limit)
            .arg(member);
        // ZADD of the same member is idempotent, so a retry is safe.
        let (allowed, count, reset_ms): (i64, i64, i64) = self.idempotent(&invocation).await?;
        Ok(decision(allowed, window.limit, count, reset_ms))
    }

    async fn reserve_login(
        &self,
        subject: LoginSubject<'_>,
        w: AccountWindows,
        member: &str,
        now_ms: i64,
    ) -> Result<LimitDecision, StoreError> {
        let k = login_keys(subject);
        let mut invocation = self.reserve_login.key(k.pair);
        invocation
            .key(k.lock)
            .key(k.all)
            .key(k.known)
            .arg(now_ms)
            .arg(millis(w.pair.period))
            .arg(w.pair.limit)
            .arg(millis(w.ceiling.period))
            .arg(w.ceiling.limit)
            .arg(millis(w.lockout_max))
            .arg(millis(w.known_for))
            .arg(member)
            .arg(subject.address);
        // Both ZADDs are of the same member: a retry is safe.
        let (allowed, count, reset_ms, limit): (i64, i64, i64, u32) =
            self.idempotent(&invocation).await?;
        Ok(decision(allowed, limit, count, reset_ms))
    }

    async fn refund_login(
        &self,
        subject: LoginSubject<'_>,
        w: AccountWindows,
        member: &str,
        succeeded: bool,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let k = login_keys(subject);
        let mut invocation = self.refund_login.key(k.pair);
        invocation
            .key(k.all)
            .key(k.strikes)
            .key(k.known)
            .arg(member)
            .arg(u8::from(succeeded))
            .arg(now_ms)
            .arg(millis(w.known_for))
            .arg(subject.address)
            .arg(KNOWN_PER_ACCOUNT);
        self.idempotent::<i64>(&invocation).await?;
        Ok(())
    }

    async fn fail_login(
        &self,
        subject: LoginSubject<'_>,
        w: AccountWindows,
        now_ms: i64,
    ) -> Result<Option<Duration>, StoreError> {
        let k = login_keys(subject);
        let mut invocation = self.fail_login.key(k.pair);
        invocation
            .key(k.lock)
            .key(k.strikes)
            .arg(now_ms)
            .arg(millis(w.pair.period))
            .arg(w.pair.limit)
            .arg(millis(w.lockout_max));
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

#[cfg(test)]
mod tests {
    use super::*;

    /// What Redis Cluster hashes to pick a key's slot: the text between
    /// the first `{` and the next `}` when that is not empty, else the key.
    fn hash_tag(key: &str) -> &str {
        let Some(open) = key.find('{') else {
            return key;
        };
        match key[open + 1..].find('}') {
            Some(0) | None => key,
            Some(len) => &key[open + 1..open + 1 + len],
        }
    }

    /// Each login script's keys sit in one slot, or a cluster refuses it
    /// (`CROSSSLOT`) — whatever the account (a login tried for an unknown
    /// user is the typed text, braces included) and the address.
    #[test]
    fn the_keys_of_one_account_share_a_cluster_slot() {
        let subjects = [
            ("0190d6f2-7a7e-7cc1-a0b4-4f5c1e0e9c11", "203.0.113.5"),
            ("}{evil}", "2001:db8::1"),
            ("", "198.51.100.7"),
        ];
        for (account, address) in subjects {
            let k = login_keys(LoginSubject { account, address });
            let tag = hash_tag(&k.pair);
            assert!(tag.starts_with("a:"), "{tag}");
            for key in [&k.lock, &k.strikes, &k.all, &k.known] {
                assert_eq!(hash_tag(key), tag, "{key}");
            }
        }
    }
}
