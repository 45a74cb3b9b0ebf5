//! `ApiKeyStore`, `RoleStore`, `AuditStore` and `InvalidationLog` on SQL.
//! Lists (scopes, permissions) are stored space-separated: their items can
//! hold no spaces, and one column keeps a key or role a single row.

use super::{PgStore, SqliteStore, classify};
use crate::store::{
    ApiKey, ApiKeyStore, AuditEvent, AuditStore, InvalidationLog, LoggedInvalidation, Role,
    RoleStore, StoreError, UnixTime, UserStatus,
};
use async_trait::async_trait;
use sqlx::Row;
use uuid::Uuid;

const KEY_COLUMNS: &str = "k.id, k.user_id, k.name, k.prefix, k.secret_hash, k.scopes, k.created_at, k.expires_at, k.revoked_at";

fn words(text: &str) -> Vec<String> {
    text.split_whitespace().map(str::to_string).collect()
}

fn key_from_row<R: Row>(row: &R) -> Result<ApiKey, StoreError>
where
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    Uuid: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    String: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    i64: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    Option<i64>: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    Ok(ApiKey {
        id: row.try_get("id").map_err(classify)?,
        user_id: row.try_get("user_id").map_err(classify)?,
        name: row.try_get("name").map_err(classify)?,
        prefix: row.try_get("prefix").map_err(classify)?,
        secret_hash: row.try_get("secret_hash").map_err(classify)?,
        scopes: words(&row.try_get::<String, _>("scopes").map_err(classify)?),
        created_at: row.try_get("created_at").map_err(classify)?,
        expires_at: row.try_get("expires_at").map_err(classify)?,
        revoked_at: row.try_get("revoked_at").map_err(classify)?,
    })
}

/// A multi-row INSERT of `rows` rows: one statement, so one round trip and
/// atomic without a transaction (the outboxes write a batch at a time).
/// Only the one-row text is kept prepared; each other batch size would be
/// a statement of its own, pushing the hot ones out of the connection's
/// statement cache.
fn batch<DB: sqlx::Database + sqlx::database::HasStatementCache, A>(
    query: sqlx::query::Query<'_, DB, A>,
    rows: usize,
) -> sqlx::query::Query<'_, DB, A> {
    query.persistent(rows == 1)
}

fn audit_from_row<R: Row>(row: &R) -> Result<AuditEvent, StoreError>
where
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    String: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    Option<String>: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    i64: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let user: Option<String> = row.try_get("user_id").map_err(classify)?;
    let detail: String = row.try_get("detail").map_err(classify)?;
    Ok(AuditEvent {
        id: row.try_get("id").map_err(classify)?,
        at: row.try_get("at").map_err(classify)?,
        kind: row.try_get("kind").map_err(classify)?,
        user_id: user.and_then(|u| Uuid::parse_str(&u).ok()),
        detail: serde_json::from_str(&detail).map_err(|e| StoreError::Corrupt(e.to_string()))?,
    })
}

