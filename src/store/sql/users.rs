//! `UserStore` on SQL. Roles live in `user_roles` so RBAC can grow without
//! rewriting the users table.

use super::{PgStore, SqliteStore, classify};
use crate::store::{
    PRE_NFKC_PREFIX, StoreError, UnixTime, User, UserStatus, UserStore, split_password_hash,
};
use async_trait::async_trait;
use sqlx::Row;
use uuid::Uuid;

/// A user's columns and, in the same statement (one round trip, one
/// snapshot), their roles joined by commas (role names never hold one) by
/// the database's own aggregate, `$agg`.
fn user_select(agg: &str, clause: &str) -> String {
    format!(
        "SELECT id, email, username, password_hash, password_normalized, status, not_before, \
         security_version, \
         created_at, updated_at, \
         (SELECT {agg}(role, ',') FROM user_roles WHERE user_roles.user_id = users.id) AS roles \
         FROM users WHERE {clause}"
    )
}

fn user_from_row<R: Row>(row: &R) -> Result<User, StoreError>
where
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    Uuid: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    String: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    i64: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    Option<i64>: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    Option<String>: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    bool: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let status: String = row.try_get("status").map_err(classify)?;
    let joined: Option<String> = row.try_get("roles").map_err(classify)?;
    let mut roles: Vec<String> = joined
        .iter()
        .flat_map(|j| j.split(','))
        .filter(|r| !r.is_empty())
        .map(str::to_string)
        .collect();
    roles.sort_unstable();
    let phc: String = row.try_get("password_hash").map_err(classify)?;
    let normalized: bool = row.try_get("password_normalized").map_err(classify)?;
    Ok(User {
        id: row.try_get("id").map_err(classify)?,
        email: row.try_get("email").map_err(classify)?,
        username: row.try_get("username").map_err(classify)?,
        password_hash: if normalized {
            phc
        } else {
            format!("{PRE_NFKC_PREFIX}{phc}")
        },
        status: UserStatus::parse(&status)?,
        roles,
        not_before: row.try_get("not_before").map_err(classify)?,
        security_version: row.try_get("security_version").map_err(classify)?,
        created_at: row.try_get("created_at").map_err(classify)?,
        updated_at: row.try_get("updated_at").map_err(classify)?,
    })
}

/// `text` with LIKE's wildcards escaped (escape character `\`).
fn like_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

