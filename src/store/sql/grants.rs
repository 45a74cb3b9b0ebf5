//! `ApiKeyStore` and `RoleStore` on SQL. Lists (scopes, permissions) are
//! stored space-separated: their items can hold no spaces, and one column
//! keeps a key or role a single row.

use super::SqlStore;
use super::pool::{Columns, arg, bad_value};
use crate::store::{ApiKey, ApiKeyStore, Role, RoleStore, StoreError, UnixTime, UserStatus};
use async_trait::async_trait;
use sqlx::{AssertSqlSafe, FromRow};
use uuid::Uuid;

const KEY_COLUMNS: &str = "k.id, k.user_id, k.name, k.prefix, k.secret_hash, k.scopes, k.created_at, k.expires_at, k.revoked_at";

fn words(text: &str) -> Vec<String> {
    text.split_whitespace().map(str::to_string).collect()
}

impl<'r, R: Columns> FromRow<'r, R> for ApiKey {
    fn from_row(row: &'r R) -> Result<Self, sqlx::Error> {
        Ok(ApiKey {
            id: row.col("id")?,
            user_id: row.col("user_id")?,
            name: row.col("name")?,
            prefix: row.col("prefix")?,
            secret_hash: row.col("secret_hash")?,
            scopes: words(&row.col::<String>("scopes")?),
            created_at: row.col("created_at")?,
            expires_at: row.col("expires_at")?,
            revoked_at: row.col("revoked_at")?,
        })
    }
}

/// An API key and the status of its user.
struct KeyOfUser(ApiKey, UserStatus);

impl<'r, R: Columns> FromRow<'r, R> for KeyOfUser {
    fn from_row(row: &'r R) -> Result<Self, sqlx::Error> {
        let status = UserStatus::parse(&row.col::<String>("status")?).map_err(bad_value)?;
        Ok(KeyOfUser(ApiKey::from_row(row)?, status))
    }
}

impl<'r, R: Columns> FromRow<'r, R> for Role {
    fn from_row(row: &'r R) -> Result<Self, sqlx::Error> {
        Ok(Role {
            name: row.col("name")?,
            permissions: words(&row.col::<String>("permissions")?),
            created_at: row.col("created_at")?,
            updated_at: row.col("updated_at")?,
        })
    }
}

impl SqlStore {
    async fn delete_role_in_tx(&self, name: &str, at_ms: i64) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        // Its holders' roles change: a node starting later loads them.
        tx.exec()
            .execute(
                "UPDATE users SET roles_changed_at = $2 \
                 WHERE id IN (SELECT user_id FROM user_roles WHERE role = $1)",
                &[arg(name), arg(at_ms)],
            )
            .await?;
        tx.exec()
            .execute("DELETE FROM user_roles WHERE role = $1", &[arg(name)])
            .await?;
        let deleted = tx
            .exec()
            .execute("DELETE FROM roles WHERE name = $1", &[arg(name)])
            .await?;
        tx.commit().await?;
        Ok(deleted > 0)
    }

    async fn set_roles_in_tx(
        &self,
        user_id: Uuid,
        roles: &[String],
        now: UnixTime,
        at_ms: i64,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let found = tx
            .exec()
            .execute(
                "UPDATE users SET updated_at = $2, roles_changed_at = $3 WHERE id = $1",
                &[arg(user_id), arg(now), arg(at_ms)],
            )
            .await?;
        if found == 0 {
            return Ok(false);
        }
        tx.exec()
            .execute("DELETE FROM user_roles WHERE user_id = $1", &[arg(user_id)])
            .await?;
        for role in roles {
            tx.exec()
                .execute(
                    "INSERT INTO user_roles (user_id, role) VALUES ($1, $2)",
                    &[arg(user_id), arg(role)],
                )
                .await?;
        }
        tx.commit().await?;
        Ok(true)
    }
}

