//! The in-process rate limiter: development without Redis, and the per-node
//! fallback of `rate_limit.on_backend_failure = "local"`. Written here (not
//! governor) so it has exactly the semantics of the Redis scripts —
//! sliding-window log, reservations, refunds, growing locks — and a refund
//! means the same thing on both. Bounded: idle keys are dropped on a sweep.

use crate::store::{Decision, LimiterStore, StoreError, Window};
use async_trait::async_trait;
use parking_lot::Mutex;
use std::collections::{HashMap, VecDeque};
use std::time::Duration;

#[derive(Default)]
struct Entry {
    /// (time in ms, member) of each reservation inside the window.
    hits: VecDeque<(i64, String)>,
    locked_until: i64,
    strikes: u32,
    strikes_until: i64,
}

pub struct MemoryLimiter {
    entries: Mutex<HashMap<String, Entry>>,
}

/// Keys kept before a sweep drops the idle ones.
const SWEEP_AT: usize = 50_000;

impl Default for MemoryLimiter {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryLimiter {
    pub fn new() -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn sweep(entries: &mut HashMap<String, Entry>, now_ms: i64) {
        if entries.len() >= SWEEP_AT {
            entries.retain(|_, e| {
                !e.hits.is_empty() || e.locked_until > now_ms || e.strikes_until > now_ms
            });
        }
    }
}

fn ms(d: Duration) -> i64 {
    d.as_millis() as i64
}

#[async_trait]
impl LimiterStore for MemoryLimiter {
    fn backend(&self) -> &'static str {
        "memory"
    }

    async fn reserve(
        &self,
        key: &str,
        window: Window,
        member: &str,
        now_ms: i64,
    ) -> Result<Decision, StoreError> {
        let mut entries = self.entries.lock();
        Self::sweep(&mut entries, now_ms);
        let entry = entries.entry(key.to_string()).or_default();
        if entry.locked_until > now_ms {
            return Ok(Decision {
                allowed: false,
                limit: window.limit,
                remaining: 0,
                reset_after: Duration::from_millis((entry.locked_until - now_ms) as u64),
            });
        }
        let start = now_ms - ms(window.period);
        while entry.hits.front().is_some_and(|(t, _)| *t <= start) {
            entry.hits.pop_front();
        }
        let count = entry.hits.len() as u32;
        if count >= window.limit {
            let oldest = entry.hits.front().map_or(now_ms, |(t, _)| *t);
            return Ok(Decision {
                allowed: false,
                limit: window.limit,
                remaining: 0,
                reset_after: Duration::from_millis(
                    (oldest + ms(window.period) - now_ms).max(0) as u64
                ),
            });
        }
        entry.hits.push_back((now_ms, member.to_string()));
        Ok(Decision {
            allowed: true,
            limit: window.limit,
            remaining: window.limit - count - 1,
            reset_after: window.period,
        })
    }

    async fn refund(&self, key: &str, member: &str) -> Result<(), StoreError> {
        if let Some(entry) = self.entries.lock().get_mut(key) {
            entry.hits.retain(|(_, m)| m != member);
            entry.strikes = 0;
        }
        Ok(())
    }

    async fn fail(
        &self,
        key: &str,
        window: Window,
        max_lock: Duration,
        now_ms: i64,
    ) -> Result<Option<Duration>, StoreError> {
        let mut entries = self.entries.lock();
        let entry = entries.entry(key.to_string()).or_default();
        let start = now_ms - ms(window.period);
        while entry.hits.front().is_some_and(|(t, _)| *t <= start) {
            entry.hits.pop_front();
        }
        if (entry.hits.len() as u32) < window.limit {
            return Ok(None);
        }
        if entry.strikes_until <= now_ms {
            entry.strikes = 0;
        }
        entry.strikes += 1;
        entry.strikes_until = now_ms + ms(max_lock);
        let lock = window
            .period
            .saturating_mul(1 << (entry.strikes - 1).min(20))
            .min(max_lock);
        entry.locked_until = now_ms + ms(lock);
        entry.hits.clear();
        Ok(Some(lock))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: Window = Window {
        limit: 3,
        period: Duration::from_secs(60),
    };

    #[tokio::test]
    async fn the_window_slides_and_refunds_give_slots_back() {
        let l = MemoryLimiter::new();
        for (i, member) in ["a", "b", "c"].iter().enumerate() {
            let d = l.reserve("k", W, member, 1_000).await.expect("reserve");
            assert!(d.allowed);
            assert_eq!(d.remaining, 2 - i as u32);
        }
        let d = l.reserve("k", W, "d", 2_000).await.expect("reserve");
        assert!(!d.allowed);
        assert_eq!(d.reset_after, Duration::from_millis(59_000));
        l.refund("k", "b").await.expect("refund");
        assert!(
            l.reserve("k", W, "e", 2_000)
                .await
                .expect("reserve")
                .allowed
        );
        assert!(
            l.reserve("k", W, "f", 61_001)
                .await
                .expect("reserve")
                .allowed,
            "slid out"
        );
    }

    #[tokio::test]
    async fn failures_lock_for_a_growing_interval() {
        let l = MemoryLimiter::new();
        let max = Duration::from_secs(3600);
        for m in ["a", "b", "c"] {
            l.reserve("acct", W, m, 0).await.expect("reserve");
        }
        assert_eq!(
            l.fail("acct", W, max, 0).await.expect("fail"),
            Some(Duration::from_secs(60))
        );
        assert!(
            !l.reserve("acct", W, "x", 59_000).await.expect("r").allowed,
            "locked"
        );
        for m in ["d", "e", "f"] {
            assert!(l.reserve("acct", W, m, 60_000).await.expect("r").allowed);
        }
        assert_eq!(
            l.fail("acct", W, max, 60_000).await.expect("fail"),
            Some(Duration::from_secs(120))
        );
    }
}
