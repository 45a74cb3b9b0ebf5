//! `SessionStore` and `SessionLedger` on SQL: the durable record every
//! session is written through to, whatever sits in front of it.

use super::{PgStore, SqliteStore, classify};
use crate::store::{Rotation, Session, SessionLedger, SessionStore, StoreError, UnixTime};
use async_trait::async_trait;
use sqlx::Row;
use uuid::Uuid;

const SESSION_COLUMNS: &str = "id, user_id, refresh_hash, created_at, last_used_at, expires_at, \
     user_agent, ip, revoked_at, roles";

fn session_from_row<R: Row>(row: &R) -> Result<Session, StoreError>
where
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    Uuid: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    String: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    Option<String>: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    i64: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    Option<i64>: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    Ok(Session {
        id: row.try_get("id").map_err(classify)?,
        user_id: row.try_get("user_id").map_err(classify)?,
        refresh_hash: row.try_get("refresh_hash").map_err(classify)?,
        created_at: row.try_get("created_at").map_err(classify)?,
        last_used_at: row.try_get("last_used_at").map_err(classify)?,
        expires_at: row.try_get("expires_at").map_err(classify)?,
        user_agent: row.try_get("user_agent").map_err(classify)?,
        ip: row.try_get("ip").map_err(classify)?,
        revoked_at: row.try_get("revoked_at").map_err(classify)?,
        roles: {
            let roles: String = row.try_get("roles").map_err(classify)?;
            roles
                .split(',')
                .filter(|r| !r.is_empty())
                .map(str::to_string)
                .collect()
        },
    })
}

