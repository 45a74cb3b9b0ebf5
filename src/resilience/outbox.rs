//! Durable side writes of a request: audit events and invalidation-log
//! rows. DESIGN.md §4: nothing acknowledged waits only in one process's
//! memory, so `push` returns only once the item is held by the database
//! or, while the database is away, by the spill log (a Redis stream with
//! Redis configured, process memory in the embedded mode), and the caller
//! answers 503 when neither can take it. A full outbox refuses new items;
//! it never drops one it accepted.
//!
//! One writer task batches what concurrent requests push (one database
//! round trip per batch, not per item); one drain task moves the spill log
//! back into the database when it answers again, one node at a time
//! (`DeferredLog::claim_replay`). A replay may write an item twice when a
//! node dies between the insert and the removal, or when a write that
//! timed out had committed after all: invalidations are idempotent, and an
//! audit event carries its own id, which the table stores once.

use crate::resilience::failure::FailureKind;
use crate::store::StoreError;
use crate::store::deferred::DeferredLog;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Items written per database round trip.
const BATCH: usize = 100;
/// How often the spill log is checked for items to move back.
const DRAIN_EVERY: Duration = Duration::from_millis(500);

/// One pushed item and who waits for its answer.
struct Pending<T> {
    item: T,
    /// Anybody can cause it without an account (a failed login): it may
    /// not take the spill log's last fifth, kept for the writes of
    /// authenticated requests.
    anonymous: bool,
    done: oneshot::Sender<Result<(), StoreError>>,
}

/// The spill backlog past which anonymous items are refused: a flood of
/// failed logins during an outage must not fill the log and turn every
/// login into a 503.
const ANONYMOUS_SPILL_LIMIT: usize = crate::store::deferred::MAX_DEFERRED / 5 * 4;

pub struct Outbox<T: Send + Sync + 'static> {
    name: &'static str,
    /// The longest a push waits for the writer: the database's timeout.
    /// An item queued behind a batch that is waiting out a hung database
    /// goes to the spill log itself then, instead of waiting for that
    /// batch and its own attempt after it (DESIGN.md §4: nothing waits on a
    /// hung dependency longer than its timeout, and logout works while
    /// PostgreSQL hangs).
    deadline: Duration,
    tx: mpsc::Sender<Pending<T>>,
    spill: Arc<dyn DeferredLog<T>>,
}

impl<T: Clone + Send + Sync + 'static> Outbox<T> {
    /// Starts the writer and drain tasks. `write` stores one batch in the
    /// database; an `Unavailable` answer sends the batch to `spill`, any
    /// other error is the pushers' answer. At most `capacity` items wait
    /// for the writer; more are refused.
    pub fn start<F, Fut>(
        name: &'static str,
        capacity: usize,
        deadline: Duration,
        spill: Arc<dyn DeferredLog<T>>,
        write: F,
    ) -> Self
    where
        F: Fn(Vec<T>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), StoreError>> + Send + 'static,
    {
        let (tx, rx) = mpsc::channel::<Pending<T>>(capacity);
        let write = Arc::new(write);
        tokio::spawn(run_writer(name, rx, Arc::clone(&spill), Arc::clone(&write)));
        tokio::spawn(run_drain(name, Arc::downgrade(&spill), write));
        Self {
            name,
            deadline,
            tx,
            spill,
        }
    }

    /// Holds `item` durably: `Ok` once the database or the spill log has
    /// it, the refusal otherwise (the caller answers 503).
    pub async fn push(&self, item: T) -> Result<(), StoreError> {
        self.send(item, false).await
    }

    /// `push` for an item anybody can cause without an account: refused
    /// once the spill log holds `ANONYMOUS_SPILL_LIMIT` items.
    pub async fn push_anonymous(&self, item: T) -> Result<(), StoreError> {
        self.send(item, true).await
    }

    async fn send(&self, item: T, anonymous: bool) -> Result<(), StoreError> {
        let (done, answer) = oneshot::channel();
        let pending = Pending {
            item: item.clone(),
            anonymous,
            done,
        };
        if self.tx.try_send(pending).is_err() {
            metrics::counter!("holdfast_outbox_refused_total", "outbox" => self.name).increment(1);
            tracing::warn!(outbox = self.name, "outbox full; write refused");
            return Err(refused(self.name, FailureKind::QueueFull, "outbox full"));
        }
        match tokio::time::timeout(self.deadline, answer).await {
            Ok(answered) => answered.unwrap_or_else(|_| {
                Err(refused(self.name, FailureKind::QueueFull, "outbox closed"))
            }),
            // Queued behind a batch that is waiting out a hung database:
            // straight to the spill log rather than wait for that batch and
            // then its own attempt. The writer may store it as well; a
            // repeat is harmless (invalidations are idempotent, an audit
            // event is stored once by its id).
            Err(_) if !anonymous => {
                let held = self.spill.push(&item).await;
                if held.is_err() {
                    metrics::counter!("holdfast_outbox_refused_total", "outbox" => self.name)
                        .increment(1);
                }
                held
            }
            Err(_) => Err(refused(
                self.name,
                FailureKind::Timeout,
                "not held within the database's timeout",
            )),
        }
    }

    /// How many items the spill log holds for the database.
    pub async fn backlog(&self) -> Result<usize, StoreError> {
        self.spill.backlog().await
    }

    /// Items the spill log holds now, oldest first (a starting node applies
    /// the invalidations in it before it is ready).
    pub async fn spilled(&self, limit: usize) -> Result<Vec<T>, StoreError> {
        Ok(self
            .spill
            .oldest(limit)
            .await?
            .into_iter()
            .filter_map(|queued| queued.write)
            .collect())
    }
}

