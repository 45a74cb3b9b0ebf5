//! Cross-node invalidation. Every change that must end something another
//! node may still honour (a logout, a disabled user, a deleted API key, a
//! role change, a key rotation) is an `Invalidation`:
//!
//! 1. applied at once on this node (in-memory revocations and caches);
//! 2. published on Redis pub/sub, so other nodes apply it within
//!    milliseconds while Redis is up;
//! 3. appended to the `invalidations` table (through an outbox: held by
//!    the database, or while it is away by the spill log in Redis, before
//!    the request is answered), which every node polls every
//!    `[cache] invalidation_poll`: the safety net when pub/sub loses a
//!    message, Redis is down, or a node was restarting. A node starting
//!    applies what still waits in the spill log as well.
//!
//! Applying an event is idempotent, so receiving it twice is harmless and
//! the poller may re-read recent rows on purpose (see `Poller`).

use crate::resilience::outbox::Outbox;
use crate::resilience::{Call, DependencyGuard};
use crate::store::deferred::DeferredLog;
use crate::store::redis_link::RedisLink;
use crate::store::{InvalidationLog, LoggedInvalidation, UnixTime};
use futures::StreamExt;
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use uuid::Uuid;

/// The pub/sub channel every node listens on.
pub const CHANNEL: &str = "hf:invalidations";

/// Rows the poller re-reads behind its high-water mark: a sequence number
/// is taken when a row is inserted but becomes visible only at commit, so
/// a row with a lower `seq` can appear after a higher one. Commits are
/// bounded by the database timeout; 30 s behind is far beyond that.
const POLL_OVERLAP: Duration = Duration::from_secs(30);

/// The longest pause between attempts to subscribe again: short enough
/// that pub/sub is back within seconds of a failover, the log poll
/// covering the gap.
const MAX_RESUBSCRIBE_BACKOFF: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Invalidation {
    /// Logout, session delete, refresh reuse, the other sessions on a
    /// password change.
    SessionRevoked {
        sid: Uuid,
    },
    /// Logout-all: the user's tokens issued before `at` are refused.
    UserNotBefore {
        user: Uuid,
        at: UnixTime,
    },
    /// Soft delete or admin disable: as `UserNotBefore`, and the user's API
    /// keys and authorization decisions are dropped.
    UserDisabled {
        user: Uuid,
        at: UnixTime,
    },
    ApiKeyRevoked {
        id: Uuid,
    },
    /// The user's role list changed: their roles now, and when (ms).
    /// `roles` is `None` in events from nodes older than the role set.
    UserRolesChanged {
        user: Uuid,
        #[serde(default)]
        roles: Option<Vec<String>>,
        #[serde(default)]
        at_ms: i64,
    },
    /// A role was created, changed or deleted.
    RolesChanged,
    /// A role was deleted at `at_ms`, and so taken from every holder:
    /// tokens issued before then lose it.
    RoleDeleted {
        name: String,
        at_ms: i64,
    },
    /// A rotation or a revoke-all: reload the signing keys now.
    KeysChanged {
        revoked_all: bool,
    },
}

/// The invalidation table, the spill log that holds its rows while the
/// database is away, and how long a publish waits for either (the stores'
/// timeouts, `Outbox`).
pub type DurableLog = (
    Arc<dyn InvalidationLog>,
    Arc<dyn DeferredLog<LoggedInvalidation>>,
    Duration,
);

/// Something holding state an invalidation can make wrong.
pub trait Subscriber: Send + Sync {
    fn apply(&self, event: &Invalidation, now: UnixTime);
}

#[derive(Serialize, Deserialize)]
struct Message {
    node: String,
    event: Invalidation,
}

pub struct Bus {
    node: String,
    subscribers: RwLock<Vec<Arc<dyn Subscriber>>>,
    log: Option<Outbox<LoggedInvalidation>>,
    log_store: Option<Arc<dyn InvalidationLog>>,
    redis: Option<(RedisLink, Arc<DependencyGuard>)>,
    /// Wakes the poller at once (after pub/sub reconnects).
    poll_now: Notify,
}

impl Bus {
    /// `log` is where events are made durable, with the spill log that
    /// holds them while the database is away; `redis` where they are
    /// published. Either may be absent.
    pub fn new(
        log: Option<DurableLog>,
        redis: Option<(RedisLink, Arc<DependencyGuard>)>,
    ) -> Arc<Self> {
        let log_store = log.as_ref().map(|(log, _, _)| Arc::clone(log));
        let log = log.map(|(log, spill, deadline)| {
            Outbox::start("invalidations", 10_000, deadline, spill, move |rows| {
                let log = Arc::clone(&log);
                async move { log.append_invalidations(&rows).await }
            })
        });
        Arc::new(Self {
            node: Uuid::new_v4().to_string(),
            subscribers: RwLock::new(Vec::new()),
            log,
            log_store,
            redis,
            poll_now: Notify::new(),
        })
    }

