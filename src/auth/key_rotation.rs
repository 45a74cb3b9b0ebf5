//! Changing the signing keys, as one operation for every caller (the admin
//! API and the `holdfast keys` command): the ring changes, every node hears
//! of it, the audit log records who did it. Two copies of this sequence
//! had already drifted apart in what they announced.

use crate::auth::audit::Audit;
use crate::auth::error::KeyError;
use crate::auth::keys::KeyRing;
use crate::cache::bus::{Bus, Invalidation, Subscriber};
use crate::resilience::failure::FailureKind;
use crate::store::{StoreError, UnixTime};
use serde_json::json;
use std::sync::Arc;

/// How the change reaches the other nodes and the audit log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Through the bus's and the audit log's outboxes (held by the
    /// database or their spill logs before the call returns): a running
    /// server.
    Queued,
    /// Stored before the operation returns: a process about to exit (the
    /// CLI), whose queues would die with it.
    Wait,
}

/// What a key change did.
#[derive(Debug)]
pub struct KeyChange {
    /// The new key.
    pub kid: String,
    /// Revoke-all only: how many sessions it revoked.
    pub sessions_revoked: Option<u64>,
    /// The announcement that could not be held. Not
    /// fatal — the keys are changed and every node re-reads them within
    /// seconds anyway — but the operator should hear of it.
    pub not_announced: Option<String>,
    /// The audit event that could not be held.
    pub not_audited: Option<String>,
}

pub struct KeyRotation {
    keys: Arc<KeyRing>,
    bus: Arc<Bus>,
    audit: Arc<Audit>,
}

impl KeyRotation {
    pub fn new(keys: Arc<KeyRing>, bus: Arc<Bus>, audit: Arc<Audit>) -> Self {
        Self { keys, bus, audit }
    }

    /// Announces a new key as standby; it signs after `jwks_max_age`.
    /// `actor` is who asked, for the audit log.
    pub async fn rotate(
        &self,
        actor: &str,
        delivery: Delivery,
        now: UnixTime,
    ) -> Result<KeyChange, KeyError> {
        let kid = self.keys.rotate(now).await?;
        let detail = json!({"kid": kid, "by": actor});
        let mut change = KeyChange {
            kid,
            sessions_revoked: None,
            not_announced: None,
            not_audited: None,
        };
        self.announce(&mut change, "key_rotated", detail, delivery, now)
            .await;
        acknowledged(change, delivery)
    }

    /// Key leak: every key revoked, a new one signing now, every session
    /// revoked.
    pub async fn revoke_all(
        &self,
        actor: &str,
        delivery: Delivery,
        now: UnixTime,
    ) -> Result<KeyChange, KeyError> {
        let (kid, sessions) = self.keys.revoke_all(now).await?;
        let detail = json!({"kid": kid, "sessions_revoked": sessions, "by": actor});
        let mut change = KeyChange {
            kid,
            sessions_revoked: Some(sessions),
            not_announced: None,
            not_audited: None,
        };
        self.announce(&mut change, "keys_revoked_all", detail, delivery, now)
            .await;
        acknowledged(change, delivery)
    }

    /// Tells running nodes (invalidation log and pub/sub) and the audit log.
    async fn announce(
        &self,
        change: &mut KeyChange,
        kind: &'static str,
        detail: serde_json::Value,
        delivery: Delivery,
        now: UnixTime,
    ) {
        let event = Invalidation::KeysChanged {
            revoked_all: change.sessions_revoked.is_some(),
        };
        let announced = match delivery {
            Delivery::Queued => self.bus.publish(event, now).await,
            Delivery::Wait => self.bus.publish_and_wait(event, now).await,
        };
        if let Err(e) = announced {
            change.not_announced = Some(e.to_string());
        }
        let audited = match delivery {
            Delivery::Queued => self.audit.record(kind, None, detail).await,
            Delivery::Wait => self.audit.record_and_wait(kind, None, detail).await,
        };
        if let Err(e) = audited {
            change.not_audited = Some(e.to_string());
        }
    }
}

/// A running server answers a change 2xx only once its announcement and
/// its audit event are held (DESIGN.md §4); otherwise 503: the keys did
/// change (a retry changes them again, which is harmless), but the
/// operator must not be told it was all recorded. The CLI reports the two
/// fields itself.
fn acknowledged(change: KeyChange, delivery: Delivery) -> Result<KeyChange, KeyError> {
    let missing = change
        .not_announced
        .as_ref()
        .or(change.not_audited.as_ref());
    match (delivery, missing) {
        (Delivery::Queued, Some(reason)) => Err(KeyError::Store(StoreError::Unavailable {
            dependency: "database",
            kind: FailureKind::QueueFull,
            reason: format!("key {} changed but not recorded: {reason}", change.kid),
        })),
        _ => Ok(change),
    }
}

/// Reloads the ring when another node rotates or revokes keys.
pub struct ReloadOnChange(pub Arc<KeyRing>);

impl Subscriber for ReloadOnChange {
    fn apply(&self, event: &Invalidation, _: UnixTime) {
        if matches!(event, Invalidation::KeysChanged { .. }) {
            self.0.reload_soon();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(not_audited: Option<&str>) -> KeyChange {
        KeyChange {
            kid: "k1".into(),
            sessions_revoked: Some(3),
            not_announced: None,
            not_audited: not_audited.map(str::to_string),
        }
    }

    #[test]
    fn a_server_does_not_answer_a_change_it_could_not_record() {
        assert!(acknowledged(change(None), Delivery::Queued).is_ok());
        let refused = acknowledged(change(Some("outbox full")), Delivery::Queued);
        assert!(
            matches!(refused, Err(KeyError::Store(ref e)) if e.is_unavailable()),
            "a 503, not a 200: {refused:?}"
        );
        // The CLI reports the two fields itself.
        let told = acknowledged(change(Some("outbox full")), Delivery::Wait).expect("reported");
        assert_eq!(told.not_audited.as_deref(), Some("outbox full"));
    }
}
