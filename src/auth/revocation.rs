//! Revocations held in memory on every node, so verification can honour them
//! with PostgreSQL and Redis both gone. Bounded by time: an entry is kept
//! only as long as a token it could refuse can still be valid
//! (`horizon` = access-token lifetime + leeway), then purged.
//!
//! The same set holds each recently changed user's current roles, so a
//! token issued before a role was taken away loses that role at
//! verification (DESIGN.md §2: a token never carries more authority than
//! its user holds now) without a store on the hot path.
//!
//! Every verification reads these maps, from every core at once; writes are
//! rare (logouts, password changes, role changes). `papaya` maps are read without
//! writing shared memory, where each read of an `RwLock<HashMap>` took the
//! lock word's cache line from the other core.

use crate::cache::bus::{Invalidation, Subscriber};
use crate::store::UnixTime;
use papaya::HashMap;
use uuid::Uuid;

pub struct RevocationSet {
    horizon: i64,
    /// How long a user's changed roles are remembered: the refresh-token
    /// lifetime (at least `horizon`), because a refresh served from a
    /// session's snapshot while the database is down must not re-issue a
    /// role lost at any time since that snapshot was taken.
    roles_horizon: i64,
    /// Revoked session id → when the entry may be forgotten.
    sessions: HashMap<Uuid, UnixTime>,
    /// User id → tokens issued before this instant are refused.
    users: HashMap<Uuid, UnixTime>,
    /// User id → the roles they hold now, as of a change.
    roles: HashMap<Uuid, CurrentRoles>,
    /// Deleted role → when (ms): taken from every holder at once.
    deleted_roles: HashMap<String, i64>,
}

/// A user's roles after a change, and when (milliseconds: two changes in
/// one second must still be ordered).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CurrentRoles {
    pub roles: Vec<String>,
    pub at_ms: i64,
}

impl RevocationSet {
    pub fn new(horizon_secs: i64) -> Self {
        Self::with_roles_horizon(horizon_secs, horizon_secs)
    }

    /// `roles_horizon_secs` is how long changed roles are remembered (the
    /// refresh-token lifetime); never less than `horizon_secs`.
    pub fn with_roles_horizon(horizon_secs: i64, roles_horizon_secs: i64) -> Self {
        let set = Self {
            horizon: horizon_secs,
            roles_horizon: roles_horizon_secs.max(horizon_secs),
            sessions: HashMap::new(),
            users: HashMap::new(),
            roles: HashMap::new(),
            deleted_roles: HashMap::new(),
        };
        set.export();
        set
    }

    /// `holdfast_revocations{kind}`: what the set holds, so an operator
    /// sees it grow with logouts and shrink as entries age out.
    fn export(&self) {
        metrics::gauge!("holdfast_revocations", "kind" => "sessions")
            .set(self.sessions.len() as f64);
        metrics::gauge!("holdfast_revocations", "kind" => "users").set(self.users.len() as f64);
    }

    pub fn roles_horizon(&self) -> i64 {
        self.roles_horizon
    }

    /// Records `user`'s roles after a change at `at_ms`. The newest change
    /// wins; two at the same millisecond keep only what both grant (an
    /// unordered pair must never grant more than either).
    pub fn set_user_roles(&self, user: Uuid, roles: &[String], at_ms: i64) {
        let incoming = CurrentRoles {
            roles: roles.to_vec(),
            at_ms,
        };
        self.roles.pin().update_or_insert_with(
            user,
            |known| match known.at_ms.cmp(&at_ms) {
                std::cmp::Ordering::Greater => known.clone(),
                std::cmp::Ordering::Less => incoming.clone(),
                std::cmp::Ordering::Equal => CurrentRoles {
                    roles: known
                        .roles
                        .iter()
                        .filter(|r| roles.contains(r))
                        .cloned()
                        .collect(),
                    at_ms,
                },
            },
            || incoming.clone(),
        );
    }

    /// Records that role `name` was deleted at `at_ms`.
    pub fn role_deleted(&self, name: &str, at_ms: i64) {
        self.deleted_roles.pin().update_or_insert(
            name.to_string(),
            |known| (*known).max(at_ms),
            at_ms,
        );
    }

    /// `roles`, carried by a token of `user` issued at `issued_at`, less
    /// any the user has lost since: `None` when nothing was lost (the
    /// common case, without an allocation). A snapshot of unknown age
    /// passes `UnixTime::MIN`.
    pub fn strip_lost_roles(
        &self,
        user: Uuid,
        roles: &[String],
        issued_at: UnixTime,
    ) -> Option<Vec<String>> {
        if roles.is_empty() {
            return None;
        }
        let current = self.roles.pin();
        let current = current.get(&user);
        let deleted = self.deleted_roles.pin();
        if current.is_none() && deleted.is_empty() {
            return None;
        }
        let issued_ms = issued_at.saturating_mul(1000);
        let lost = |r: &String| {
            current.is_some_and(|c| !c.roles.contains(r))
                || deleted.get(r).is_some_and(|&at| issued_ms <= at)
        };
        if !roles.iter().any(lost) {
            return None;
        }
        Some(roles.iter().filter(|r| !lost(r)).cloned().collect())
    }

