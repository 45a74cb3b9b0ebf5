//! The two databases behind one `Pool`, so that each store is written once,
//! in plain Rust, for PostgreSQL and SQLite alike.
//!
//! The SQL text is the same for both (BIGINT times, `$N` placeholders, which
//! sqlx's SQLite driver binds by number); the few words that differ come
//! from `Dialect`. Values go in as `Arg`s and rows come out through
//! `sqlx::FromRow`, so a query is one call whichever database runs it.
//! Generic code over `sqlx::Database` would carry a bound per bound type on
//! every method, and `sqlx::Any` would give up the drivers' own types;
//! instead one tiny macro, `either!`, picks the driver in the few helpers
//! below.

use super::classify;
use super::hosts::PgTarget;
use crate::store::StoreError;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnection, PgRow};
use sqlx::sqlite::{SqliteConnection, SqliteRow};
use sqlx::{Decode, FromRow, Postgres, Row, SqlSafeStr, Sqlite, SqlitePool, Transaction, Type};
use uuid::Uuid;

/// Runs `$body` with `$c` bound to the driver-typed value inside `$on`,
/// one arm per database: the arms differ only in their types.
macro_rules! either {
    ($on:expr, $kind:ident($c:ident) => $body:expr) => {
        match $on {
            $kind::Pg($c) => $body,
            $kind::Sqlite($c) => $body,
        }
    };
}

/// The words of SQL that differ between the two databases.
pub struct Dialect {
    /// `"postgres"` or `"sqlite"`, as health reports the backend.
    pub name: &'static str,
    /// The aggregate that joins a user's roles into one text.
    pub join_roles: &'static str,
    /// Appended to the session insert's `SELECT … FROM users`: PostgreSQL
    /// holds the user's row until the insert commits; SQLite runs one
    /// writer at a time, which gives the same order.
    pub hold_user: &'static str,
}

const POSTGRES: Dialect = Dialect {
    name: "postgres",
    join_roles: "string_agg",
    hold_user: "FOR SHARE",
};

const SQLITE: Dialect = Dialect {
    name: "sqlite",
    join_roles: "group_concat",
    hold_user: "",
};

/// A connection pool of either database; cheap to clone. A PostgreSQL
/// pool follows a role (primary or replica) across the hosts of
/// `[database] url`, so a promotion changes where the next call goes.
#[derive(Clone)]
pub enum Pool {
    Pg(PgTarget),
    Sqlite(SqlitePool),
}

/// One connection taken from a `Pool` for a single statement.
pub enum Conn {
    Pg(PoolConnection<Postgres>),
    Sqlite(PoolConnection<Sqlite>),
}

/// A transaction; dropped without `commit`, it rolls back.
pub enum Tx {
    Pg(Transaction<'static, Postgres>),
    Sqlite(Transaction<'static, Sqlite>),
}

/// Where a statement runs: a pooled connection or a transaction's.
pub enum Exec<'c> {
    Pg(&'c mut PgConnection),
    Sqlite(&'c mut SqliteConnection),
}

/// A value bound to a `$N` placeholder.
#[derive(Debug, Clone, Copy)]
pub enum Arg<'a> {
    Id(Uuid),
    Text(&'a str),
    MaybeText(Option<&'a str>),
    Int(i64),
    MaybeInt(Option<i64>),
    Flag(bool),
    Bytes(&'a [u8]),
}

/// `Arg` from any value that has one: `arg(id)`, `arg(&user.email)`.
pub fn arg<'a>(value: impl Into<Arg<'a>>) -> Arg<'a> {
    value.into()
}

impl From<Uuid> for Arg<'_> {
    fn from(v: Uuid) -> Self {
        Arg::Id(v)
    }
}
impl<'a> From<&'a str> for Arg<'a> {
    fn from(v: &'a str) -> Self {
        Arg::Text(v)
    }
}
impl<'a> From<&'a String> for Arg<'a> {
    fn from(v: &'a String) -> Self {
        Arg::Text(v)
    }
}
impl<'a> From<Option<&'a str>> for Arg<'a> {
    fn from(v: Option<&'a str>) -> Self {
        Arg::MaybeText(v)
    }
}
impl<'a> From<&'a Option<String>> for Arg<'a> {
    fn from(v: &'a Option<String>) -> Self {
        Arg::MaybeText(v.as_deref())
    }
}
impl From<i64> for Arg<'_> {
    fn from(v: i64) -> Self {
        Arg::Int(v)
    }
}
impl From<Option<i64>> for Arg<'_> {
    fn from(v: Option<i64>) -> Self {
        Arg::MaybeInt(v)
    }
}
impl From<bool> for Arg<'_> {
    fn from(v: bool) -> Self {
        Arg::Flag(v)
    }
}
impl<'a> From<&'a [u8]> for Arg<'a> {
    fn from(v: &'a [u8]) -> Self {
        Arg::Bytes(v)
    }
}
impl<'a> From<&'a Vec<u8>> for Arg<'a> {
    fn from(v: &'a Vec<u8>) -> Self {
        Arg::Bytes(v)
    }
}

