//! The in-process session cache of the embedded mode (and of development
//! without Redis). Bounded: past `capacity` it drops dead entries first, then
//! arbitrary ones, which is safe because the SQL ledger holds the truth.

use crate::store::{Rotation, Session, SessionCache, StoreError, Swap, UnixTime};
use async_trait::async_trait;
use parking_lot::Mutex;
use std::collections::{HashMap, HashSet};
use uuid::Uuid;

struct Entry {
    session: Session,
    /// Refresh hashes this session has rotated away from.
    used: HashSet<String>,
}

pub struct MemorySessionCache {
    capacity: usize,
    entries: Mutex<HashMap<Uuid, Entry>>,
}

impl MemorySessionCache {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn make_room(entries: &mut HashMap<Uuid, Entry>, capacity: usize, now: UnixTime) {
        if entries.len() < capacity {
            return;
        }
        entries.retain(|_, e| e.session.is_live(now));
        while entries.len() >= capacity {
            let Some(victim) = entries.keys().next().copied() else {
                break;
            };
            entries.remove(&victim);
        }
    }
}

#[async_trait]
impl SessionCache for MemorySessionCache {
    fn backend(&self) -> &'static str {
        "memory"
    }

    async fn put(&self, session: &Session) -> Result<(), StoreError> {
        let mut entries = self.entries.lock();
        Self::make_room(&mut entries, self.capacity, session.last_used_at);
        entries.entry(session.id).or_insert_with(|| Entry {
            session: session.clone(),
            used: HashSet::new(),
        });
        Ok(())
    }

    async fn get(&self, id: Uuid) -> Result<Option<Session>, StoreError> {
        Ok(self.entries.lock().get(&id).map(|e| e.session.clone()))
    }

    async fn rotate(&self, swap: Swap<'_>) -> Result<Option<Rotation>, StoreError> {
        let mut entries = self.entries.lock();
        let Some(entry) = entries.get_mut(&swap.id) else {
            return Ok(None);
        };
        if entry.used.contains(swap.presented) {
            return Ok(Some(Rotation::AlreadyRotated(Some(entry.session.clone()))));
        }
        if !entry.session.is_live(swap.at) {
            return Ok(Some(Rotation::Gone));
        }
        if entry.session.refresh_hash != swap.presented {
            return Ok(Some(Rotation::Mismatch));
        }
        entry.used.insert(swap.presented.to_string());
        entry.session.refresh_hash = swap.next.to_string();
        entry.session.last_used_at = swap.at;
        entry.session.generation += 1;
        Ok(Some(Rotation::Rotated(entry.session.clone())))
    }

    async fn revoke(&self, id: Uuid, now: UnixTime) -> Result<(), StoreError> {
        if let Some(entry) = self.entries.lock().get_mut(&id) {
            entry.session.revoked_at.get_or_insert(now);
        }
        Ok(())
    }

    async fn catch_up(&self, session: &Session, used: &[&str]) -> Result<(), StoreError> {
        let mut entries = self.entries.lock();
        Self::make_room(&mut entries, self.capacity, session.last_used_at);
        let entry = entries.entry(session.id).or_insert_with(|| Entry {
            session: session.clone(),
            used: HashSet::new(),
        });
        let revoked = entry.session.revoked_at.or(session.revoked_at);
        if session.generation > entry.session.generation {
            entry.session = session.clone();
        }
        entry.session.revoked_at = revoked;
        entry.used.extend(used.iter().map(|h| h.to_string()));
        Ok(())
    }
}
