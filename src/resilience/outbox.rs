//! Best-effort durable writes that must never hold up a request: audit
//! events and invalidation-log rows. The request pushes onto a bounded
//! queue and goes on; one task writes batches to the database and, while
//! it cannot, keeps the batch and retries with capped backoff. When the
//! queue is full (a long outage under load) new items are dropped, counted
//! and logged: the request still never waits.

use crate::store::StoreError;
use std::future::Future;
use std::time::Duration;
use tokio::sync::mpsc;

/// Items written per database round trip.
const BATCH: usize = 100;

pub struct Outbox<T> {
    name: &'static str,
    tx: mpsc::Sender<T>,
}

impl<T: Clone + Send + 'static> Outbox<T> {
    /// Starts the writer task. `write` stores one batch; an `Unavailable`
    /// answer keeps the batch for a retry, any other error drops it.
    pub fn start<F, Fut>(name: &'static str, capacity: usize, write: F) -> Self
    where
        F: Fn(Vec<T>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), StoreError>> + Send,
    {
        let (tx, mut rx) = mpsc::channel::<T>(capacity);
        tokio::spawn(async move {
            let mut batch: Vec<T> = Vec::with_capacity(BATCH);
            let mut backoff = Duration::from_millis(100);
            loop {
                if batch.is_empty() {
                    if rx.recv_many(&mut batch, BATCH).await == 0 {
                        return; // every sender dropped
                    }
                } else if batch.len() < BATCH {
                    while batch.len() < BATCH {
                        match rx.try_recv() {
                            Ok(item) => batch.push(item),
                            Err(_) => break,
                        }
                    }
                }
                match write(batch.clone()).await {
                    Ok(()) => {
                        batch.clear();
                        backoff = Duration::from_millis(100);
                    }
                    Err(e) if e.is_unavailable() => {
                        tracing::debug!(outbox = name, pending = batch.len(), error = %e, "outbox write deferred");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                    }
                    Err(e) => {
                        tracing::error!(outbox = name, dropped = batch.len(), error = %e, "outbox write failed; batch dropped");
                        metrics::counter!("holdfast_outbox_dropped_total", "outbox" => name)
                            .increment(batch.len() as u64);
                        batch.clear();
                    }
                }
            }
        });
        Self { name, tx }
    }

    /// Queues `item` without waiting.
    pub fn push(&self, item: T) {
        if self.tx.try_send(item).is_err() {
            metrics::counter!("holdfast_outbox_dropped_total", "outbox" => self.name).increment(1);
            tracing::warn!(outbox = self.name, "outbox full; item dropped");
        }
    }
}
