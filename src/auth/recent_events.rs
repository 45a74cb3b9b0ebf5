//! How many security events of each kind this node made in the last hour,
//! counted in memory as each event is made (`audit::event`). The status
//! page shows these counts; reading them back from the audit table would
//! need PostgreSQL, and the page must still render while it is away.
//!
//! Each kind keeps one counter per minute of the last hour in a ring, so
//! memory is bounded by the number of kinds (a fixed set of `&'static str`)
//! and a count is exact to the minute.

use crate::store::UnixTime;
use parking_lot::Mutex;
use std::collections::{BTreeMap, HashMap};

/// Minutes in the window.
const SLOTS: usize = 60;

/// One kind's ring: for each slot, the minute it counts and its count.
type Ring = [(i64, u64); SLOTS];

#[derive(Default)]
pub struct RecentEvents {
    kinds: Mutex<HashMap<&'static str, Ring>>,
}

impl RecentEvents {
    /// Counts one event of `kind` made at `at`.
    pub fn note(&self, kind: &'static str, at: UnixTime) {
        let minute = at.div_euclid(60);
        let mut kinds = self.kinds.lock();
        let ring = kinds.entry(kind).or_insert([(i64::MIN, 0); SLOTS]);
        let slot = &mut ring[minute.rem_euclid(SLOTS as i64) as usize];
        if slot.0 != minute {
            // The slot last counted a minute an hour (or more) ago.
            *slot = (minute, 0);
        }
        slot.1 += 1;
    }

    /// Events per kind made within the hour before `now`; kinds with none
    /// in that hour are left out.
    pub fn last_hour(&self, now: UnixTime) -> BTreeMap<&'static str, u64> {
        let current = now.div_euclid(60);
        let oldest = current - (SLOTS as i64 - 1);
        let kinds = self.kinds.lock();
        kinds
            .iter()
            .map(|(kind, ring)| {
                let count = ring
                    .iter()
                    .filter(|(minute, _)| (oldest..=current).contains(minute))
                    .map(|(_, count)| count)
                    .sum();
                (*kind, count)
            })
            .filter(|(_, count)| *count > 0)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_kind_and_forgets_what_is_older_than_an_hour() {
        let recent = RecentEvents::default();
        let start = 1_700_000_000;
        recent.note("login_failed", start);
        recent.note("login_failed", start + 30);
        recent.note("refresh_reuse", start + 600);
        let counts = recent.last_hour(start + 601);
        assert_eq!(counts.get("login_failed"), Some(&2));
        assert_eq!(counts.get("refresh_reuse"), Some(&1));
        // Past the hour of the first two, only the later one is left.
        let counts = recent.last_hour(start + 3700);
        assert_eq!(counts.get("login_failed"), None);
        assert_eq!(counts.get("refresh_reuse"), Some(&1));
        // A slot reused an hour later starts again from zero.
        recent.note("login_failed", start + 3600);
        assert_eq!(recent.last_hour(start + 3600).get("login_failed"), Some(&1));
    }
}
