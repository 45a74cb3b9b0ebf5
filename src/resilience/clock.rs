//! `holdfast_clock_skew_seconds`: this node's clock minus PostgreSQL's.
//! Every node checks `exp`, `nbf` and `iat` against its own clock with the
//! configured leeway; a node whose clock drifts by more than half of it
//! starts refusing fresh tokens (or accepting expired ones) long before
//! anything else looks wrong, so health names it. PostgreSQL is the clock
//! all nodes share. The embedded SQLite runs on this node's own clock:
//! nothing to compare, no series.

use crate::store::StoreError;
use parking_lot::Mutex;
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How often the skew is measured.
const MEASURE_EVERY: Duration = Duration::from_secs(30);

/// A clock to compare with: the database's, read through its guard.
#[async_trait::async_trait]
pub trait ServerClock: Send + Sync {
    /// The server's time now, in seconds since the Unix epoch.
    async fn server_epoch(&self) -> Result<f64, StoreError>;
}

pub struct ClockSkew {
    leeway: Duration,
    /// The last measured skew in seconds; `None` until one succeeded.
    skew: Mutex<Option<f64>>,
}

impl ClockSkew {
    /// Measures now and every `MEASURE_EVERY` in the background.
    pub fn start(source: Arc<dyn ServerClock>, leeway: Duration) -> Arc<Self> {
        let skew = Arc::new(Self {
            leeway,
            skew: Mutex::new(None),
        });
        spawn_measurer(Arc::downgrade(&skew), source);
        skew
    }

    /// One measurement. The server read its clock somewhere inside the
    /// round trip; its middle is the best guess, so half the round trip is
    /// accounted for.
    pub async fn measure(&self, source: &dyn ServerClock) -> Result<f64, StoreError> {
        let sent = unix_now();
        let server = source.server_epoch().await?;
        let received = unix_now();
        let skew = (sent + received) / 2.0 - server;
        *self.skew.lock() = Some(skew);
        metrics::gauge!("holdfast_clock_skew_seconds").set(skew);
        Ok(skew)
    }

    pub fn skew(&self) -> Option<f64> {
        *self.skew.lock()
    }

    /// The health warning, when the skew is past half the leeway.
    pub fn warning(&self) -> Option<String> {
        let skew = self.skew()?;
        let leeway = self.leeway.as_secs_f64();
        (skew.abs() > leeway / 2.0)
            .then(|| format!("clock skew {skew:.1}s exceeds half the {leeway:.0}s leeway"))
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn spawn_measurer(skew: Weak<ClockSkew>, source: Arc<dyn ServerClock>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(MEASURE_EVERY);
        loop {
            tick.tick().await;
            let Some(skew) = skew.upgrade() else { return };
            if let Err(e) = skew.measure(source.as_ref()).await {
                tracing::debug!(error = %e, "clock skew not measured");
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed(f64);

    #[async_trait::async_trait]
    impl ServerClock for Fixed {
        async fn server_epoch(&self) -> Result<f64, StoreError> {
            Ok(unix_now() - self.0)
        }
    }

    fn skew(leeway: u64) -> ClockSkew {
        ClockSkew {
            leeway: Duration::from_secs(leeway),
            skew: Mutex::new(None),
        }
    }

    #[tokio::test]
    async fn a_skew_past_half_the_leeway_warns() {
        let clock = skew(30);
        assert_eq!(clock.warning(), None, "nothing measured, nothing said");
        let measured = clock.measure(&Fixed(20.0)).await.expect("measured");
        assert!((measured - 20.0).abs() < 0.5, "{measured}");
        let warning = clock.warning().expect("20 s > 15 s");
        assert!(warning.contains("exceeds half the 30s leeway"), "{warning}");
        clock.measure(&Fixed(-20.0)).await.expect("measured");
        assert!(clock.warning().is_some(), "behind counts too");
        clock.measure(&Fixed(10.0)).await.expect("measured");
        assert_eq!(clock.warning(), None);
    }
}