fn refused(name: &'static str, kind: FailureKind, reason: &str) -> StoreError {
    StoreError::Unavailable {
        dependency: "database",
        kind,
        reason: format!("{name}: {reason}"),
    }
}

async fn run_writer<T, F, Fut>(
    name: &'static str,
    mut rx: mpsc::Receiver<Pending<T>>,
    spill: Arc<dyn DeferredLog<T>>,
    write: Arc<F>,
) where
    T: Clone + Send + Sync + 'static,
    F: Fn(Vec<T>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), StoreError>> + Send + 'static,
{
    let mut batch: Vec<Pending<T>> = Vec::with_capacity(BATCH);
    loop {
        if rx.recv_many(&mut batch, BATCH).await == 0 {
            return; // every sender dropped
        }
        let items: Vec<T> = batch.iter().map(|p| p.item.clone()).collect();
        match write(items).await {
            Ok(()) => {
                for pending in batch.drain(..) {
                    let _ = pending.done.send(Ok(()));
                }
            }
            Err(e) if e.is_unavailable() => {
                tracing::debug!(outbox = name, items = batch.len(), error = %e, "database unavailable; outbox items go to the spill log");
                let crowded = batch.iter().any(|p| p.anonymous)
                    && spill
                        .backlog()
                        .await
                        .map_or(true, |n| n >= ANONYMOUS_SPILL_LIMIT);
                let pushes = batch.drain(..).map(|pending| {
                    let spill = Arc::clone(&spill);
                    async move {
                        let held = if pending.anonymous && crowded {
                            Err(refused(name, FailureKind::QueueFull, "spill log kept for authenticated writes"))
                        } else {
                            spill.push(&pending.item).await
                        };
                        if let Err(e) = &held {
                            metrics::counter!("holdfast_outbox_refused_total", "outbox" => name)
                                .increment(1);
                            tracing::warn!(outbox = name, error = %e, "neither the database nor the spill log took an outbox write; refused");
                        }
                        let _ = pending.done.send(held);
                    }
                });
                futures::future::join_all(pushes).await;
            }
            Err(e) => {
                tracing::error!(outbox = name, items = batch.len(), error = %e, "outbox write refused by the database");
                for pending in batch.drain(..) {
                    let _ = pending.done.send(Err(e.clone()));
                }
            }
        }
    }
}

/// Moves the spill log back into the database, for as long as the log
/// lives.
async fn run_drain<T, F, Fut>(
    name: &'static str,
    spill: std::sync::Weak<dyn DeferredLog<T>>,
    write: Arc<F>,
) where
    T: Clone + Send + Sync + 'static,
    F: Fn(Vec<T>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), StoreError>> + Send + 'static,
{
    loop {
        tokio::time::sleep(DRAIN_EVERY).await;
        let Some(spill) = spill.upgrade() else {
            return;
        };
        if let Some(moved) = drain(name, spill.as_ref(), write.as_ref()).await
            && moved > 0
        {
            tracing::info!(outbox = name, moved, "spilled outbox writes stored");
        }
    }
}