#[async_trait]
impl ApiKeyStore for SqlStore {
    async fn create_api_key(&self, key: &ApiKey) -> Result<(), StoreError> {
        let scopes = key.scopes.join(" ");
        let args = [
            arg(key.id),
            arg(key.user_id),
            arg(&key.name),
            arg(&key.prefix),
            arg(&key.secret_hash),
            arg(scopes.as_str()),
            arg(key.created_at),
            arg(key.expires_at),
        ];
        self.execute(
            "INSERT INTO api_keys (id, user_id, name, prefix, secret_hash, scopes, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            &args,
        )
        .await?;
        Ok(())
    }

    async fn api_key_by_prefix(
        &self,
        prefix: &str,
    ) -> Result<Option<(ApiKey, UserStatus)>, StoreError> {
        let sql = format!(
            "SELECT {KEY_COLUMNS}, u.status FROM api_keys k JOIN users u ON u.id = k.user_id WHERE k.prefix = $1"
        );
        let found: Option<KeyOfUser> = self.read_optional(&sql, &[arg(prefix)]).await?;
        Ok(found.map(|KeyOfUser(key, status)| (key, status)))
    }

    async fn api_keys_of(&self, user_id: Uuid) -> Result<Vec<ApiKey>, StoreError> {
        let sql = format!(
            "SELECT {KEY_COLUMNS} FROM api_keys k WHERE k.user_id = $1 AND k.revoked_at IS NULL ORDER BY k.created_at DESC, k.prefix"
        );
        self.read_all(&sql, &[arg(user_id)]).await
    }

    async fn revoke_api_key(
        &self,
        user_id: Uuid,
        id: Uuid,
        now: UnixTime,
    ) -> Result<Option<ApiKey>, StoreError> {
        let sql = AssertSqlSafe(format!(
            "UPDATE api_keys SET revoked_at = $3 WHERE id = $1 AND user_id = $2 AND revoked_at IS NULL RETURNING {}",
            KEY_COLUMNS.replace("k.", "")
        ));
        let args = [arg(id), arg(user_id), arg(now)];
        self.write(self.pool.fetch_optional(sql, &args)).await
    }
}

#[async_trait]
impl RoleStore for SqlStore {
    async fn roles(&self) -> Result<Vec<Role>, StoreError> {
        self.read_all(
            "SELECT name, permissions, created_at, updated_at FROM roles ORDER BY name",
            &[],
        )
        .await
    }

    async fn put_role(&self, role: &Role) -> Result<(), StoreError> {
        let permissions = role.permissions.join(" ");
        let args = [
            arg(&role.name),
            arg(permissions.as_str()),
            arg(role.created_at),
            arg(role.updated_at),
        ];
        self.execute(
            "INSERT INTO roles (name, permissions, created_at, updated_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (name) DO UPDATE SET permissions = excluded.permissions, updated_at = excluded.updated_at",
            &args,
        )
        .await?;
        Ok(())
    }

    async fn delete_role(&self, name: &str, at_ms: i64) -> Result<bool, StoreError> {
        self.write(self.delete_role_in_tx(name, at_ms)).await
    }

    async fn set_user_roles(
        &self,
        user_id: Uuid,
        roles: &[String],
        now: UnixTime,
        at_ms: i64,
    ) -> Result<bool, StoreError> {
        self.write(self.set_roles_in_tx(user_id, roles, now, at_ms))
            .await
    }

    async fn permissions_of(
        &self,
        user_id: Uuid,
    ) -> Result<Option<(UserStatus, Vec<String>)>, StoreError> {
        self.read(|pool| async move {
            let Some((status,)) = pool
                .fetch_optional::<(String,)>("SELECT status FROM users WHERE id = $1", &[arg(user_id)])
                .await?
            else {
                return Ok(None);
            };
            let status = UserStatus::parse(&status)?;
            let held: Vec<(String,)> = pool
                .fetch_all(
                    "SELECT r.permissions FROM user_roles ur JOIN roles r ON r.name = ur.role WHERE ur.user_id = $1",
                    &[arg(user_id)],
                )
                .await?;
            let mut permissions: Vec<String> = held.iter().flat_map(|(p,)| words(p)).collect();
            permissions.sort();
            permissions.dedup();
            Ok(Some((status, permissions)))
        })
        .await
    }
}
