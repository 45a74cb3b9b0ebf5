//! `UserStore` on SQL. Roles live in `user_roles` so RBAC can grow without
//! rewriting the users table.

use super::SqlStore;
use super::pool::{Columns, arg, bad_value, split};
use crate::store::{
    PRE_NFKC_PREFIX, StoreError, UnixTime, User, UserStatus, UserStore, split_password_hash,
};
use async_trait::async_trait;
use sqlx::FromRow;
use uuid::Uuid;

// Each bumps the security version: a login that read the user before it
// can no longer create a session.
const DISABLE: &str = "UPDATE users SET status = 'disabled', not_before = $2, updated_at = $2, \
                             security_version = security_version + 1 WHERE id = $1";
const ENABLE: &str = "UPDATE users SET status = 'active', updated_at = $2, \
                             security_version = security_version + 1 WHERE id = $1";
const SET_NOT_BEFORE: &str = "UPDATE users SET not_before = $2, updated_at = $2, \
                             security_version = security_version + 1 WHERE id = $1";

/// A user's columns and, in the same statement (one round trip, one
/// snapshot), their roles joined by commas (role names never hold one) by
/// the database's own aggregate.
fn user_select(store: &SqlStore, clause: &str) -> String {
    let agg = store.pool.dialect().join_roles;
    format!(
        "SELECT id, email, username, password_hash, password_normalized, status, not_before, \
         security_version, \
         created_at, updated_at, \
         (SELECT {agg}(role, ',') FROM user_roles WHERE user_roles.user_id = users.id) AS roles \
         FROM users WHERE {clause}"
    )
}

impl<'r, R: Columns> FromRow<'r, R> for User {
    fn from_row(row: &'r R) -> Result<Self, sqlx::Error> {
        let status: String = row.col("status")?;
        let joined: Option<String> = row.col("roles")?;
        let mut roles = joined.map(|j| split(&j, ',')).unwrap_or_default();
        roles.sort_unstable();
        let phc: String = row.col("password_hash")?;
        let normalized: bool = row.col("password_normalized")?;
        Ok(User {
            id: row.col("id")?,
            email: row.col("email")?,
            username: row.col("username")?,
            password_hash: if normalized {
                phc
            } else {
                format!("{PRE_NFKC_PREFIX}{phc}")
            },
            status: UserStatus::parse(&status).map_err(bad_value)?,
            roles,
            not_before: row.col("not_before")?,
            security_version: row.col("security_version")?,
            created_at: row.col("created_at")?,
            updated_at: row.col("updated_at")?,
        })
    }
}

/// A user whose roles changed, and when (ms).
struct RolesChange(User, i64);

impl<'r, R: Columns> FromRow<'r, R> for RolesChange {
    fn from_row(row: &'r R) -> Result<Self, sqlx::Error> {
        Ok(RolesChange(
            User::from_row(row)?,
            row.col("roles_changed_at")?,
        ))
    }
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

impl SqlStore {
    /// The user row and their roles, in one transaction.
    async fn insert_user(&self, user: &User) -> Result<(), StoreError> {
        let (phc, normalized) = split_password_hash(&user.password_hash);
        let mut tx = self.pool.begin().await?;
        let args = [
            arg(user.id),
            arg(&user.email),
            arg(&user.username),
            arg(phc),
            arg(user.status.as_str()),
            arg(user.not_before),
            arg(user.created_at),
            arg(user.updated_at),
            arg(normalized),
        ];
        tx.exec()
            .execute(
                "INSERT INTO users (id, email, username, password_hash, password_normalized, status, \
                 not_before, created_at, updated_at) VALUES ($1, $2, $3, $4, $9, $5, $6, $7, $8)",
                &args,
            )
            .await?;
        for role in &user.roles {
            tx.exec()
                .execute(
                    "INSERT INTO user_roles (user_id, role) VALUES ($1, $2)",
                    &[arg(user.id), arg(role)],
                )
                .await?;
        }
        tx.commit().await
    }
}

#[async_trait]
impl UserStore for SqlStore {
    async fn create(&self, user: &User) -> Result<(), StoreError> {
        self.write(self.insert_user(user)).await
    }