/// One pass: `None` when another node holds the claim or a store failed.
async fn drain<T, F, Fut>(
    name: &'static str,
    spill: &dyn DeferredLog<T>,
    write: &F,
) -> Option<usize>
where
    T: Clone + Send + Sync + 'static,
    F: Fn(Vec<T>) -> Fut,
    Fut: Future<Output = Result<(), StoreError>>,
{
    if spill.oldest(1).await.ok()?.is_empty() || !spill.claim_replay().await.ok()? {
        return Some(0);
    }
    let mut moved = 0;
    let result = loop {
        let batch = match spill.oldest(BATCH).await {
            Ok(batch) if batch.is_empty() => break Some(moved),
            Ok(batch) => batch,
            Err(_) => break None,
        };
        if !spill.claim_replay().await.unwrap_or(false) {
            break None;
        }
        let keys: Vec<String> = batch.iter().map(|q| q.key.clone()).collect();
        let items: Vec<(String, T)> = batch
            .into_iter()
            .filter_map(|q| Some((q.key, q.write?)))
            .collect();
        let all = items.iter().map(|(_, item)| item.clone()).collect();
        let done = match write(all).await {
            Ok(()) => {
                moved += items.len();
                keys
            }
            Err(e) if e.is_unavailable() => break None,
            // The batch was refused for something other than an outage:
            // one item at a time, so that only an item refused on its own
            // is given up, never the batch around it.
            Err(_) => match one_by_one(name, items, write).await {
                Some((stored, done)) => {
                    moved += stored;
                    done
                }
                None => break None,
            },
        };
        if spill.remove_all(&done).await.is_err() {
            break None;
        }
    };
    if let Err(e) = spill.release_replay().await {
        tracing::debug!(error = %e, "outbox drain claim not released; it expires");
    }
    result
}

