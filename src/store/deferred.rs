//! Write-through the session ledger could not take when it was decided
//! (PostgreSQL down or read-only), kept until it can.
//!
//! DESIGN.md §4: nothing acknowledged waits only in one process's memory.
//! With Redis as the cache the queue is a Redis stream
//! (`store::redis_deferred`), written before the 2xx, so that any node
//! replays it and a node killed during the outage loses none of it. The
//! embedded mode has one process and no Redis: its queue stays in memory
//! (`MemoryDeferredLog`).
//!
//! The same queue, on its own stream, holds what the outboxes
//! (`resilience::outbox`: audit events, invalidation-log rows) could not
//! write while the database was away; hence the type parameter.

use crate::resilience::failure::FailureKind;
use crate::store::{Session, StoreError, UnixTime};
use async_trait::async_trait;
use parking_lot::Mutex;
use std::collections::VecDeque;
use uuid::Uuid;

/// Writes a log holds before new degraded writes are refused (503)
/// rather than any acknowledged one dropped.
pub const MAX_DEFERRED: usize = 100_000;

/// A ledger write decided while the ledger was unreachable.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Deferred {
    /// The cache rotated `used` to `next`, reaching `generation`.
    Rotation {
        id: Uuid,
        used: String,
        next: String,
        at: UnixTime,
        generation: i64,
    },
    Revoke {
        id: Uuid,
        at: UnixTime,
    },
    /// A session started while the primary was read-only or down; the
    /// cache holds it meanwhile. With the user's security version its
    /// login read, so a change answered since still refuses it.
    Create {
        session: Box<Session>,
        user_version: Option<i64>,
    },
}

/// One write in a log, with the log's own name for it (to remove it once
/// replayed).
#[derive(Debug, Clone)]
pub struct Queued<T = Deferred> {
    pub key: String,
    /// `None` when the log holds something that does not decode.
    pub write: Option<T>,
}

/// An ordered queue of deferred writes, shared by every node that can
/// reach it.
#[async_trait]
pub trait DeferredLog<T: Send + Sync + 'static = Deferred>: Send + Sync {
    /// `"redis"` or `"memory"`.
    fn backend(&self) -> &'static str;
    /// Appends `write`. `Ok` only once the log holds it as DESIGN.md §4
    /// defines "acknowledged"; a full log refuses (`QueueFull`).
    async fn push(&self, write: &T) -> Result<(), StoreError>;
    /// The oldest `limit` writes, in the order they were pushed.
    async fn oldest(&self, limit: usize) -> Result<Vec<Queued<T>>, StoreError>;
    /// Removes a write that has been replayed (or refused for good).
    async fn remove(&self, key: &str) -> Result<(), StoreError>;
    /// Removes several writes.
    async fn remove_all(&self, keys: &[String]) -> Result<(), StoreError> {
        for key in keys {
            self.remove(key).await?;
        }
        Ok(())
    }
    /// Writes waiting.
    async fn backlog(&self) -> Result<usize, StoreError>;
    /// Takes the right to replay the log for a while, or extends it when
    /// this node holds it (one replayer at a time across nodes); false when
    /// another holds it. A log only one process sees needs none.
    async fn claim_replay(&self) -> Result<bool, StoreError> {
        Ok(true)
    }
    /// Gives the right back (it also expires on its own).
    async fn release_replay(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// The refusal of a full log: the write is not acknowledged, none is lost.
pub fn full() -> StoreError {
    StoreError::Unavailable {
        dependency: "database",
        kind: FailureKind::QueueFull,
        reason: "deferred write queue full".into(),
    }
}

/// The embedded mode's log: one process, so its memory is the only place.
pub struct MemoryDeferredLog<T = Deferred> {
    capacity: usize,
    /// Writes with their sequence numbers (the keys), oldest first.
    queue: Mutex<(u64, VecDeque<(u64, T)>)>,
}

impl<T> MemoryDeferredLog<T> {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            queue: Mutex::new((0, VecDeque::new())),
        }
    }
}

#[async_trait]
impl<T: Clone + Send + Sync + 'static> DeferredLog<T> for MemoryDeferredLog<T> {
    fn backend(&self) -> &'static str {
        "memory"
    }

    async fn push(&self, write: &T) -> Result<(), StoreError> {
        let mut guard = self.queue.lock();
        let (next, queue) = &mut *guard;
        if queue.len() >= self.capacity {
            return Err(full());
        }
        *next += 1;
        queue.push_back((*next, write.clone()));
        Ok(())
    }

    async fn oldest(&self, limit: usize) -> Result<Vec<Queued<T>>, StoreError> {
        Ok(self
            .queue
            .lock()
            .1
            .iter()
            .take(limit)
            .map(|(seq, write)| Queued {
                key: seq.to_string(),
                write: Some(write.clone()),
            })
            .collect())
    }

    async fn remove(&self, key: &str) -> Result<(), StoreError> {
        self.queue
            .lock()
            .1
            .retain(|(seq, _)| seq.to_string() != key);
        Ok(())
    }

    async fn backlog(&self) -> Result<usize, StoreError> {
        Ok(self.queue.lock().1.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn revoke(n: i64) -> Deferred {
        Deferred::Revoke {
            id: Uuid::nil(),
            at: n,
        }
    }

    #[tokio::test]
    async fn a_full_memory_log_refuses_and_keeps_what_it_holds() {
        let log = MemoryDeferredLog::new(2);
        log.push(&revoke(1)).await.expect("first");
        log.push(&revoke(2)).await.expect("second");
        let refused = log.push(&revoke(3)).await;
        assert!(matches!(
            refused,
            Err(StoreError::Unavailable {
                kind: FailureKind::QueueFull,
                ..
            })
        ));
        let held = log.oldest(10).await.expect("oldest");
        let writes: Vec<_> = held.iter().filter_map(|q| q.write.clone()).collect();
        assert_eq!(writes, vec![revoke(1), revoke(2)], "in order, none dropped");
        log.remove(&held[0].key).await.expect("remove");
        assert_eq!(log.backlog().await.expect("len"), 1);
        log.push(&revoke(3)).await.expect("room again");
    }

    #[test]
    fn writes_round_trip_through_json() {
        let write = Deferred::Rotation {
            id: Uuid::new_v4(),
            used: "a".into(),
            next: "b".into(),
            at: 7,
            generation: 3,
        };
        let json = serde_json::to_string(&write).expect("encode");
        let back: Deferred = serde_json::from_str(&json).expect("decode");
        assert_eq!(back, write);
    }
}