    /// The user's roles as of their last change, if it is remembered.
    pub fn current_roles(&self, user: Uuid) -> Option<Vec<String>> {
        self.roles.pin().get(&user).map(|c| c.roles.clone())
    }

    pub fn horizon(&self) -> i64 {
        self.horizon
    }

    pub fn revoke_session(&self, id: Uuid, now: UnixTime) {
        self.sessions.pin().insert(id, now + self.horizon);
        self.export();
    }

    pub fn set_user_not_before(&self, user: Uuid, at: UnixTime) {
        self.users
            .pin()
            .update_or_insert(user, |earlier| (*earlier).max(at), at);
        self.export();
    }

    pub fn is_session_revoked(&self, id: Uuid) -> bool {
        self.sessions.pin().contains_key(&id)
    }

    /// Is a token of `user` issued at `iat` refused by a not-before time?
    pub fn is_user_token_revoked(&self, user: Uuid, iat: UnixTime) -> bool {
        self.users.pin().get(&user).is_some_and(|nb| iat < *nb)
    }

    /// Drops entries no live token can be affected by any more.
    pub fn purge(&self, now: UnixTime) {
        self.sessions.pin().retain(|_, forget_at| *forget_at > now);
        let horizon = self.horizon;
        self.users.pin().retain(|_, nb| *nb + horizon > now);
        let roles_horizon_ms = self.roles_horizon.saturating_mul(1000);
        let now_ms = now.saturating_mul(1000);
        self.roles
            .pin()
            .retain(|_, c| c.at_ms.saturating_add(roles_horizon_ms) > now_ms);
        self.deleted_roles
            .pin()
            .retain(|_, at| at.saturating_add(roles_horizon_ms) > now_ms);
        self.export();
    }

    pub fn len(&self) -> usize {
        self.sessions.len() + self.users.len() + self.roles.len() + self.deleted_roles.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Subscriber for RevocationSet {
    fn apply(&self, event: &Invalidation, now: UnixTime) {
        match *event {
            Invalidation::SessionRevoked { sid } => self.revoke_session(sid, now),
            Invalidation::UserNotBefore { user, at } | Invalidation::UserDisabled { user, at } => {
                self.set_user_not_before(user, at)
            }
            Invalidation::UserRolesChanged {
                user,
                roles: Some(ref roles),
                at_ms,
            } => self.set_user_roles(user, roles, at_ms),
            Invalidation::RoleDeleted { ref name, at_ms } => self.role_deleted(name, at_ms),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_live_exactly_as_long_as_a_token_could() {
        let set = RevocationSet::new(100);
        let (sid, user) = (Uuid::new_v4(), Uuid::new_v4());
        set.revoke_session(sid, 1_000);
        set.set_user_not_before(user, 1_000);
        assert!(set.is_session_revoked(sid));
        assert!(set.is_user_token_revoked(user, 999));
        assert!(!set.is_user_token_revoked(user, 1_000));
        set.purge(1_099);
        assert!(set.is_session_revoked(sid));
        set.purge(1_100);
        assert!(set.is_empty());
    }

    #[test]
    fn lost_roles_are_stripped_and_the_newest_change_wins() {
        let set = RevocationSet::with_roles_horizon(100, 1_000);
        let user = Uuid::new_v4();
        let held = vec!["admin".to_string(), "ops".to_string()];
        let strip = |roles: &[String]| set.strip_lost_roles(user, roles, 4);
        assert_eq!(strip(&held), None, "no change known");
        set.set_user_roles(user, &["ops".to_string()], 5_000);
        assert_eq!(strip(&held), Some(vec!["ops".into()]));
        // An older event arriving late changes nothing.
        set.set_user_roles(user, &held, 4_999);
        assert_eq!(strip(&held), Some(vec!["ops".into()]));
        // The same millisecond, in either order: only what both grant.
        set.set_user_roles(user, &held, 5_000);
        assert_eq!(strip(&held), Some(vec!["ops".into()]));
        // A later grant restores it.
        set.set_user_roles(user, &held, 6_000);
        assert_eq!(strip(&held), None);
        // Remembered for the roles horizon, not the token horizon.
        set.purge(6 + 200);
        assert!(set.current_roles(user).is_some());
        set.purge(6 + 1_000);
        assert!(set.current_roles(user).is_none());
    }

    #[test]
    fn a_deleted_role_leaves_tokens_issued_before_it() {
        let set = RevocationSet::with_roles_horizon(100, 1_000);
        let user = Uuid::new_v4();
        let held = vec!["auditor".to_string(), "ops".to_string()];
        set.role_deleted("auditor", 10_000);
        assert_eq!(
            set.strip_lost_roles(user, &held, 10),
            Some(vec!["ops".into()]),
            "issued in the same second: stripped (fail closed)"
        );
        assert_eq!(set.strip_lost_roles(user, &held, 11), None, "issued after");
        assert_eq!(
            set.strip_lost_roles(user, &held, UnixTime::MIN),
            Some(vec!["ops".into()])
        );
    }
}