macro_rules! sql_access_store {
    ($store:ty) => {
        #[async_trait]
        impl ApiKeyStore for $store {
            async fn create_api_key(&self, key: &ApiKey) -> Result<(), StoreError> {
                self.write(async {
                    sqlx::query(
                        "INSERT INTO api_keys (id, user_id, name, prefix, secret_hash, scopes, created_at, expires_at) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                    )
                    .bind(key.id)
                    .bind(key.user_id)
                    .bind(&key.name)
                    .bind(&key.prefix)
                    .bind(&key.secret_hash)
                    .bind(key.scopes.join(" "))
                    .bind(key.created_at)
                    .bind(key.expires_at)
                    .execute(&self.pool)
                    .await
                    .map_err(classify)?;
                    Ok(())
                })
                .await
            }

            async fn api_key_by_prefix(&self, prefix: &str) -> Result<Option<(ApiKey, UserStatus)>, StoreError> {
                let prefix = prefix.to_string();
                self.read(|pool| {
                    let prefix = prefix.clone();
                    async move {
                        let sql = sqlx::AssertSqlSafe(format!(
                            "SELECT {KEY_COLUMNS}, u.status FROM api_keys k JOIN users u ON u.id = k.user_id WHERE k.prefix = $1"
                        ));
                        let row = sqlx::query(sql).bind(prefix).fetch_optional(&pool).await.map_err(classify)?;
                        match row {
                            None => Ok(None),
                            Some(row) => {
                                let status: String = row.try_get("status").map_err(classify)?;
                                Ok(Some((key_from_row(&row)?, UserStatus::parse(&status)?)))
                            }
                        }
                    }
                })
                .await
            }

            async fn api_keys_of(&self, user_id: Uuid) -> Result<Vec<ApiKey>, StoreError> {
                self.read(|pool| async move {
                    let sql = sqlx::AssertSqlSafe(format!(
                        "SELECT {KEY_COLUMNS} FROM api_keys k WHERE k.user_id = $1 AND k.revoked_at IS NULL ORDER BY k.created_at DESC, k.prefix"
                    ));
                    let rows = sqlx::query(sql).bind(user_id).fetch_all(&pool).await.map_err(classify)?;
                    rows.iter().map(key_from_row).collect()
                })
                .await
            }

            async fn revoke_api_key(&self, user_id: Uuid, id: Uuid, now: UnixTime) -> Result<Option<ApiKey>, StoreError> {
                self.write(async {
                    let sql = sqlx::AssertSqlSafe(format!(
                        "UPDATE api_keys SET revoked_at = $3 WHERE id = $1 AND user_id = $2 AND revoked_at IS NULL RETURNING {}",
                        KEY_COLUMNS.replace("k.", "")
                    ));
                    let row = sqlx::query(sql)
                        .bind(id)
                        .bind(user_id)
                        .bind(now)
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(classify)?;
                    row.as_ref().map(key_from_row).transpose()
                })
                .await
            }
        }

        #[async_trait]
        impl RoleStore for $store {
            async fn roles(&self) -> Result<Vec<Role>, StoreError> {
                self.read(|pool| async move {
                    let rows = sqlx::query("SELECT name, permissions, created_at, updated_at FROM roles ORDER BY name")
                        .fetch_all(&pool)
                        .await
                        .map_err(classify)?;
                    rows.iter()
                        .map(|r| {
                            Ok(Role {
                                name: r.try_get("name").map_err(classify)?,
                                permissions: words(&r.try_get::<String, _>("permissions").map_err(classify)?),
                                created_at: r.try_get("created_at").map_err(classify)?,
                                updated_at: r.try_get("updated_at").map_err(classify)?,
                            })
                        })
                        .collect()
                })
                .await
            }

            async fn put_role(&self, role: &Role) -> Result<(), StoreError> {
                self.write(async {
                    sqlx::query(
                        "INSERT INTO roles (name, permissions, created_at, updated_at) VALUES ($1, $2, $3, $4) \
                         ON CONFLICT (name) DO UPDATE SET permissions = excluded.permissions, updated_at = excluded.updated_at",
                    )
                    .bind(&role.name)
                    .bind(role.permissions.join(" "))
                    .bind(role.created_at)
                    .bind(role.updated_at)
                    .execute(&self.pool)
                    .await
                    .map_err(classify)?;
                    Ok(())
                })
                .await
            }

            async fn delete_role(&self, name: &str, at_ms: i64) -> Result<bool, StoreError> {
                self.write(async {
                    let mut tx = self.pool.begin().await.map_err(classify)?;
                    // Its holders' roles change: a node starting later loads them.
                    sqlx::query(
                        "UPDATE users SET roles_changed_at = $2 \
                         WHERE id IN (SELECT user_id FROM user_roles WHERE role = $1)",
                    )
                    .bind(name)
                    .bind(at_ms)
                    .execute(&mut *tx)
                    .await
                    .map_err(classify)?;
                    sqlx::query("DELETE FROM user_roles WHERE role = $1")
                        .bind(name)
                        .execute(&mut *tx)
                        .await
                        .map_err(classify)?;
                    let deleted = sqlx::query("DELETE FROM roles WHERE name = $1")
                        .bind(name)
                        .execute(&mut *tx)
                        .await
                        .map_err(classify)?
                        .rows_affected();
                    tx.commit().await.map_err(classify)?;
                    Ok(deleted > 0)
                })
                .await
            }

            async fn set_user_roles(&self, user_id: Uuid, roles: &[String], now: UnixTime, at_ms: i64) -> Result<bool, StoreError> {
                self.write(async {
                    let mut tx = self.pool.begin().await.map_err(classify)?;
                    let found = sqlx::query("UPDATE users SET updated_at = $2, roles_changed_at = $3 WHERE id = $1")
                        .bind(user_id)
                        .bind(now)
                        .bind(at_ms)
                        .execute(&mut *tx)
                        .await
                        .map_err(classify)?
                        .rows_affected();
                    if found == 0 {
                        return Ok(false);
                    }
                    sqlx::query("DELETE FROM user_roles WHERE user_id = $1")
                        .bind(user_id)
                        .execute(&mut *tx)
                        .await
                        .map_err(classify)?;
                    for role in roles {
                        sqlx::query("INSERT INTO user_roles (user_id, role) VALUES ($1, $2)")
                            .bind(user_id)
                            .bind(role)
                            .execute(&mut *tx)
                            .await
                            .map_err(classify)?;
                    }
                    tx.commit().await.map_err(classify)?;
                    Ok(true)
                })
                .await
            }

            async fn permissions_of(&self, user_id: Uuid) -> Result<Option<(UserStatus, Vec<String>)>, StoreError> {
                self.read(|pool| async move {
                    let Some(row) = sqlx::query("SELECT status FROM users WHERE id = $1")
                        .bind(user_id)
                        .fetch_optional(&pool)
                        .await
                        .map_err(classify)?
                    else {
                        return Ok(None);
                    };
                    let status = UserStatus::parse(&row.try_get::<String, _>("status").map_err(classify)?)?;
                    let rows = sqlx::query(
                        "SELECT r.permissions FROM user_roles ur JOIN roles r ON r.name = ur.role WHERE ur.user_id = $1",
                    )
                    .bind(user_id)
                    .fetch_all(&pool)
                    .await
                    .map_err(classify)?;
                    let mut permissions = Vec::new();
                    for r in &rows {
                        permissions.extend(words(&r.try_get::<String, _>("permissions").map_err(classify)?));
                    }
                    permissions.sort();
                    permissions.dedup();
                    Ok(Some((status, permissions)))
                })
                .await
            }
        }

        #[async_trait]
        impl AuditStore for $store {
            async fn append_audit(&self, events: &[AuditEvent]) -> Result<(), StoreError> {
                if events.is_empty() {
                    return Ok(());
                }
                self.write(async {
                    let mut insert = sqlx::QueryBuilder::new("INSERT INTO audit_log (at, kind, user_id, detail) ");
                    insert.push_values(events, |mut row, e| {
                        row.push_bind(e.at)
                            .push_bind(&e.kind)
                            .push_bind(e.user_id.map(|u| u.to_string()))
                            .push_bind(e.detail.to_string());
                    });
                    batch(insert.build(), events.len()).execute(&self.pool).await.map_err(classify)?;
                    Ok(())
                })
                .await
            }

            async fn audit_since(&self, since: UnixTime, limit: i64) -> Result<Vec<AuditEvent>, StoreError> {
                self.read(|pool| async move {
                    let rows = sqlx::query(
                        "SELECT id, at, kind, user_id, detail FROM audit_log WHERE at >= $1 ORDER BY id LIMIT $2",
                    )
                    .bind(since)
                    .bind(limit)
                    .fetch_all(&pool)
                    .await
                    .map_err(classify)?;
                    rows.iter().map(audit_from_row).collect()
                })
                .await
            }
        }

        #[async_trait]
        impl InvalidationLog for $store {
            async fn append_invalidations(&self, rows: &[LoggedInvalidation]) -> Result<(), StoreError> {
                if rows.is_empty() {
                    return Ok(());
                }
                self.write(async {
                    let mut insert = sqlx::QueryBuilder::new("INSERT INTO invalidations (at, node, event) ");
                    insert.push_values(rows, |mut row, r| {
                        row.push_bind(r.at).push_bind(&r.node).push_bind(&r.event);
                    });
                    batch(insert.build(), rows.len()).execute(&self.pool).await.map_err(classify)?;
                    Ok(())
                })
                .await
            }

            async fn invalidations_after(&self, after: i64, limit: i64) -> Result<Vec<LoggedInvalidation>, StoreError> {
                self.read(|pool| async move {
                    let rows = sqlx::query(
                        "SELECT seq, at, node, event FROM invalidations WHERE seq > $1 ORDER BY seq LIMIT $2",
                    )
                    .bind(after)
                    .bind(limit)
                    .fetch_all(&pool)
                    .await
                    .map_err(classify)?;
                    rows.iter()
                        .map(|r| {
                            Ok(LoggedInvalidation {
                                seq: r.try_get("seq").map_err(classify)?,
                                at: r.try_get("at").map_err(classify)?,
                                node: r.try_get("node").map_err(classify)?,
                                event: r.try_get("event").map_err(classify)?,
                            })
                        })
                        .collect()
                })
                .await
            }

            async fn last_invalidation(&self) -> Result<i64, StoreError> {
                self.read(|pool| async move {
                    sqlx::query("SELECT COALESCE(MAX(seq), 0) AS seq FROM invalidations")
                        .fetch_one(&pool)
                        .await
                        .map_err(classify)?
                        .try_get::<i64, _>("seq")
                        .map_err(classify)
                })
                .await
            }

            async fn prune_invalidations(&self, before: UnixTime) -> Result<u64, StoreError> {
                self.write(async {
                    Ok(sqlx::query("DELETE FROM invalidations WHERE at < $1")
                        .bind(before)
                        .execute(&self.pool)
                        .await
                        .map_err(classify)?
                        .rows_affected())
                })
                .await
            }
        }
    };
}

sql_access_store!(PgStore);
sql_access_store!(SqliteStore);