    /// Invalidation rows the spill log holds for the database; none when
    /// there is no log.
    pub async fn backlog(&self) -> Result<usize, crate::store::StoreError> {
        match &self.log {
            Some(log) => log.backlog().await,
            None => Ok(0),
        }
    }

    pub fn subscribe(&self, subscriber: Arc<dyn Subscriber>) {
        self.subscribers.write().push(subscriber);
    }

    /// The log row and the pub/sub payload of `event`, both stamped with
    /// this node.
    fn encode(
        &self,
        event: &Invalidation,
        now: UnixTime,
    ) -> Result<(LoggedInvalidation, String), crate::store::StoreError> {
        let corrupt = |e: serde_json::Error| crate::store::StoreError::Corrupt(e.to_string());
        let row = LoggedInvalidation {
            seq: 0,
            at: now,
            node: self.node.clone(),
            event: serde_json::to_string(event).map_err(corrupt)?,
        };
        let payload = serde_json::to_string(&Message {
            node: self.node.clone(),
            event: event.clone(),
        })
        .map_err(corrupt)?;
        Ok((row, payload))
    }

    /// Applies `event` here, publishes it to the other nodes without
    /// waiting, and returns once its log row is held durably (the database
    /// or the spill log): the caller answers only then, or 503 when the
    /// row could not be held.
    pub async fn publish(
        &self,
        event: Invalidation,
        now: UnixTime,
    ) -> Result<(), crate::store::StoreError> {
        self.deliver(&event, now);
        metrics::counter!("holdfast_invalidations_published_total").increment(1);
        let (row, payload) = self.encode(&event, now)?;
        if let Some((conn, guard)) = &self.redis {
            let (conn, guard) = (conn.clone(), Arc::clone(guard));
            tokio::spawn(async move {
                if let Err(e) = send(conn, &guard, &payload).await {
                    tracing::debug!(error = %e, "invalidation not published; other nodes will poll it");
                }
            });
        }
        match &self.log {
            Some(log) => log.push(row).await,
            None => Ok(()),
        }
    }

    /// Applies the invalidations still waiting in the spill log (made
    /// while the database was away, not yet in the table the poller
    /// reads). Returns how many.
    pub async fn apply_spilled(&self) -> Result<usize, crate::store::StoreError> {
        let Some(log) = &self.log else {
            return Ok(0);
        };
        let rows = log.spilled(crate::store::deferred::MAX_DEFERRED).await?;
        let now = crate::store::unix_now();
        for row in &rows {
            match serde_json::from_str::<Invalidation>(&row.event) {
                Ok(event) => self.deliver(&event, now),
                Err(e) => tracing::warn!(error = %e, "unreadable spilled invalidation"),
            }
        }
        Ok(rows.len())
    }

    /// `publish` for a process about to exit (the CLI): waits until the
    /// event is in the log and on pub/sub instead of queueing it.
    pub async fn publish_and_wait(
        &self,
        event: Invalidation,
        now: UnixTime,
    ) -> Result<(), crate::store::StoreError> {
        self.deliver(&event, now);
        let (row, payload) = self.encode(&event, now)?;
        if let Some(log) = &self.log_store {
            log.append_invalidations(&[row]).await?;
        }
        if let Some((conn, guard)) = &self.redis {
            // Best effort: the log row above already reaches every node.
            let _ = send(conn.clone(), guard, &payload).await;
        }
        Ok(())
    }

    fn deliver(&self, event: &Invalidation, now: UnixTime) {
        for s in self.subscribers.read().iter() {
            s.apply(event, now);
        }
    }

    /// An event from another node (pub/sub or the log); our own are
    /// already applied.
    fn receive(&self, node: &str, event: &Invalidation, via: &'static str) {
        if node == self.node {
            return;
        }
        metrics::counter!("holdfast_invalidations_received_total", "via" => via).increment(1);
        self.deliver(event, crate::store::unix_now());
    }