macro_rules! sql_session_store {
    ($store:ty, $lock:literal) => {
        #[async_trait]
        impl SessionStore for $store {
            async fn create(&self, s: &Session, user_version: Option<i64>) -> Result<(), StoreError> {
                self.write(async {
                        // `$lock` (PostgreSQL: FOR SHARE) holds the user's row
                        // until this insert commits, so a password change,
                        // deactivation or logout-all either waits for it (and
                        // then its sweep revokes this session) or committed
                        // first (and then no row matches). SQLite runs one
                        // writer at a time, which gives the same order.
                        let sql = sqlx::AssertSqlSafe(concat!(
                            "INSERT INTO sessions (id, user_id, refresh_hash, created_at, last_used_at, \
                             expires_at, user_agent, ip, revoked_at, roles) \
                             SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10 FROM users \
                             WHERE id = $2 AND status = 'active' \
                             AND ($11 IS NULL OR security_version = $11) ",
                            $lock
                        ));
                        let inserted = sqlx::query(sql)
                        .bind(s.id)
                        .bind(s.user_id)
                        .bind(&s.refresh_hash)
                        .bind(s.created_at)
                        .bind(s.last_used_at)
                        .bind(s.expires_at)
                        .bind(&s.user_agent)
                        .bind(&s.ip)
                        .bind(s.revoked_at)
                        .bind(s.roles.join(","))
                        .bind(user_version)
                        .execute(&self.pool)
                        .await
                        .map_err(classify)?
                        .rows_affected();
                        if inserted == 0 {
                            return Err(StoreError::Superseded);
                        }
                        Ok(())
                    })
                    .await
            }

            async fn get(&self, id: Uuid) -> Result<Option<Session>, StoreError> {
                self.read(|pool| async move {
                        let sql = sqlx::AssertSqlSafe(format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE id = $1"));
                        let row = sqlx::query(sql)
                            .bind(id)
                            .fetch_optional(&pool)
                            .await
                            .map_err(classify)?;
                        row.as_ref().map(session_from_row).transpose()
                    })
                    .await
            }

            async fn rotate(
                &self,
                id: Uuid,
                presented: &str,
                next: &str,
                now: UnixTime,
            ) -> Result<Rotation, StoreError> {
                self.write(async {
                        let mut tx = self.pool.begin().await.map_err(classify)?;
                        let sql = sqlx::AssertSqlSafe(format!(
                            "UPDATE sessions SET refresh_hash = $3, last_used_at = $4 \
                             WHERE id = $1 AND refresh_hash = $2 AND revoked_at IS NULL AND expires_at > $4 \
                             RETURNING {SESSION_COLUMNS}"
                        ));
                        let row = sqlx::query(sql)
                            .bind(id)
                            .bind(presented)
                            .bind(next)
                            .bind(now)
                            .fetch_optional(&mut *tx)
                            .await
                            .map_err(classify)?;
                        let outcome = match row {
                            Some(row) => {
                                sqlx::query(
                                    "INSERT INTO used_refresh_tokens (token_hash, session_id, used_at) \
                                     VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                                )
                                .bind(presented)
                                .bind(id)
                                .bind(now)
                                .execute(&mut *tx)
                                .await
                                .map_err(classify)?;
                                Rotation::Rotated(session_from_row(&row)?)
                            }
                            None => {
                                let used = sqlx::query(
                                    "SELECT 1 AS used FROM used_refresh_tokens WHERE token_hash = $1 AND session_id = $2",
                                )
                                .bind(presented)
                                .bind(id)
                                .fetch_optional(&mut *tx)
                                .await
                                .map_err(classify)?;
                                let sql = sqlx::AssertSqlSafe(format!(
                                    "SELECT {SESSION_COLUMNS} FROM sessions WHERE id = $1"
                                ));
                                let current = sqlx::query(sql)
                                    .bind(id)
                                    .fetch_optional(&mut *tx)
                                    .await
                                    .map_err(classify)?
                                    .as_ref()
                                    .map(session_from_row)
                                    .transpose()?;
                                match (used, current) {
                                    // Our own retry of a rotation that already happened.
                                    (Some(_), Some(s)) if s.refresh_hash == next && s.is_live(now) => {
                                        Rotation::Rotated(s)
                                    }
                                    (Some(_), _) => Rotation::Reused,
                                    (None, Some(s)) if s.is_live(now) => Rotation::Mismatch,
                                    (None, _) => Rotation::Gone,
                                }
                            }
                        };
                        tx.commit().await.map_err(classify)?;
                        Ok(outcome)
                    })
                    .await
            }

            async fn revoke(&self, id: Uuid, now: UnixTime) -> Result<(), StoreError> {
                self.write(async {
                        sqlx::query("UPDATE sessions SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL")
                            .bind(id)
                            .bind(now)
                            .execute(&self.pool)
                            .await
                            .map_err(classify)?;
                        Ok(())
                    })
                    .await
            }

            async fn revoke_user(
                &self,
                user_id: Uuid,
                keep: Option<Uuid>,
                now: UnixTime,
            ) -> Result<Vec<Uuid>, StoreError> {
                self.write(async {
                        let rows = sqlx::query(
                            "UPDATE sessions SET revoked_at = $2 \
                             WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > $2 AND id <> $3 \
                             RETURNING id",
                        )
                        .bind(user_id)
                        .bind(now)
                        .bind(keep.unwrap_or(Uuid::nil()))
                        .fetch_all(&self.pool)
                        .await
                        .map_err(classify)?;
                        rows.iter()
                            .map(|r| r.try_get::<Uuid, _>("id").map_err(classify))
                            .collect()
                    })
                    .await
            }

            async fn list_for_user(&self, user_id: Uuid, now: UnixTime) -> Result<Vec<Session>, StoreError> {
                self.read(|pool| async move {
                        let sql = sqlx::AssertSqlSafe(format!(
                            "SELECT {SESSION_COLUMNS} FROM sessions \
                             WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > $2 \
                             ORDER BY created_at DESC"
                        ));
                        let rows = sqlx::query(sql)
                            .bind(user_id)
                            .bind(now)
                            .fetch_all(&pool)
                            .await
                            .map_err(classify)?;
                        rows.iter().map(session_from_row).collect()
                    })
                    .await
            }
        }

        #[async_trait]
        impl SessionLedger for $store {
            async fn record_rotation(
                &self,
                id: Uuid,
                used: &str,
                next: &str,
                now: UnixTime,
            ) -> Result<(), StoreError> {
                self.write(async {
                        let mut tx = self.pool.begin().await.map_err(classify)?;
                        // Forward only: if `next` was already used, a later
                        // rotation was recorded first (replays from several
                        // nodes arrive in any order) and must not be undone.
                        sqlx::query(
                            "UPDATE sessions SET refresh_hash = $2, last_used_at = $3 WHERE id = $1 \
                             AND NOT EXISTS (SELECT 1 FROM used_refresh_tokens \
                                             WHERE token_hash = $2 AND session_id = $1)",
                        )
                        .bind(id)
                        .bind(next)
                        .bind(now)
                        .execute(&mut *tx)
                        .await
                        .map_err(classify)?;
                        sqlx::query(
                            "INSERT INTO used_refresh_tokens (token_hash, session_id, used_at) \
                             VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                        )
                        .bind(used)
                        .bind(id)
                        .bind(now)
                        .execute(&mut *tx)
                        .await
                        .map_err(classify)?;
                        tx.commit().await.map_err(classify)
                    })
                    .await
            }

            async fn was_used(&self, id: Uuid, hash: &str) -> Result<bool, StoreError> {
                self.read(|pool| async move {
                        let row = sqlx::query(
                            "SELECT 1 AS used FROM used_refresh_tokens WHERE token_hash = $1 AND session_id = $2",
                        )
                        .bind(hash)
                        .bind(id)
                        .fetch_optional(&pool)
                        .await
                        .map_err(classify)?;
                        Ok(row.is_some())
                    })
                    .await
            }

            async fn revoked_since(&self, since: UnixTime) -> Result<Vec<Uuid>, StoreError> {
                self.read(|pool| async move {
                        let rows = sqlx::query("SELECT id FROM sessions WHERE revoked_at > $1")
                            .bind(since)
                            .fetch_all(&pool)
                            .await
                            .map_err(classify)?;
                        rows.iter()
                            .map(|r| r.try_get::<Uuid, _>("id").map_err(classify))
                            .collect()
                    })
                    .await
            }
        }
    };
}

sql_session_store!(PgStore, "FOR SHARE");
sql_session_store!(SqliteStore, "");
