//! `AuditStore` and `InvalidationLog` on SQL: append-only logs written in
//! batches (one multi-row INSERT) and read forward from a point.

use super::SqlStore;
use super::pool::{Arg, Columns, arg, bad_value, insert_rows};
use crate::store::{
    AuditEvent, AuditFilter, AuditStore, InvalidationLog, LoggedInvalidation, StoreError, UnixTime,
};
use async_trait::async_trait;
use sqlx::{AssertSqlSafe, FromRow};
use uuid::Uuid;

impl<'r, R: Columns> FromRow<'r, R> for AuditEvent {
    fn from_row(row: &'r R) -> Result<Self, sqlx::Error> {
        let user: Option<String> = row.col("user_id")?;
        let detail: String = row.col("detail")?;
        let event_id: Option<String> = row.col("event_id")?;
        Ok(AuditEvent {
            id: row.col("id")?,
            event_id: event_id.and_then(|e| Uuid::parse_str(&e).ok()),
            at: row.col("at")?,
            kind: row.col("kind")?,
            user_id: user.and_then(|u| Uuid::parse_str(&u).ok()),
            detail: serde_json::from_str(&detail)
                .map_err(|e| bad_value(StoreError::Corrupt(e.to_string())))?,
        })
    }
}

impl<'r, R: Columns> FromRow<'r, R> for LoggedInvalidation {
    fn from_row(row: &'r R) -> Result<Self, sqlx::Error> {
        Ok(LoggedInvalidation {
            seq: row.col("seq")?,
            at: row.col("at")?,
            node: row.col("node")?,
            event: row.col("event")?,
        })
    }
}

impl SqlStore {
    /// A multi-row INSERT of `args` (`width` per row) as one write; none,
    /// no write at all. Only
    /// the one-row text is kept prepared; each other batch size would be a
    /// statement of its own, pushing the hot ones out of the connection's
    /// statement cache.
    async fn append(&self, head: &str, width: usize, args: &[Arg<'_>]) -> Result<(), StoreError> {
        self.append_then(head, width, args, "").await
    }

    /// `append` with `tail` after the rows (an `ON CONFLICT` clause).
    async fn append_then(
        &self,
        head: &str,
        width: usize,
        args: &[Arg<'_>],
        tail: &str,
    ) -> Result<(), StoreError> {
        if args.is_empty() {
            return Ok(());
        }
        let rows = args.len() / width;
        let sql = AssertSqlSafe(insert_rows(head, width, rows) + tail);
        self.write(async {
            let mut conn = self.pool.acquire().await?;
            conn.exec().execute_kept(sql, args, rows == 1).await
        })
        .await?;
        Ok(())
    }
}

#[async_trait]
impl AuditStore for SqlStore {
    async fn append_audit(&self, events: &[AuditEvent]) -> Result<(), StoreError> {
        let texts: Vec<(Option<String>, String, Option<String>)> = events
            .iter()
            .map(|e| {
                (
                    e.user_id.map(|u| u.to_string()),
                    e.detail.to_string(),
                    e.event_id.map(|u| u.to_string()),
                )
            })
            .collect();
        let args: Vec<Arg> = events
            .iter()
            .zip(&texts)
            .flat_map(|(e, (user, detail, event_id))| {
                [
                    arg(e.at),
                    arg(&e.kind),
                    arg(user),
                    arg(detail),
                    arg(event_id),
                ]
            })
            .collect();
        // A repeated event (same `event_id`) is stored once.
        self.append_then(
            "INSERT INTO audit_log (at, kind, user_id, detail, event_id) ",
            5,
            &args,
            " ON CONFLICT DO NOTHING",
        )
        .await
    }

    async fn audit_query(&self, filter: &AuditFilter) -> Result<Vec<AuditEvent>, StoreError> {
        let user = filter.user_id.map(|u| u.to_string());
        let mut sql = String::from(
            "SELECT id, event_id, at, kind, user_id, detail FROM audit_log WHERE at >= $1",
        );
        let mut args: Vec<Arg> = vec![arg(filter.since)];
        if let Some(until) = filter.until {
            and(&mut sql, &mut args, "at <", arg(until));
        }
        if let Some(kind) = &filter.kind {
            and(&mut sql, &mut args, "kind =", arg(kind.as_str()));
        }
        if let Some(user) = &user {
            and(&mut sql, &mut args, "user_id =", arg(user.as_str()));
        }
        if let Some(after) = filter.after {
            and(&mut sql, &mut args, "id >", arg(after));
        }
        args.push(arg(filter.limit));
        sql.push_str(&format!(" ORDER BY id LIMIT ${}", args.len()));
        self.read_all(&sql, &args).await
    }

    async fn purge_audit(&self, before: UnixTime, batch: i64) -> Result<u64, StoreError> {
        // Batched, so one purge never holds a long lock on a big table.
        self.execute(
            "DELETE FROM audit_log WHERE id IN \
             (SELECT id FROM audit_log WHERE at < $1 ORDER BY id LIMIT $2)",
            &[arg(before), arg(batch)],
        )
        .await
    }
}

/// Adds `AND <clause> $n` to `sql`, `value` being parameter n.
fn and<'a>(sql: &mut String, args: &mut Vec<Arg<'a>>, clause: &str, value: Arg<'a>) {
    args.push(value);
    sql.push_str(&format!(" AND {clause} ${}", args.len()));
}

#[async_trait]
impl InvalidationLog for SqlStore {
    async fn append_invalidations(&self, rows: &[LoggedInvalidation]) -> Result<(), StoreError> {
        let args: Vec<Arg> = rows
            .iter()
            .flat_map(|r| [arg(r.at), arg(&r.node), arg(&r.event)])
            .collect();
        self.append("INSERT INTO invalidations (at, node, event) ", 3, &args)
            .await
    }

    async fn invalidations_after(
        &self,
        after: i64,
        limit: i64,
    ) -> Result<Vec<LoggedInvalidation>, StoreError> {
        self.read_all(
            "SELECT seq, at, node, event FROM invalidations WHERE seq > $1 ORDER BY seq LIMIT $2",
            &[arg(after), arg(limit)],
        )
        .await
    }

    async fn last_invalidation(&self) -> Result<i64, StoreError> {
        let (seq,): (i64,) = self
            .read_optional(
                "SELECT COALESCE(MAX(seq), 0) AS seq FROM invalidations",
                &[],
            )
            .await?
            .unwrap_or_default();
        Ok(seq)
    }

    async fn prune_invalidations(&self, before: UnixTime) -> Result<u64, StoreError> {
        self.execute("DELETE FROM invalidations WHERE at < $1", &[arg(before)])
            .await
    }
}
