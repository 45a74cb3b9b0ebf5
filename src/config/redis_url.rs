//! `[redis] url` read into the topology it names (DESIGN.md §6): one
//! server, a Sentinel-managed master, or a Cluster. Hand-written here
//! because the redis crate parses neither `redis+sentinel://` nor
//! `redis-cluster://` (DEPENDENCIES.md trap 12), and because config is
//! where a bad key must be reported by name at start — the connection code
//! then receives a typed topology instead of re-reading a string.
//!
//! Messages never repeat the URL: it may carry passwords.

use crate::secret::Secret;

/// Sentinel's and Redis's own default ports, used when a host omits one.
const SENTINEL_PORT: u16 = 26379;
const REDIS_PORT: u16 = 6379;

/// Which Redis deployment holdfast talks to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisTopology {
    /// `redis://` or `rediss://`: the redis crate reads it as written.
    Standalone(Secret<String>),
    Sentinel(SentinelTopology),
    Cluster(ClusterTopology),
}

/// `redis+sentinel://[user:pass@]h:p,h:p/service?sentinel_password=..&db=N`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentinelTopology {
    /// Asked in this order for the master's address.
    pub sentinels: Vec<HostPort>,
    /// The name the sentinels monitor the master under (`mymaster`).
    pub service: String,
    /// The data nodes' credentials (the URL's userinfo), not the sentinels'.
    pub credentials: Credentials,
    /// `requirepass` of the sentinels themselves, when they have one.
    pub sentinel_password: Option<Secret<String>>,
    pub db: i64,
    /// `rediss+sentinel://`: TLS to the sentinels and to the data nodes.
    pub tls: bool,
}

/// `redis-cluster://[user:pass@]h:p,h:p`: any reachable node is enough
/// to learn the rest of the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterTopology {
    pub nodes: Vec<HostPort>,
    pub credentials: Credentials,
}

/// ACL user and password for the data nodes; the password never prints.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    pub username: Option<String>,
    pub password: Option<Secret<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    pub host: String,
    pub port: u16,
}

impl super::Config {
    /// The Redis deployment `[redis] url` names; `None` when unset
    /// (process memory, development only).
    pub fn redis_topology(&self) -> Result<Option<RedisTopology>, String> {
        self.redis
            .url
            .as_ref()
            .map(|url| RedisTopology::parse(url.expose()))
            .transpose()
    }
}

impl RedisTopology {
    /// Reads a `[redis] url`; the error is the message for `redis.url`.
    pub fn parse(url: &str) -> Result<Self, String> {
        let (scheme, rest) = url
            .split_once("://")
            .ok_or("must be a URL (redis://, rediss://, redis+sentinel://, redis-cluster://)")?;
        match scheme {
            "redis" | "rediss" => Ok(Self::Standalone(Secret::new(url.to_string()))),
            "redis+sentinel" => sentinel(rest, false).map(Self::Sentinel),
            "rediss+sentinel" => sentinel(rest, true).map(Self::Sentinel),
            "redis-cluster" => cluster(rest).map(Self::Cluster),
            _ => Err("must start with redis://, rediss://, redis+sentinel://, \
                 rediss+sentinel:// or redis-cluster://"
                .into()),
        }
    }
}

/// The parts after `scheme://`, split but not yet interpreted.
struct Parts<'a> {
    userinfo: Option<&'a str>,
    hosts: &'a str,
    path: &'a str,
    query: Option<&'a str>,
}

fn split(rest: &str) -> Parts<'_> {
    let (rest, query) = match rest.split_once('?') {
        Some((r, q)) => (r, Some(q)),
        None => (rest, None),
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, ""),
    };
    // A password may contain `@`: the hosts start after the last one.
    let (userinfo, hosts) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    Parts {
        userinfo,
        hosts,
        path,
        query,
    }
}

