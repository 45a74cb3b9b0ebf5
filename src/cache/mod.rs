//! In-memory caches of answers that would otherwise need a store (API keys,
//! authorization decisions; the validation cache of verified tokens is
//! `auth::validation_cache`) and the bus that invalidates them on every node.
//!
//! Every cache is a bounded `moka` cache with a time-to-live chosen per
//! entry; `CountedCache` adds the hit, miss and eviction counts the admin
//! view reports.

pub mod bus;

use moka::notification::RemovalCause;
use serde::Serialize;
use std::hash::Hash;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// What `GET /admin/cache/stats` reports for one cache.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct CacheStats {
    pub entries: u64,
    pub hits: u64,
    pub misses: u64,
    pub hit_rate: f64,
    /// Entries dropped to stay within capacity.
    pub evictions: u64,
    /// Entries that reached their time-to-live.
    pub expirations: u64,
}

/// A cache as the admin view sees it.
pub trait CacheView: Send + Sync {
    fn name(&self) -> &'static str;
    fn stats(&self) -> CacheStats;
    /// Drops expired entries now instead of lazily.
    fn cleanup(&self);
}

/// `holdfast_cache_requests_total{cache,result}`, set from each cache's own
/// counters when `/metrics` is scraped rather than counted per lookup: a
/// lookup stays free of writes to memory shared between cores (the
/// validation cache counts its per-thread hits apart for that reason).
pub fn export_requests(caches: &[&dyn CacheView]) {
    for cache in caches {
        let stats = cache.stats();
        for (result, count) in [("hit", stats.hits), ("miss", stats.misses)] {
            metrics::counter!(
                "holdfast_cache_requests_total",
                "cache" => cache.name(),
                "result" => result
            )
            .absolute(count);
        }
    }
}

/// Hits per lookup, to three decimals.
pub fn hit_rate(hits: u64, lookups: u64) -> f64 {
    if lookups == 0 {
        0.0
    } else {
        (hits as f64 / lookups as f64 * 1000.0).round() / 1000.0
    }
}

#[derive(Clone)]
struct Entry<V> {
    value: V,
    ttl: Duration,
}

struct PerEntry;

impl<K, V> moka::Expiry<K, Entry<V>> for PerEntry {
    fn expire_after_create(&self, _: &K, entry: &Entry<V>, _: Instant) -> Option<Duration> {
        Some(entry.ttl)
    }
}

#[derive(Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    evictions: AtomicU64,
    expirations: AtomicU64,
}

/// A bounded cache whose entries each expire after their own TTL.
pub struct CountedCache<K, V> {
    name: &'static str,
    inner: moka::sync::Cache<K, Entry<V>>,
    counters: Arc<Counters>,
}

impl<K, V> CountedCache<K, V>
where
    K: Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    pub fn new(name: &'static str, capacity: u64) -> Self {
        let counters = Arc::new(Counters::default());
        let listener = Arc::clone(&counters);
        let inner = moka::sync::Cache::builder()
            .max_capacity(capacity)
            .expire_after(PerEntry)
            .support_invalidation_closures()
            .eviction_listener(move |_, _, cause| match cause {
                RemovalCause::Size => {
                    listener.evictions.fetch_add(1, Ordering::Relaxed);
                }
                RemovalCause::Expired => {
                    listener.expirations.fetch_add(1, Ordering::Relaxed);
                }
                RemovalCause::Explicit | RemovalCause::Replaced => {}
            })
            .build();
        Self {
            name,
            inner,
            counters,
        }
    }

    pub fn get(&self, key: &K) -> Option<V> {
        self.get_fresh(key, |_| true)
    }

    /// `get`, for entries whose expiry the caller judges on its own clock:
    /// one `fresh` refuses is a miss, though the cache still holds it (its
    /// own TTL is then only the bound on memory).
    pub fn get_fresh(&self, key: &K, fresh: impl FnOnce(&V) -> bool) -> Option<V> {
        let found = self.inner.get(key).map(|e| e.value).filter(fresh);
        let counter = if found.is_some() {
            &self.counters.hits
        } else {
            &self.counters.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// Caches `value` for `ttl`; a zero TTL caches nothing.
    pub fn insert(&self, key: K, value: V, ttl: Duration) {
        if !ttl.is_zero() {
            self.inner.insert(key, Entry { value, ttl });
        }
    }

    pub fn invalidate(&self, key: &K) {
        self.inner.invalidate(key);
    }

    /// Drops every entry `predicate` holds for. Takes effect at once for
    /// reads (moka checks pending predicates on `get`).
    pub fn invalidate_if(&self, predicate: impl Fn(&K, &V) -> bool + Send + Sync + 'static) {
        if let Err(e) = self
            .inner
            .invalidate_entries_if(move |k, e| predicate(k, &e.value))
        {
            // Only possible if the builder lacked closure support: a bug.
            tracing::error!(error = %e, "cache invalidation refused; dropping everything");
            self.inner.invalidate_all();
        }
    }

    pub fn invalidate_all(&self) {
        self.inner.invalidate_all();
    }
}

impl<K, V> CacheView for CountedCache<K, V>
where
    K: Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    fn name(&self) -> &'static str {
        self.name
    }

    fn stats(&self) -> CacheStats {
        let hits = self.counters.hits.load(Ordering::Relaxed);
        let misses = self.counters.misses.load(Ordering::Relaxed);
        let lookups = hits + misses;
        CacheStats {
            entries: self.inner.entry_count(),
            hits,
            misses,
            hit_rate: hit_rate(hits, lookups),
            evictions: self.counters.evictions.load(Ordering::Relaxed),
            expirations: self.counters.expirations.load(Ordering::Relaxed),
        }
    }

    fn cleanup(&self) {
        self.inner.run_pending_tasks();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_hits_misses_and_evictions_and_honours_each_ttl() {
        let cache: CountedCache<u32, u32> = CountedCache::new("t", 2);
        cache.insert(1, 10, Duration::from_secs(60));
        cache.insert(2, 20, Duration::from_millis(1));
        cache.insert(3, 30, Duration::ZERO);
        // moka's own timer expires entries and its clock cannot be set from
        // outside, so this one test of the per-entry TTL takes 20 ms of wall
        // time; callers that judge expiry themselves use `get_fresh`.
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(cache.get(&1), Some(10));
        assert_eq!(cache.get(&2), None, "expired by its own ttl");
        assert_eq!(cache.get(&3), None, "a zero ttl caches nothing");
        for k in 10..50 {
            cache.insert(k, k, Duration::from_secs(60));
        }
        cache.cleanup();
        let stats = cache.stats();
        assert!(stats.entries <= 2, "{stats:?}");
        assert!(stats.evictions > 0, "{stats:?}");
        assert_eq!((stats.hits, stats.misses), (1, 2));
        cache.invalidate_if(|_, _| true);
        cache.cleanup();
        assert_eq!(cache.get(&1), None);
    }
}
