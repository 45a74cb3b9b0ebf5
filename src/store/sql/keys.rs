//! `KeyStore` and the health `Probe` on SQL.

use super::{DEPENDENCY, PgStore, SqliteStore, classify};
use crate::resilience::Call;
use crate::store::{KeyStore, Probe, StoreError, StoredKey, UnixTime};
use async_trait::async_trait;
use sqlx::Row;

/// The key insert, shared by `insert` and `revoke_all` (inside its
/// transaction); a macro because the two executors differ in type.
macro_rules! insert_key {
    ($executor:expr, $key:expr) => {
        sqlx::query(
            "INSERT INTO signing_keys (kid, algorithm, public_key, private_key_sealed, created_at, \
             activates_at, revoked_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&$key.kid)
        .bind(&$key.algorithm)
        .bind(&$key.public_key)
        .bind(&$key.private_key_sealed)
        .bind($key.created_at)
        .bind($key.activates_at)
        .bind($key.revoked_at)
        .execute($executor)
        .await
        .map_err(classify)
    };
}

macro_rules! sql_key_store {
    ($store:ty, $backend:literal) => {
        #[async_trait]
        impl KeyStore for $store {
            async fn list(&self) -> Result<Vec<StoredKey>, StoreError> {
                self.read(|pool| async move {
                        let rows = sqlx::query(
                            "SELECT kid, algorithm, public_key, private_key_sealed, created_at, \
                             activates_at, revoked_at FROM signing_keys ORDER BY activates_at, created_at",
                        )
                        .fetch_all(&pool)
                        .await
                        .map_err(classify)?;
                        rows.iter()
                            .map(|r| {
                                Ok(StoredKey {
                                    kid: r.try_get("kid").map_err(classify)?,
                                    algorithm: r.try_get("algorithm").map_err(classify)?,
                                    public_key: r.try_get("public_key").map_err(classify)?,
                                    private_key_sealed: r.try_get("private_key_sealed").map_err(classify)?,
                                    created_at: r.try_get("created_at").map_err(classify)?,
                                    activates_at: r.try_get("activates_at").map_err(classify)?,
                                    revoked_at: r.try_get("revoked_at").map_err(classify)?,
                                })
                            })
                            .collect()
                    })
                    .await
            }

            async fn insert(&self, key: &StoredKey) -> Result<(), StoreError> {
                self.write(async {
                        insert_key!(&self.pool, key)?;
                        Ok(())
                    })
                    .await
            }

            async fn revoke_all(&self, key: &StoredKey, now: UnixTime) -> Result<u64, StoreError> {
                self.write(async {
                        let mut tx = self.pool.begin().await.map_err(classify)?;
                        sqlx::query("UPDATE signing_keys SET revoked_at = $1 WHERE revoked_at IS NULL")
                            .bind(now)
                            .execute(&mut *tx)
                            .await
                            .map_err(classify)?;
                        insert_key!(&mut *tx, key)?;
                        let sessions = sqlx::query(
                            "UPDATE sessions SET revoked_at = $1 WHERE revoked_at IS NULL AND expires_at > $1",
                        )
                        .bind(now)
                        .execute(&mut *tx)
                        .await
                        .map_err(classify)?
                        .rows_affected();
                        tx.commit().await.map_err(classify)?;
                        Ok(sessions)
                    })
                    .await
            }

            async fn reseal(&self, sealed: &[(String, Vec<u8>)]) -> Result<(), StoreError> {
                self.write(async {
                        let mut tx = self.pool.begin().await.map_err(classify)?;
                        if $backend == "postgres" {
                            // Holds off a live node's rotation until we
                            // commit (SQLite serialises writers already).
                            sqlx::query("LOCK TABLE signing_keys IN SHARE ROW EXCLUSIVE MODE")
                                .execute(&mut *tx)
                                .await
                                .map_err(classify)?;
                        }
                        let stored: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM signing_keys")
                            .fetch_one(&mut *tx)
                            .await
                            .map_err(classify)?;
                        if stored != sealed.len() as i64 {
                            return Err(StoreError::Corrupt(format!(
                                "{stored} signing keys stored, {} re-sealed: keys changed meanwhile, run it again",
                                sealed.len()
                            )));
                        }
                        for (kid, blob) in sealed {
                            let done = sqlx::query(
                                "UPDATE signing_keys SET private_key_sealed = $2 WHERE kid = $1",
                            )
                            .bind(kid)
                            .bind(blob)
                            .execute(&mut *tx)
                            .await
                            .map_err(classify)?;
                            if done.rows_affected() != 1 {
                                return Err(StoreError::Corrupt(format!("signing key {kid} vanished")));
                            }
                        }
                        tx.commit().await.map_err(classify)?;
                        Ok(())
                    })
                    .await
            }
        }

        #[async_trait]
        impl Probe for $store {
            fn name(&self) -> &'static str {
                DEPENDENCY
            }

            fn backend(&self) -> &'static str {
                $backend
            }

            async fn ping(&self) -> Result<(), StoreError> {
                self.guard
                    .run(Call::Read, async {
                        sqlx::query("SELECT 1").execute(&self.pool).await.map_err(classify)?;
                        Ok(())
                    })
                    .await
            }
        }
    };
}

sql_key_store!(PgStore, "postgres");
sql_key_store!(SqliteStore, "sqlite");