macro_rules! sql_user_store {
    ($store:ty, $agg:literal) => {
        impl $store {
            /// An `UPDATE users … WHERE id = $1` whose one other parameter,
            /// `$2`, is a time: the shape of disable, enable and not-before.
            async fn update_at(&self, sql: &'static str, id: Uuid, at: UnixTime) -> Result<(), StoreError> {
                self.write(async {
                    sqlx::query(sql)
                        .bind(id)
                        .bind(at)
                        .execute(&self.pool)
                        .await
                        .map_err(classify)?;
                    Ok(())
                })
                .await
            }

            async fn user_where(&self, clause: &'static str, arg: String) -> Result<Option<User>, StoreError> {
                self.read(|pool| {
                    let arg = arg.clone();
                    async move {
                        let sql = sqlx::AssertSqlSafe(user_select($agg, clause));
                        let row = sqlx::query(sql)
                            .bind(arg)
                            .fetch_optional(&pool)
                            .await
                            .map_err(classify)?;
                        row.as_ref().map(user_from_row).transpose()
                    }
                })
                .await
            }
        }

        #[async_trait]
        impl UserStore for $store {
            async fn create(&self, user: &User) -> Result<(), StoreError> {
                let (phc, normalized) = split_password_hash(&user.password_hash);
                self.write(async {
                        let mut tx = self.pool.begin().await.map_err(classify)?;
                        sqlx::query(
                            "INSERT INTO users (id, email, username, password_hash, password_normalized, status, \
                             not_before, created_at, updated_at) VALUES ($1, $2, $3, $4, $9, $5, $6, $7, $8)",
                        )
                        .bind(user.id)
                        .bind(&user.email)
                        .bind(&user.username)
                        .bind(phc)
                        .bind(user.status.as_str())
                        .bind(user.not_before)
                        .bind(user.created_at)
                        .bind(user.updated_at)
                        .bind(normalized)
                        .execute(&mut *tx)
                        .await
                        .map_err(classify)?;
                        for role in &user.roles {
                            sqlx::query("INSERT INTO user_roles (user_id, role) VALUES ($1, $2)")
                                .bind(user.id)
                                .bind(role)
                                .execute(&mut *tx)
                                .await
                                .map_err(classify)?;
                        }
                        tx.commit().await.map_err(classify)
                    })
                    .await
            }

            async fn by_id(&self, id: Uuid) -> Result<Option<User>, StoreError> {
                self.read(|pool| async move {
                        let sql = sqlx::AssertSqlSafe(user_select($agg, "id = $1"));
                        let row = sqlx::query(sql)
                            .bind(id)
                            .fetch_optional(&pool)
                            .await
                            .map_err(classify)?;
                        row.as_ref().map(user_from_row).transpose()
                    })
                    .await
            }

            async fn by_login(&self, login: &str) -> Result<Option<User>, StoreError> {
                self.user_where(
                    "lower(email) = lower($1) OR lower(username) = lower($1)",
                    login.to_string(),
                )
                .await
            }

            async fn update_profile(
                &self,
                id: Uuid,
                email: Option<&str>,
                username: Option<&str>,
                now: UnixTime,
            ) -> Result<(), StoreError> {
                self.write(async {
                        sqlx::query(
                            "UPDATE users SET email = COALESCE($2, email), \
                             username = COALESCE($3, username), updated_at = $4 WHERE id = $1",
                        )
                        .bind(id)
                        .bind(email)
                        .bind(username)
                        .bind(now)
                        .execute(&self.pool)
                        .await
                        .map_err(classify)?;
                        Ok(())
                    })
                    .await
            }

            async fn set_password(&self, id: Uuid, hash: &str, now: UnixTime) -> Result<(), StoreError> {
                let (phc, normalized) = split_password_hash(hash);
                self.write(async {
                        sqlx::query(
                            "UPDATE users SET password_hash = $2, password_normalized = $4, updated_at = $3, \
                             security_version = security_version + 1 WHERE id = $1",
                        )
                        .bind(id)
                        .bind(phc)
                        .bind(now)
                        .bind(normalized)
                        .execute(&self.pool)
                        .await
                        .map_err(classify)?;
                        Ok(())
                    })
                    .await
            }

            async fn upgrade_password_hash(&self, old: &str, new: &str) -> Result<bool, StoreError> {
                let (old, old_normalized) = split_password_hash(old);
                let (new, normalized) = split_password_hash(new);
                if old_normalized {
                    return Ok(false);
                }
                self.write(async {
                        let done = sqlx::query(
                            "UPDATE users SET password_hash = $2, password_normalized = $3 \
                             WHERE password_hash = $1 AND NOT password_normalized",
                        )
                        .bind(old)
                        .bind(new)
                        .bind(normalized)
                        .execute(&self.pool)
                        .await
                        .map_err(classify)?;
                        Ok(done.rows_affected() == 1)
                    })
                    .await
            }

            async fn disable(&self, id: Uuid, now: UnixTime) -> Result<(), StoreError> {
                self.update_at(
                    "UPDATE users SET status = 'disabled', not_before = $2, updated_at = $2, \
                             security_version = security_version + 1 WHERE id = $1",
                    id,
                    now,
                )
                .await
            }

            async fn enable(&self, id: Uuid, now: UnixTime) -> Result<(), StoreError> {
                self.update_at(
                    "UPDATE users SET status = 'active', updated_at = $2, \
                             security_version = security_version + 1 WHERE id = $1",
                    id,
                    now,
                )
                .await
            }

            async fn set_not_before(&self, id: Uuid, at: UnixTime) -> Result<(), StoreError> {
                self.update_at(
                    "UPDATE users SET not_before = $2, updated_at = $2, \
                             security_version = security_version + 1 WHERE id = $1",
                    id,
                    at,
                )
                .await
            }

            async fn not_before_since(&self, since: UnixTime) -> Result<Vec<(Uuid, UnixTime)>, StoreError> {
                self.read(|pool| async move {
                        let rows = sqlx::query("SELECT id, not_before FROM users WHERE not_before > $1")
                            .bind(since)
                            .fetch_all(&pool)
                            .await
                            .map_err(classify)?;
                        rows.iter()
                            .map(|r| {
                                Ok((
                                    r.try_get::<Uuid, _>("id").map_err(classify)?,
                                    r.try_get::<i64, _>("not_before").map_err(classify)?,
                                ))
                            })
                            .collect()
                    })
                    .await
            }

            async fn roles_changed_since(&self, since_ms: i64) -> Result<Vec<(Uuid, Vec<String>, i64)>, StoreError> {
                self.read(|pool| async move {
                        let sql = sqlx::AssertSqlSafe(user_select(
                            $agg,
                            "roles_changed_at > $1",
                        ).replace("SELECT id,", "SELECT roles_changed_at, id,"));
                        let rows = sqlx::query(sql)
                            .bind(since_ms)
                            .fetch_all(&pool)
                            .await
                            .map_err(classify)?;
                        rows.iter()
                            .map(|r| {
                                let user = user_from_row(r)?;
                                let at: i64 = r.try_get("roles_changed_at").map_err(classify)?;
                                Ok((user.id, user.roles, at))
                            })
                            .collect()
                    })
                    .await
            }

            async fn count(&self) -> Result<i64, StoreError> {
                self.read(|pool| async move {
                        sqlx::query("SELECT COUNT(*) AS n FROM users")
                            .fetch_one(&pool)
                            .await
                            .map_err(classify)?
                            .try_get::<i64, _>("n")
                            .map_err(classify)
                    })
                    .await
            }

            async fn search(&self, query: &str, limit: i64) -> Result<Vec<User>, StoreError> {
                let pattern = format!("%{}%", like_escape(&query.to_lowercase()));
                self.read(|pool| {
                    let pattern = pattern.clone();
                    async move {
                        let sql = sqlx::AssertSqlSafe(user_select(
                            $agg,
                            "lower(email) LIKE $1 ESCAPE '\\' OR lower(username) LIKE $1 ESCAPE '\\' \
                             ORDER BY username LIMIT $2",
                        ));
                        let rows = sqlx::query(sql)
                            .bind(pattern)
                            .bind(limit)
                            .fetch_all(&pool)
                            .await
                            .map_err(classify)?;
                        rows.iter().map(user_from_row).collect()
                    }
                })
                .await
            }
        }
    };
}

sql_user_store!(PgStore, "string_agg");
sql_user_store!(SqliteStore, "group_concat");
