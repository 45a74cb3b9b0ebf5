//! `KeyStore` on SQL.

use super::SqlStore;
use super::pool::{Columns, Exec, Pool, arg};
use crate::store::{KeyStore, StoreError, StoredKey, UnixTime};
use async_trait::async_trait;
use sqlx::FromRow;

impl<'r, R: Columns> FromRow<'r, R> for StoredKey {
    fn from_row(row: &'r R) -> Result<Self, sqlx::Error> {
        Ok(StoredKey {
            kid: row.col("kid")?,
            algorithm: row.col("algorithm")?,
            public_key: row.col("public_key")?,
            private_key_sealed: row.col("private_key_sealed")?,
            created_at: row.col("created_at")?,
            activates_at: row.col("activates_at")?,
            revoked_at: row.col("revoked_at")?,
        })
    }
}

/// The key insert, shared by `insert` and `revoke_all` (inside its
/// transaction).
async fn insert_key(on: Exec<'_>, key: &StoredKey) -> Result<u64, StoreError> {
    let args = [
        arg(&key.kid),
        arg(&key.algorithm),
        arg(&key.public_key),
        arg(&key.private_key_sealed),
        arg(key.created_at),
        arg(key.activates_at),
        arg(key.revoked_at),
    ];
    on.execute(
        "INSERT INTO signing_keys (kid, algorithm, public_key, private_key_sealed, created_at, \
         activates_at, revoked_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        &args,
    )
    .await
}

impl SqlStore {
    async fn insert_one_key(&self, key: &StoredKey) -> Result<(), StoreError> {
        insert_key(self.pool.acquire().await?.exec(), key).await?;
        Ok(())
    }

    async fn revoke_all_in_tx(&self, key: &StoredKey, now: UnixTime) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await?;
        tx.exec()
            .execute(
                "UPDATE signing_keys SET revoked_at = $1 WHERE revoked_at IS NULL",
                &[arg(now)],
            )
            .await?;
        insert_key(tx.exec(), key).await?;
        let sessions = tx
            .exec()
            .execute(
                "UPDATE sessions SET revoked_at = $1 WHERE revoked_at IS NULL AND expires_at > $1",
                &[arg(now)],
            )
            .await?;
        tx.commit().await?;
        Ok(sessions)
    }

    async fn reseal_in_tx(&self, sealed: &[(String, Vec<u8>)]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        if let Pool::Pg(_) = self.pool {
            // Holds off a live node's rotation until we commit (SQLite
            // serialises writers already).
            tx.exec()
                .execute("LOCK TABLE signing_keys IN SHARE ROW EXCLUSIVE MODE", &[])
                .await?;
        }
        let stored: i64 = tx
            .exec()
            .scalar("SELECT COUNT(*) FROM signing_keys", &[])
            .await?;
        if stored != sealed.len() as i64 {
            return Err(StoreError::Corrupt(format!(
                "{stored} signing keys stored, {} re-sealed: keys changed meanwhile, run it again",
                sealed.len()
            )));
        }
        for (kid, blob) in sealed {
            let done = tx
                .exec()
                .execute(
                    "UPDATE signing_keys SET private_key_sealed = $2 WHERE kid = $1",
                    &[arg(kid), arg(blob)],
                )
                .await?;
            if done != 1 {
                return Err(StoreError::Corrupt(format!("signing key {kid} vanished")));
            }
        }
        tx.commit().await
    }
}

#[async_trait]
impl KeyStore for SqlStore {
    async fn list(&self) -> Result<Vec<StoredKey>, StoreError> {
        self.read_all(
            "SELECT kid, algorithm, public_key, private_key_sealed, created_at, \
                 activates_at, revoked_at FROM signing_keys ORDER BY activates_at, created_at",
            &[],
        )
        .await
    }

    async fn insert(&self, key: &StoredKey) -> Result<(), StoreError> {
        self.write(self.insert_one_key(key)).await
    }

    async fn revoke_all(&self, key: &StoredKey, now: UnixTime) -> Result<u64, StoreError> {
        self.write(self.revoke_all_in_tx(key, now)).await
    }

    async fn reseal(&self, sealed: &[(String, Vec<u8>)]) -> Result<(), StoreError> {
        self.write(self.reseal_in_tx(sealed)).await
    }
}
