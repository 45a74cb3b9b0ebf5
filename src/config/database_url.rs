//! `[database] url` and `replica_url` read into the PostgreSQL hosts they
//! name. libpq accepts a host list (`postgres://u:p@h1:5432,h2:5433/db`)
//! and picks the primary itself; sqlx's options hold one host and ignore
//! `target_session_attrs` (DEPENDENCIES.md trap 13), so holdfast splits the
//! list here into one single-host URL per host — what sqlx reads — and
//! `store::sql::hosts` classifies them at run time.
//!
//! Messages never repeat any part of the URL: the password may sit
//! anywhere in it once an operator mistypes a separator.

use crate::secret::Secret;
use sqlx::postgres::PgConnectOptions;
use std::str::FromStr;

/// PostgreSQL's own default port, shown when a host omits one.
const DEFAULT_PORT: u16 = 5432;

/// One host of a PostgreSQL URL, ready for sqlx.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgHost {
    /// `host:port` as the URL names it, with no credentials: for logs.
    pub label: String,
    /// The URL with its host list replaced by this host alone.
    pub url: Secret<String>,
}

/// The hosts a `postgres://` URL names, in the order written (libpq's
/// order, which is also the order holdfast prefers a primary in).
pub fn pg_hosts(url: &str) -> Result<Vec<PgHost>, String> {
    let (scheme, rest) = url
        .split_once("://")
        .filter(|(s, _)| matches!(*s, "postgres" | "postgresql"))
        .ok_or("must start with postgres:// or postgresql://")?;
    let (before_query, query) = match rest.split_once('?') {
        Some((r, q)) => (r, Some(q)),
        None => (rest, None),
    };
    let (authority, path) = match before_query.find('/') {
        Some(i) => before_query.split_at(i),
        None => (before_query, ""),
    };
    // A password may contain `@`: the hosts start after the last one.
    let (userinfo, hosts) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    let names_host_param = query.is_some_and(|q| {
        q.split('&')
            .any(|pair| matches!(pair.split('=').next(), Some("host" | "hostaddr" | "port")))
    });
    if hosts.is_empty() {
        // `postgres:///db?host=/run/postgresql`: one host, sqlx's to read.
        return Ok(vec![host(url, "default host".into())?]);
    }
    if names_host_param && hosts.contains(',') {
        return Err("a URL with several hosts takes no host, hostaddr or port \
                    parameter (give them as h1:p1,h2:p2)"
            .into());
    }
    let entries: Vec<&str> = hosts.split(',').collect();
    entries
        .iter()
        .enumerate()
        .map(|(i, entry)| {
            let label = host_port(entry).ok_or_else(|| {
                format!(
                    "host {} of {} is not host, host:port or [v6]:port",
                    i + 1,
                    entries.len()
                )
            })?;
            let user = userinfo.map(|u| format!("{u}@")).unwrap_or_default();
            let query = query.map(|q| format!("?{q}")).unwrap_or_default();
            host(&format!("{scheme}://{user}{entry}{path}{query}"), label)
        })
        .collect()
}

/// Checks that sqlx reads `url`; its error text is not passed on (it may
/// quote the URL).
fn host(url: &str, label: String) -> Result<PgHost, String> {
    PgConnectOptions::from_str(url).map_err(|_| {
        "is not a URL sqlx can read (percent-encode special characters in \
         the user name and password)"
            .to_string()
    })?;
    Ok(PgHost {
        label,
        url: Secret::new(url.to_string()),
    })
}

/// `h`, `h:p`, `[v6]` or `[v6]:p` as `host:port`; `None` when malformed.
fn host_port(entry: &str) -> Option<String> {
    let (host, port) = if let Some(v6) = entry.strip_prefix('[') {
        let (host, after) = v6.split_once(']')?;
        match after {
            "" => (host, None),
            _ => (host, Some(after.strip_prefix(':')?)),
        }
    } else {
        match entry.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (entry, None),
        }
    };
    let bad_host = host.is_empty()
        || host.contains(['@', '/', '?', '#', ' '])
        || (host.contains(':') && !entry.starts_with('['));
    if bad_host {
        return None;
    }
    let port = match port {
        None => DEFAULT_PORT,
        Some(p) => p.parse().ok().filter(|p| *p != 0)?,
    };
    Some(if entry.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    })
}

#[cfg(test)]
#[path = "database_url_tests.rs"]
mod tests;