    /// Listens on pub/sub for as long as the process lives, where the
    /// link's topology says it is heard (`RedisLink::subscribe`: a Sentinel
    /// subscription moves with the master, a Cluster one to another node),
    /// reconnecting with capped backoff; after each (re)connect the poller
    /// runs at once to pick up what was missed while disconnected.
    pub fn spawn_subscriber(self: &Arc<Self>, link: RedisLink, timeout: Duration) {
        let bus = Arc::clone(self);
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(100);
            loop {
                let timeout = timeout.max(Duration::from_secs(1));
                let mut messages = match link.subscribe(CHANNEL, timeout).await {
                    Ok(messages) => messages,
                    Err(e) => {
                        tracing::debug!(error = %e, "invalidation subscriber cannot connect");
                        link.pause_before_subscribing(backoff).await;
                        backoff = (backoff * 2).min(MAX_RESUBSCRIBE_BACKOFF);
                        continue;
                    }
                };
                backoff = Duration::from_millis(100);
                bus.poll_now.notify_one();
                // What was published while this node was not listening and
                // the database was away waits only in the spill log: the
                // poll cannot find it there.
                let spilled = Arc::clone(&bus);
                tokio::spawn(async move {
                    if let Err(e) = spilled.apply_spilled().await {
                        tracing::debug!(error = %e, "spilled invalidations unreadable after resubscribing");
                    }
                });
                tracing::info!("invalidation subscriber listening");
                while let Some(msg) = messages.next().await {
                    match serde_json::from_slice::<Message>(msg.get_payload_bytes()) {
                        Ok(m) => bus.receive(&m.node, &m.event, "pubsub"),
                        Err(e) => tracing::warn!(error = %e, "unreadable invalidation message"),
                    }
                }
                tracing::warn!("invalidation subscriber disconnected; polling covers the gap");
            }
        });
    }

    /// Polls the invalidation log every `every`, from `start` (the last
    /// sequence number when this node started), and prunes rows older than
    /// `retention` once a minute.
    pub fn spawn_poller(
        self: &Arc<Self>,
        log: Arc<dyn InvalidationLog>,
        start: i64,
        every: Duration,
        retention: Duration,
    ) {
        let bus = Arc::clone(self);
        tokio::spawn(async move {
            let mut poller = Poller::new(start);
            let mut last_prune = Instant::now();
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = bus.poll_now.notified() => {}
                }
                if let Err(e) = poller.poll(&bus, log.as_ref()).await {
                    tracing::debug!(error = %e, "invalidation log not readable; will retry");
                }
                if last_prune.elapsed() > Duration::from_secs(60) {
                    last_prune = Instant::now();
                    let before = crate::store::unix_now() - retention.as_secs() as i64;
                    if let Err(e) = log.prune_invalidations(before).await {
                        tracing::debug!(error = %e, "invalidation log not pruned");
                    }
                }
            }
        });
    }
}

/// PUBLISH on the invalidation channel, through the Redis guard.
async fn send(
    mut conn: RedisLink,
    guard: &DependencyGuard,
    payload: &str,
) -> Result<i64, crate::store::StoreError> {
    guard
        .run(Call::Write, async {
            redis::cmd("PUBLISH")
                .arg(CHANNEL)
                .arg(payload)
                .query_async::<i64>(&mut conn)
                .await
                .map_err(crate::store::redis::classify)
        })
        .await
}

/// Reads the log from a point `POLL_OVERLAP` behind the newest row seen,
/// so a row that committed late (a lower `seq` visible after a higher one)
/// is still read.
struct Poller {
    /// (when seen, highest seq at that moment), oldest first.
    marks: VecDeque<(Instant, i64)>,
    high: i64,
}

impl Poller {
    fn new(start: i64) -> Self {
        Self {
            marks: VecDeque::from([(Instant::now(), start)]),
            high: start,
        }
    }

    /// Where the next read starts: the high-water mark of `POLL_OVERLAP` ago.
    fn floor(&mut self) -> i64 {
        while self.marks.len() > 1 && self.marks[1].0.elapsed() >= POLL_OVERLAP {
            self.marks.pop_front();
        }
        self.marks.front().map_or(self.high, |m| m.1)
    }

    async fn poll(
        &mut self,
        bus: &Bus,
        log: &dyn InvalidationLog,
    ) -> Result<(), crate::store::StoreError> {
        let mut after = self.floor();
        loop {
            let rows = log.invalidations_after(after, 1000).await?;
            for row in &rows {
                match serde_json::from_str::<Invalidation>(&row.event) {
                    Ok(event) => bus.receive(&row.node, &event, "log"),
                    Err(e) => {
                        tracing::warn!(seq = row.seq, error = %e, "unreadable invalidation row")
                    }
                }
                after = row.seq;
                self.high = self.high.max(row.seq);
            }
            if rows.len() < 1000 {
                break;
            }
        }
        self.marks.push_back((Instant::now(), self.high));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_as_tagged_json() {
        let sid = Uuid::nil();
        let text = serde_json::to_string(&Invalidation::SessionRevoked { sid }).expect("json");
        assert_eq!(
            text,
            r#"{"type":"session_revoked","sid":"00000000-0000-0000-0000-000000000000"}"#
        );
        let back: Invalidation = serde_json::from_str(&text).expect("parse");
        assert_eq!(back, Invalidation::SessionRevoked { sid });
    }
}