    async fn by_id(&self, id: Uuid) -> Result<Option<User>, StoreError> {
        self.read_optional(&user_select(self, "id = $1"), &[arg(id)])
            .await
    }

    async fn by_login(&self, login: &str) -> Result<Option<User>, StoreError> {
        let sql = user_select(
            self,
            "lower(email) = lower($1) OR lower(username) = lower($1)",
        );
        self.read_optional(&sql, &[arg(login)]).await
    }

    async fn update_profile(
        &self,
        id: Uuid,
        email: Option<&str>,
        username: Option<&str>,
        now: UnixTime,
    ) -> Result<(), StoreError> {
        self.execute(
            "UPDATE users SET email = COALESCE($2, email), \
             username = COALESCE($3, username), updated_at = $4 WHERE id = $1",
            &[arg(id), arg(email), arg(username), arg(now)],
        )
        .await?;
        Ok(())
    }

    async fn set_password(&self, id: Uuid, hash: &str, now: UnixTime) -> Result<(), StoreError> {
        let (phc, normalized) = split_password_hash(hash);
        self.execute(
            "UPDATE users SET password_hash = $2, password_normalized = $4, updated_at = $3, \
             security_version = security_version + 1 WHERE id = $1",
            &[arg(id), arg(phc), arg(now), arg(normalized)],
        )
        .await?;
        Ok(())
    }

    async fn upgrade_password_hash(&self, old: &str, new: &str) -> Result<bool, StoreError> {
        let (old, old_normalized) = split_password_hash(old);
        let (new, normalized) = split_password_hash(new);
        if old_normalized {
            return Ok(false);
        }
        let done = self
            .execute(
                "UPDATE users SET password_hash = $2, password_normalized = $3 \
                 WHERE password_hash = $1 AND NOT password_normalized",
                &[arg(old), arg(new), arg(normalized)],
            )
            .await?;
        Ok(done == 1)
    }

    async fn disable(&self, id: Uuid, now: UnixTime) -> Result<(), StoreError> {
        self.execute(DISABLE, &[arg(id), arg(now)]).await?;
        Ok(())
    }

    async fn enable(&self, id: Uuid, now: UnixTime) -> Result<(), StoreError> {
        self.execute(ENABLE, &[arg(id), arg(now)]).await?;
        Ok(())
    }

    async fn set_not_before(&self, id: Uuid, at: UnixTime) -> Result<(), StoreError> {
        self.execute(SET_NOT_BEFORE, &[arg(id), arg(at)]).await?;
        Ok(())
    }

    async fn not_before_since(&self, since: UnixTime) -> Result<Vec<(Uuid, UnixTime)>, StoreError> {
        self.read_all(
            "SELECT id, not_before FROM users WHERE not_before > $1",
            &[arg(since)],
        )
        .await
    }

    async fn roles_changed_since(
        &self,
        since_ms: i64,
    ) -> Result<Vec<(Uuid, Vec<String>, i64)>, StoreError> {
        let sql = user_select(self, "roles_changed_at > $1")
            .replace("SELECT id,", "SELECT roles_changed_at, id,");
        let changes: Vec<RolesChange> = self.read_all(&sql, &[arg(since_ms)]).await?;
        Ok(changes
            .into_iter()
            .map(|RolesChange(user, at)| (user.id, user.roles, at))
            .collect())
    }

    async fn count(&self) -> Result<i64, StoreError> {
        let (count,): (i64,) = self
            .read_optional("SELECT COUNT(*) AS n FROM users", &[])
            .await?
            .unwrap_or_default();
        Ok(count)
    }

    async fn search(&self, query: &str, limit: i64) -> Result<Vec<User>, StoreError> {
        let pattern = format!("%{}%", like_escape(&query.to_lowercase()));
        let sql = user_select(
            self,
            "lower(email) LIKE $1 ESCAPE '\\' OR lower(username) LIKE $1 ESCAPE '\\' \
             ORDER BY username LIMIT $2",
        );
        self.read_all(&sql, &[arg(pattern.as_str()), arg(limit)])
            .await
    }
}
