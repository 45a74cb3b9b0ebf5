//! A primary, its streaming replica and Redis, with a configuration naming
//! all three (a replica needs a PostgreSQL primary in the same file), for
//! the read-only mode tests.

use super::TestApp;
use super::procs::{Postgres, Redis};
use sqlx::Connection;
use std::time::{Duration, Instant};

pub struct ReplicaStack {
    pub primary: Postgres,
    pub replica: Postgres,
    pub redis: Redis,
    pub data: tempfile::TempDir,
}

impl ReplicaStack {
    /// `timeout` is the database timeout; `extra` is appended to the
    /// configuration. Breakers open after 3 failed calls and probe again
    /// after 1 s.
    pub async fn start(timeout: &str, extra: &str) -> Self {
        let (primary, redis) = tokio::task::spawn_blocking(|| (Postgres::start(), Redis::start()))
            .await
            .expect("servers");
        // pg_basebackup blocks: keep it off the async workers.
        let replica = tokio::task::block_in_place(|| Postgres::start_replica(&primary));
        let data = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            data.path().join("holdfast.toml"),
            format!(
                "issuer = \"http://holdfast.test\"\naudience = \"holdfast-tests\"\ndata_dir = \"{}\"\n\
                 [database]\nurl = \"{}\"\ntimeout = \"{timeout}\"\nreplica_url = \"{}\"\n\
                 [redis]\nurl = \"{}\"\n\
                 [breaker]\nminimum_calls = 3\nopen_wait = \"1s\"\nopen_wait_max = \"2s\"\nhalf_open_permits = 1\n{extra}",
                data.path().display(),
                primary.url(),
                replica.url(),
                redis.url()
            ),
        )
        .expect("config");
        Self {
            primary,
            replica,
            redis,
            data,
        }
    }

    pub async fn app(&self) -> TestApp {
        TestApp::spawn(&self.data.path().join("holdfast.toml"), None).await
    }

    /// Waits until the replica has replayed the user's registration.
    pub async fn await_replica(&self, username: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !replica_has_user(&self.replica.url(), username).await {
            assert!(Instant::now() < deadline, "replica never caught up");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

async fn replica_has_user(url: &str, username: &str) -> bool {
    let Ok(mut conn) = sqlx::PgConnection::connect(url).await else {
        return false;
    };
    sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM users WHERE username = $1")
        .bind(username)
        .fetch_one(&mut conn)
        .await
        .is_ok_and(|n| n == 1)
}