/// Binds `args` in order to `$1`, `$2`, …
fn bind<'q, DB>(
    query: sqlx::query::Query<'q, DB, DB::Arguments>,
    args: &[Arg<'_>],
) -> sqlx::query::Query<'q, DB, DB::Arguments>
where
    DB: sqlx::Database,
    Uuid: for<'e> sqlx::Encode<'e, DB> + Type<DB>,
    for<'e> &'e str: sqlx::Encode<'e, DB> + Type<DB>,
    for<'e> Option<&'e str>: sqlx::Encode<'e, DB> + Type<DB>,
    i64: for<'e> sqlx::Encode<'e, DB> + Type<DB>,
    Option<i64>: for<'e> sqlx::Encode<'e, DB> + Type<DB>,
    bool: for<'e> sqlx::Encode<'e, DB> + Type<DB>,
    for<'e> &'e [u8]: sqlx::Encode<'e, DB> + Type<DB>,
{
    args.iter().fold(query, |q, a| match *a {
        Arg::Id(v) => q.bind(v),
        Arg::Text(v) => q.bind(v),
        Arg::MaybeText(v) => q.bind(v),
        Arg::Int(v) => q.bind(v),
        Arg::MaybeInt(v) => q.bind(v),
        Arg::Flag(v) => q.bind(v),
        Arg::Bytes(v) => q.bind(v),
    })
}

/// A type both drivers can decode from a column.
pub trait Column:
    for<'r> Decode<'r, Postgres> + Type<Postgres> + for<'r> Decode<'r, Sqlite> + Type<Sqlite>
{
}
impl<T> Column for T where
    T: for<'r> Decode<'r, Postgres> + Type<Postgres> + for<'r> Decode<'r, Sqlite> + Type<Sqlite>
{
}

/// A row of either driver, read by column name: what the `FromRow`
/// implementations of the stores' types are written against.
pub trait Columns: Row {
    fn col<T: Column>(&self, name: &str) -> Result<T, sqlx::Error>;
}

impl Columns for PgRow {
    fn col<T: Column>(&self, name: &str) -> Result<T, sqlx::Error> {
        self.try_get(name)
    }
}

impl Columns for SqliteRow {
    fn col<T: Column>(&self, name: &str) -> Result<T, sqlx::Error> {
        self.try_get(name)
    }
}

/// A value read back from a row of either database.
pub trait Record:
    for<'r> FromRow<'r, PgRow> + for<'r> FromRow<'r, SqliteRow> + Send + Unpin
{
}
impl<T> Record for T where
    T: for<'r> FromRow<'r, PgRow> + for<'r> FromRow<'r, SqliteRow> + Send + Unpin
{
}

/// A domain rule broken by a stored value, as a decoding error.
pub fn bad_value(e: StoreError) -> sqlx::Error {
    sqlx::Error::Decode(Box::new(e))
}

/// A list stored as one text: items joined by `sep`, none empty.
pub fn split(text: &str, sep: char) -> Vec<String> {
    text.split(sep)
        .filter(|item| !item.is_empty())
        .map(str::to_string)
        .collect()
}

impl Pool {
    pub fn dialect(&self) -> &'static Dialect {
        match self {
            Pool::Pg(_) => &POSTGRES,
            Pool::Sqlite(_) => &SQLITE,
        }
    }

    pub async fn acquire(&self) -> Result<Conn, StoreError> {
        either!(self, Pool(p) => p.acquire().await.map(Conn::from)).map_err(classify)
    }

    pub async fn begin(&self) -> Result<Tx, StoreError> {
        either!(self, Pool(p) => p.begin().await.map(Tx::from)).map_err(classify)
    }

    /// One statement on a connection of its own; rows affected.
    pub async fn execute(&self, sql: impl SqlSafeStr, args: &[Arg<'_>]) -> Result<u64, StoreError> {
        self.acquire().await?.exec().execute(sql, args).await
    }

    pub async fn fetch_optional<T: Record>(
        &self,
        sql: impl SqlSafeStr,
        args: &[Arg<'_>],
    ) -> Result<Option<T>, StoreError> {
        self.acquire().await?.exec().fetch_optional(sql, args).await
    }

    pub async fn fetch_all<T: Record>(
        &self,
        sql: impl SqlSafeStr,
        args: &[Arg<'_>],
    ) -> Result<Vec<T>, StoreError> {
        self.acquire().await?.exec().fetch_all(sql, args).await
    }

    /// The first column of the one row `sql` returns.
    pub async fn scalar<T: Column + Send + Unpin>(
        &self,
        sql: impl SqlSafeStr,
        args: &[Arg<'_>],
    ) -> Result<T, StoreError> {
        self.acquire().await?.exec().scalar(sql, args).await
    }
}

impl From<PoolConnection<Postgres>> for Conn {
    fn from(c: PoolConnection<Postgres>) -> Self {
        Conn::Pg(c)
    }
}

impl From<PoolConnection<Sqlite>> for Conn {
    fn from(c: PoolConnection<Sqlite>) -> Self {
        Conn::Sqlite(c)
    }
}

impl From<Transaction<'static, Postgres>> for Tx {
    fn from(t: Transaction<'static, Postgres>) -> Self {
        Tx::Pg(t)
    }
}

impl From<Transaction<'static, Sqlite>> for Tx {
    fn from(t: Transaction<'static, Sqlite>) -> Self {
        Tx::Sqlite(t)
    }
}

impl Conn {
    pub fn exec(&mut self) -> Exec<'_> {
        either!(self, Conn(c) => Exec::from(&mut **c))
    }
}

