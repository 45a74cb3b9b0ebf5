//! `SessionStore` and `SessionLedger` on SQL: the durable record every
//! session is written through to, whatever sits in front of it.

use super::SqlStore;
use super::pool::{Arg, Columns, arg, split};
use crate::store::{Rotation, Session, SessionLedger, SessionStore, StoreError, Swap, UnixTime};
use async_trait::async_trait;
use sqlx::{AssertSqlSafe, FromRow};
use uuid::Uuid;

const SESSION_COLUMNS: &str = "id, user_id, refresh_hash, created_at, last_used_at, expires_at, \
     user_agent, ip, revoked_at, roles, generation";

/// Remembers a hash the session rotated away from.
const MARK_USED: &str = "INSERT INTO used_refresh_tokens (token_hash, session_id, used_at) \
     VALUES ($1, $2, $3) ON CONFLICT DO NOTHING";

const WAS_USED: &str =
    "SELECT 1 AS used FROM used_refresh_tokens WHERE token_hash = $1 AND session_id = $2";

impl<'r, R: Columns> FromRow<'r, R> for Session {
    fn from_row(row: &'r R) -> Result<Self, sqlx::Error> {
        Ok(Session {
            id: row.col("id")?,
            user_id: row.col("user_id")?,
            refresh_hash: row.col("refresh_hash")?,
            created_at: row.col("created_at")?,
            last_used_at: row.col("last_used_at")?,
            expires_at: row.col("expires_at")?,
            user_agent: row.col("user_agent")?,
            ip: row.col("ip")?,
            revoked_at: row.col("revoked_at")?,
            roles: split(&row.col::<String>("roles")?, ','),
            generation: row.col("generation")?,
        })
    }
}

/// `SELECT <session columns> FROM sessions WHERE <clause>`.
fn select_sessions(clause: &str) -> String {
    format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE {clause}")
}

impl SqlStore {
    /// The compare-and-swap of `rotate`, in one transaction: the swap, or
    /// else what the session's rows say about the presented hash.
    async fn rotate_in_tx(&self, swap: Swap<'_>) -> Result<Rotation, StoreError> {
        let mut tx = self.pool.begin().await?;
        let sql = AssertSqlSafe(format!(
            "UPDATE sessions SET refresh_hash = $3, last_used_at = $4, generation = generation + 1 \
             WHERE id = $1 AND refresh_hash = $2 AND revoked_at IS NULL AND expires_at > $4 \
             RETURNING {SESSION_COLUMNS}"
        ));
        let args = [
            arg(swap.id),
            arg(swap.presented),
            arg(swap.next),
            arg(swap.at),
        ];
        let outcome = match tx.exec().fetch_optional::<Session>(sql, &args).await? {
            Some(session) => {
                let mark = [arg(swap.presented), arg(swap.id), arg(swap.at)];
                tx.exec().execute(MARK_USED, &mark).await?;
                Rotation::Rotated(session)
            }
            None => {
                let used = tx
                    .exec()
                    .fetch_optional::<()>(WAS_USED, &[arg(swap.presented), arg(swap.id)])
                    .await?;
                let current = tx
                    .exec()
                    .fetch_optional::<Session>(
                        AssertSqlSafe(select_sessions("id = $1")),
                        &[arg(swap.id)],
                    )
                    .await?;
                match (used, current) {
                    (Some(()), current) => Rotation::AlreadyRotated(current),
                    (None, Some(s)) if s.is_live(swap.at) => Rotation::Mismatch,
                    (None, _) => Rotation::Gone,
                }
            }
        };
        tx.commit().await?;
        Ok(outcome)
    }

    /// Forward only: if the ledger is at `generation` or beyond, or `next`
    /// was already used, a later rotation was recorded first (replays from
    /// several nodes arrive in any order) and must not be undone.
    async fn record_in_tx(&self, swap: Swap<'_>, generation: i64) -> Result<(), StoreError> {
        let Swap {
            id,
            presented: used,
            next,
            at: now,
        } = swap;
        let mut tx = self.pool.begin().await?;
        tx.exec()
            .execute(
                "UPDATE sessions SET refresh_hash = $2, last_used_at = $3, generation = $4 \
                 WHERE id = $1 AND generation < $4 \
                 AND NOT EXISTS (SELECT 1 FROM used_refresh_tokens \
                                 WHERE token_hash = $2 AND session_id = $1)",
                &[arg(id), arg(next), arg(now), arg(generation)],
            )
            .await?;
        tx.exec()
            .execute(MARK_USED, &[arg(used), arg(id), arg(now)])
            .await?;
        tx.commit().await
    }
}