fn sentinel(rest: &str, tls: bool) -> Result<SentinelTopology, String> {
    let parts = split(rest);
    let sentinels = host_list(parts.hosts, SENTINEL_PORT)?;
    let service = decode(parts.path)?;
    if service.is_empty() || service.contains('/') {
        return Err("a Sentinel URL names the master's service after the hosts \
                    (redis+sentinel://h:p,h:p/mymaster)"
            .into());
    }
    let mut sentinel_password = None;
    let mut db = 0;
    for (key, value) in query_pairs(parts.query)? {
        match key.as_str() {
            "sentinel_password" => sentinel_password = Some(Secret::new(value)),
            "db" => {
                db = value
                    .parse()
                    .ok()
                    .filter(|db| *db >= 0)
                    .ok_or("db must be a database number (0, 1, ...)")?;
            }
            _ => return Err(format!("unknown parameter `{key}` (sentinel_password, db)")),
        }
    }
    Ok(SentinelTopology {
        sentinels,
        service,
        credentials: credentials(parts.userinfo)?,
        sentinel_password,
        db,
        tls,
    })
}

fn cluster(rest: &str) -> Result<ClusterTopology, String> {
    let parts = split(rest);
    if !parts.path.is_empty() || parts.query.is_some() {
        return Err("a Cluster URL takes no database or parameters \
                    (redis-cluster://h:p,h:p; a cluster has database 0 only)"
            .into());
    }
    Ok(ClusterTopology {
        nodes: host_list(parts.hosts, REDIS_PORT)?,
        credentials: credentials(parts.userinfo)?,
    })
}

/// `h:p,h:p`, IPv6 as `[::1]:p`; a missing port is `default_port`.
fn host_list(hosts: &str, default_port: u16) -> Result<Vec<HostPort>, String> {
    if hosts.is_empty() {
        return Err("names no host".into());
    }
    hosts
        .split(',')
        .map(|entry| host_port(entry, default_port))
        .collect()
}

fn host_port(entry: &str, default_port: u16) -> Result<HostPort, String> {
    let bad = || format!("`{entry}` is not host:port");
    let (host, port) = if let Some(v6) = entry.strip_prefix('[') {
        let (host, after) = v6.split_once(']').ok_or_else(bad)?;
        match after {
            "" => (host, None),
            _ => (host, Some(after.strip_prefix(':').ok_or_else(bad)?)),
        }
    } else {
        match entry.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (entry, None),
        }
    };
    if host.is_empty() || host.contains(['@', '/', ':']) && !entry.starts_with('[') {
        return Err(bad());
    }
    let port = match port {
        None => default_port,
        Some(p) => p.parse().ok().filter(|p| *p != 0).ok_or_else(bad)?,
    };
    Ok(HostPort {
        host: host.to_string(),
        port,
    })
}

/// `user:pass`, `:pass` (password only) or `user`; percent-decoded.
fn credentials(userinfo: Option<&str>) -> Result<Credentials, String> {
    let Some(userinfo) = userinfo else {
        return Ok(Credentials::default());
    };
    let (user, password) = match userinfo.split_once(':') {
        Some((u, p)) => (u, Some(p)),
        None => (userinfo, None),
    };
    let user = decode(user).map_err(|_| "the user name is not valid percent-encoding")?;
    let password = password
        .map(decode)
        .transpose()
        .map_err(|_| "the password is not valid percent-encoding")?;
    Ok(Credentials {
        username: Some(user).filter(|u| !u.is_empty()),
        password: password.filter(|p| !p.is_empty()).map(Secret::new),
    })
}

fn query_pairs(query: Option<&str>) -> Result<Vec<(String, String)>, String> {
    let Some(query) = query else {
        return Ok(Vec::new());
    };
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value =
                decode(value).map_err(|_| format!("`{key}` is not valid percent-encoding"))?;
            Ok((decode(key)?, value))
        })
        .collect()
}

/// Percent-decoding; the error carries no part of the input (it may be a
/// password).
fn decode(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text
                .get(i + 1..i + 3)
                .filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))
                .ok_or("bad percent-encoding")?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| "bad percent-encoding")?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "bad percent-encoding".into())
}

#[cfg(test)]
#[path = "redis_url_tests.rs"]
mod tests;