/// Writes `items` one at a time: how many were stored, and the keys that
/// are done with (stored, or refused on their own for good, which is
/// logged and counted). `None` when the database became unavailable: the
/// rest stay for the next pass.
async fn one_by_one<T, F, Fut>(
    name: &'static str,
    items: Vec<(String, T)>,
    write: &F,
) -> Option<(usize, Vec<String>)>
where
    F: Fn(Vec<T>) -> Fut,
    Fut: Future<Output = Result<(), StoreError>>,
{
    let (mut stored, mut done) = (0, Vec::new());
    for (key, item) in items {
        match write(vec![item]).await {
            Ok(()) => stored += 1,
            Err(e) if e.is_unavailable() => {
                return (!done.is_empty() || stored > 0).then_some((stored, done));
            }
            Err(e) => {
                tracing::error!(outbox = name, error = %e, "a spilled outbox write refused by the database on its own; dropped");
                metrics::counter!("holdfast_outbox_dropped_total", "outbox" => name).increment(1);
            }
        }
        done.push(key);
    }
    Some((stored, done))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::deferred::MemoryDeferredLog;
    use parking_lot::Mutex;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// A database that can be taken away and brought back.
    #[derive(Default)]
    struct Table {
        down: AtomicBool,
        /// A zombie database: every write waits for ever.
        hung: AtomicBool,
        rows: Mutex<Vec<u32>>,
        /// A value the table refuses for good (a constraint, say).
        poison: Option<u32>,
    }

    impl Table {
        async fn write(&self, items: Vec<u32>) -> Result<(), StoreError> {
            if self.down.load(Ordering::SeqCst) {
                return Err(refused("test", FailureKind::Refused, "down"));
            }
            if self.hung.load(Ordering::SeqCst) {
                std::future::pending::<()>().await;
            }
            if self.poison.is_some_and(|p| items.contains(&p)) {
                return Err(StoreError::Corrupt("refused".into()));
            }
            self.rows.lock().extend(items);
            Ok(())
        }
    }

    fn outbox(table: &Arc<Table>, spill: &Arc<MemoryDeferredLog<u32>>) -> Outbox<u32> {
        let table = Arc::clone(table);
        Outbox::start(
            "test",
            4,
            Duration::from_secs(5),
            Arc::clone(spill) as Arc<dyn DeferredLog<u32>>,
            move |items| {
                let table = Arc::clone(&table);
                async move { table.write(items).await }
            },
        )
    }

    #[tokio::test]
    async fn an_item_is_answered_only_once_the_database_holds_it() {
        let table = Arc::new(Table::default());
        let spill = Arc::new(MemoryDeferredLog::new(10));
        let outbox = outbox(&table, &spill);
        outbox.push(1).await.expect("stored");
        assert_eq!(*table.rows.lock(), vec![1]);
    }

    #[tokio::test]
    async fn while_the_database_is_away_items_spill_and_come_back() {
        let table = Arc::new(Table::default());
        let spill = Arc::new(MemoryDeferredLog::new(10));
        let outbox = outbox(&table, &spill);
        table.down.store(true, Ordering::SeqCst);
        outbox.push(1).await.expect("held by the spill log");
        outbox.push(2).await.expect("held by the spill log");
        assert_eq!(outbox.spilled(10).await.expect("read"), vec![1, 2]);
        table.down.store(false, Ordering::SeqCst);
        for _ in 0..50 {
            if table.rows.lock().len() == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(*table.rows.lock(), vec![1, 2], "drained in order");
        assert!(outbox.spilled(10).await.expect("read").is_empty());
    }

    #[tokio::test]
    async fn one_refused_item_does_not_take_its_batch_with_it() {
        let table = Arc::new(Table {
            poison: Some(2),
            ..Table::default()
        });
        let spill = Arc::new(MemoryDeferredLog::new(10));
        let outbox = outbox(&table, &spill);
        table.down.store(true, Ordering::SeqCst);
        for item in 1..=3 {
            outbox.push(item).await.expect("held by the spill log");
        }
        table.down.store(false, Ordering::SeqCst);
        for _ in 0..50 {
            if outbox.spilled(10).await.expect("read").is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(
            *table.rows.lock(),
            vec![1, 3],
            "only the refused one is given up"
        );
    }

    #[tokio::test]
    async fn anonymous_items_leave_the_last_fifth_of_the_spill_log_to_others() {
        let table = Arc::new(Table::default());
        let spill = Arc::new(MemoryDeferredLog::new(crate::store::deferred::MAX_DEFERRED));
        let outbox = outbox(&table, &spill);
        table.down.store(true, Ordering::SeqCst);
        outbox.push_anonymous(1).await.expect("room for anybody");
        for item in 1..ANONYMOUS_SPILL_LIMIT as u32 {
            spill.push(&item).await.expect("filled");
        }
        let refused = outbox.push_anonymous(2).await;
        assert!(
            matches!(refused, Err(ref e) if e.is_unavailable()),
            "{refused:?}"
        );
        outbox
            .push(3)
            .await
            .expect("an authenticated write still fits");
    }

    #[tokio::test(start_paused = true)]
    async fn behind_a_hung_write_a_push_goes_to_the_spill_log_after_the_deadline() {
        let table = Arc::new(Table::default());
        let spill = Arc::new(MemoryDeferredLog::new(10));
        let outbox = outbox(&table, &spill);
        table.hung.store(true, Ordering::SeqCst);
        let started = tokio::time::Instant::now();
        outbox.push(1).await.expect("held by the spill log");
        assert_eq!(
            started.elapsed(),
            Duration::from_secs(5),
            "the deadline, no more"
        );
        assert_eq!(outbox.spilled(10).await.expect("read"), vec![1]);
        // An anonymous item is not worth the spill log's room: refused.
        let refused = outbox.push_anonymous(2).await;
        assert!(
            matches!(refused, Err(ref e) if e.is_unavailable()),
            "{refused:?}"
        );
    }

    #[tokio::test]
    async fn a_full_spill_log_refuses_new_items_and_keeps_the_old() {
        let table = Arc::new(Table::default());
        let spill = Arc::new(MemoryDeferredLog::new(2));
        let outbox = outbox(&table, &spill);
        table.down.store(true, Ordering::SeqCst);
        outbox.push(1).await.expect("held");
        outbox.push(2).await.expect("held");
        let refused = outbox.push(3).await;
        assert!(
            matches!(refused, Err(ref e) if e.is_unavailable()),
            "refused, not dropped silently: {refused:?}"
        );
        assert_eq!(outbox.spilled(10).await.expect("read"), vec![1, 2]);
    }
}
