//! `KeyStore` and the health `Probe` on SQL.

use super::{DEPENDENCY, PgStore, SqliteStore, classify};
use crate::resilience::Call;
use crate::store::{KeyState, KeyStore, Probe, StoreError, StoredKey};
use async_trait::async_trait;
use sqlx::Row;

macro_rules! sql_key_store {
    ($store:ty, $backend:literal) => {
        #[async_trait]
        impl KeyStore for $store {
            async fn list(&self) -> Result<Vec<StoredKey>, StoreError> {
                self.read(|pool| async move {
                        let rows = sqlx::query(
                            "SELECT kid, algorithm, public_key, private_key_sealed, state, created_at \
                             FROM signing_keys ORDER BY created_at",
                        )
                        .fetch_all(&pool)
                        .await
                        .map_err(classify)?;
                        rows.iter()
                            .map(|r| {
                                let state: String = r.try_get("state").map_err(classify)?;
                                Ok(StoredKey {
                                    kid: r.try_get("kid").map_err(classify)?,
                                    algorithm: r.try_get("algorithm").map_err(classify)?,
                                    public_key: r.try_get("public_key").map_err(classify)?,
                                    private_key_sealed: r.try_get("private_key_sealed").map_err(classify)?,
                                    state: KeyState::parse(&state)?,
                                    created_at: r.try_get("created_at").map_err(classify)?,
                                })
                            })
                            .collect()
                    })
                    .await
            }

            async fn insert(&self, key: &StoredKey) -> Result<(), StoreError> {
                self.write(async {
                        sqlx::query(
                            "INSERT INTO signing_keys (kid, algorithm, public_key, private_key_sealed, state, created_at) \
                             VALUES ($1, $2, $3, $4, $5, $6)",
                        )
                        .bind(&key.kid)
                        .bind(&key.algorithm)
                        .bind(&key.public_key)
                        .bind(&key.private_key_sealed)
                        .bind(key.state.as_str())
                        .bind(key.created_at)
                        .execute(&self.pool)
                        .await
                        .map_err(classify)?;
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