#[async_trait]
impl SessionStore for SqlStore {
    async fn create(&self, s: &Session, user_version: Option<i64>) -> Result<(), StoreError> {
        // The dialect's `hold_user` (PostgreSQL: FOR SHARE) holds the
        // user's row until this insert commits, so a password change,
        // deactivation or logout-all either waits for it (and then its
        // sweep revokes this session) or committed first (and then no row
        // matches).
        let sql = AssertSqlSafe(format!(
            "INSERT INTO sessions (id, user_id, refresh_hash, created_at, last_used_at, \
             expires_at, user_agent, ip, revoked_at, roles, generation) \
             SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11 FROM users \
             WHERE id = $2 AND status = 'active' \
             AND ($12 IS NULL OR security_version = $12) {}",
            self.pool.dialect().hold_user
        ));
        let roles = s.roles.join(",");
        let args: [Arg; 12] = [
            arg(s.id),
            arg(s.user_id),
            arg(&s.refresh_hash),
            arg(s.created_at),
            arg(s.last_used_at),
            arg(s.expires_at),
            arg(&s.user_agent),
            arg(&s.ip),
            arg(s.revoked_at),
            arg(roles.as_str()),
            arg(s.generation),
            arg(user_version),
        ];
        let inserted = self.write(self.pool.execute(sql, &args)).await?;
        if inserted == 0 {
            return Err(StoreError::Superseded);
        }
        Ok(())
    }

    async fn get(&self, id: Uuid) -> Result<Option<Session>, StoreError> {
        self.read_optional(&select_sessions("id = $1"), &[arg(id)])
            .await
    }

    async fn rotate(&self, swap: Swap<'_>) -> Result<Rotation, StoreError> {
        self.write(self.rotate_in_tx(swap)).await
    }

    async fn revoke(&self, id: Uuid, now: UnixTime) -> Result<(), StoreError> {
        self.execute(
            "UPDATE sessions SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL",
            &[arg(id), arg(now)],
        )
        .await?;
        Ok(())
    }

    async fn revoke_user(
        &self,
        user_id: Uuid,
        keep: Option<Uuid>,
        now: UnixTime,
    ) -> Result<Vec<Uuid>, StoreError> {
        let args = [arg(user_id), arg(now), arg(keep.unwrap_or(Uuid::nil()))];
        let ids: Vec<(Uuid,)> = self
            .write(self.pool.fetch_all(
                "UPDATE sessions SET revoked_at = $2 \
                 WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > $2 AND id <> $3 \
                 RETURNING id",
                &args,
            ))
            .await?;
        Ok(ids.into_iter().map(|(id,)| id).collect())
    }

    async fn list_for_user(
        &self,
        user_id: Uuid,
        now: UnixTime,
    ) -> Result<Vec<Session>, StoreError> {
        let sql = select_sessions(
            "user_id = $1 AND revoked_at IS NULL AND expires_at > $2 \
             ORDER BY created_at DESC",
        );
        self.read_all(&sql, &[arg(user_id), arg(now)]).await
    }
}

#[async_trait]
impl SessionLedger for SqlStore {
    async fn record_rotation(&self, swap: Swap<'_>, generation: i64) -> Result<(), StoreError> {
        self.write(self.record_in_tx(swap, generation)).await
    }

    async fn was_used(&self, id: Uuid, hash: &str) -> Result<bool, StoreError> {
        let row: Option<()> = self.read_optional(WAS_USED, &[arg(hash), arg(id)]).await?;
        Ok(row.is_some())
    }

    async fn revoked_since(&self, since: UnixTime) -> Result<Vec<Uuid>, StoreError> {
        let ids: Vec<(Uuid,)> = self
            .read_all(
                "SELECT id FROM sessions WHERE revoked_at > $1",
                &[arg(since)],
            )
            .await?;
        Ok(ids.into_iter().map(|(id,)| id).collect())
    }
}