impl Tx {
    pub fn exec(&mut self) -> Exec<'_> {
        either!(self, Tx(t) => Exec::from(&mut **t))
    }

    pub async fn commit(self) -> Result<(), StoreError> {
        either!(self, Tx(t) => t.commit().await).map_err(classify)
    }
}

impl<'c> From<&'c mut PgConnection> for Exec<'c> {
    fn from(c: &'c mut PgConnection) -> Self {
        Exec::Pg(c)
    }
}

impl<'c> From<&'c mut SqliteConnection> for Exec<'c> {
    fn from(c: &'c mut SqliteConnection) -> Self {
        Exec::Sqlite(c)
    }
}

impl Exec<'_> {
    /// Runs one statement; rows affected.
    pub async fn execute(self, sql: impl SqlSafeStr, args: &[Arg<'_>]) -> Result<u64, StoreError> {
        self.execute_kept(sql, args, true).await
    }

    /// `execute`, keeping the prepared statement in the connection's cache
    /// only if `keep`: a statement whose text varies (a batch of rows)
    /// would push the hot ones out.
    pub async fn execute_kept(
        self,
        sql: impl SqlSafeStr,
        args: &[Arg<'_>],
        keep: bool,
    ) -> Result<u64, StoreError> {
        either!(self, Exec(c) => bind(sqlx::query(sql), args)
            .persistent(keep)
            .execute(c)
            .await
            .map(|done| done.rows_affected()))
        .map_err(classify)
    }

    pub async fn fetch_optional<T: Record>(
        self,
        sql: impl SqlSafeStr,
        args: &[Arg<'_>],
    ) -> Result<Option<T>, StoreError> {
        either!(self, Exec(c) => match bind(sqlx::query(sql), args).fetch_optional(c).await {
            Ok(Some(row)) => T::from_row(&row).map(Some),
            Ok(None) => Ok(None),
            Err(e) => Err(e),
        })
        .map_err(classify)
    }

    pub async fn fetch_all<T: Record>(
        self,
        sql: impl SqlSafeStr,
        args: &[Arg<'_>],
    ) -> Result<Vec<T>, StoreError> {
        either!(self, Exec(c) => match bind(sqlx::query(sql), args).fetch_all(c).await {
            Ok(rows) => rows.iter().map(T::from_row).collect(),
            Err(e) => Err(e),
        })
        .map_err(classify)
    }

    pub async fn scalar<T: Column + Send + Unpin>(
        self,
        sql: impl SqlSafeStr,
        args: &[Arg<'_>],
    ) -> Result<T, StoreError> {
        either!(self, Exec(c) => match bind(sqlx::query(sql), args).fetch_one(c).await {
            Ok(row) => row.try_get(0),
            Err(e) => Err(e),
        })
        .map_err(classify)
    }
}

/// A multi-row INSERT: `head` (`INSERT INTO t (a, b) `) and one `VALUES`
/// group of `width` placeholders per row, numbered on. One statement, so
/// one round trip and atomic without a transaction (the outboxes write a
/// batch at a time).
pub fn insert_rows(head: &str, width: usize, rows: usize) -> String {
    let mut sql = format!("{head}VALUES ");
    for row in 0..rows {
        if row > 0 {
            sql.push_str(", ");
        }
        let marks: Vec<String> = (1..=width)
            .map(|i| format!("${}", row * width + i))
            .collect();
        sql.push('(');
        sql.push_str(&marks.join(", "));
        sql.push(')');
    }
    sql
}
