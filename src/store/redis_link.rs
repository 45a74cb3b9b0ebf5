//! One Redis handle for every topology `[redis] url` can name (DESIGN.md
//! §1, §4 "High availability of the stores"): a plain server, a master
//! found through Sentinel, or a Cluster. `RedisLink` is `ConnectionLike`,
//! so the stores send commands through it exactly as through a
//! `ConnectionManager`, and a failover is handled here, once.
//!
//! Hand-written because redis-rs does not follow a Sentinel failover on
//! open connections (upstream #1438, DEPENDENCIES.md traps 4 and 12): its
//! async Sentinel client hands back a plain connection that keeps talking
//! to the old master. `fred` follows failovers itself but its maintenance
//! is in doubt (fred.rs#377), and the rest of holdfast is built on
//! redis-rs. So we ask the sentinels ourselves (`SENTINEL
//! get-master-addr-by-name`), keep one `ConnectionManager` to the master
//! behind an `ArcSwap`, and ask again — swapping the manager when the
//! answer changed — on a connection error, a `READONLY` answer (the old
//! master came back as a replica) or a `+switch-master` event. When no
//! sentinel answers, the current master is kept: a Sentinel outage alone
//! must not take Redis away. A Cluster needs none of this: redis-rs's
//! async `ClusterConnection` follows `MOVED`/`ASK` and promotions itself.
//! Pub/sub (the invalidation bus) follows the topology too: `pubsub`.

use super::StoreError;
use super::redis::classify;
use crate::config::{ClusterTopology, Credentials, HostPort, RedisTopology, SentinelTopology};
use arc_swap::ArcSwapOption;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{
    Cmd, ConnectionAddr, ConnectionInfo, ErrorKind, IntoConnectionInfo, Pipeline, ProtocolVersion,
    RedisConnectionInfo, RedisError, RedisFuture, RedisResult, ServerErrorKind, Value,
};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::AbortHandle;

mod events;
mod pubsub;

pub use pubsub::Messages;

/// The current connection for the configured topology. Cheap to clone;
/// every clone follows the same failovers.
#[derive(Clone)]
pub struct RedisLink(Link);

/// Each topology's command connection, and what its pub/sub needs: the
/// server's address, or every configured Cluster node's.
#[derive(Clone)]
enum Link {
    Standalone(ConnectionManager, Arc<ConnectionInfo>),
    Sentinel(Arc<SentinelLink>),
    Cluster(ClusterConnection, Arc<[ConnectionInfo]>),
}

impl RedisLink {
    /// Standalone and Sentinel connect lazily, so holdfast starts (degraded)
    /// with Redis down (DEPENDENCIES.md trap 3); a Sentinel deployment with
    /// no sentinel answering starts with no master and keeps asking. A
    /// Cluster must answer once, within `timeout`, to learn its slots.
    pub async fn connect(topology: &RedisTopology, timeout: Duration) -> Result<Self, StoreError> {
        let link = match topology {
            RedisTopology::Standalone(url) => {
                let client = redis::Client::open(url.expose().as_str())
                    .map_err(|e| StoreError::Corrupt(format!("bad redis url: {e}")))?;
                let info = Arc::new(client.get_connection_info().clone());
                Link::Standalone(manager(client, timeout)?, info)
            }
            RedisTopology::Sentinel(s) => Link::Sentinel(SentinelLink::start(s, timeout).await),
            RedisTopology::Cluster(c) => {
                let (conn, nodes) = cluster(c, timeout).await?;
                Link::Cluster(conn, nodes)
            }
        };
        Ok(Self(link))
    }

    /// The master commands go to now (Sentinel only), for logs and tests.
    pub fn sentinel_master(&self) -> Option<HostPort> {
        match &self.0 {
            Link::Sentinel(s) => s.master.load().as_ref().map(|m| m.addr.clone()),
            _ => None,
        }
    }

    /// Sentinel only: a receiver that changes each time the link follows a
    /// new master — the failures an open breaker counted were the old
    /// master's, and a subscription there hears nothing any more.
    pub fn master_changes(&self) -> Option<watch::Receiver<u64>> {
        match &self.0 {
            Link::Sentinel(s) => Some(s.switched.subscribe()),
            _ => None,
        }
    }
}

impl ConnectionLike for RedisLink {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match &mut self.0 {
            Link::Standalone(c, _) => c.req_packed_command(cmd),
            Link::Cluster(c, _) => c.req_packed_command(cmd),
            Link::Sentinel(s) => Box::pin(async move {
                let mut conn = s.current()?;
                let answer = conn.req_packed_command(cmd).await;
                s.after(&answer);
                answer
            }),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match &mut self.0 {
            Link::Standalone(c, _) => c.req_packed_commands(pipeline, offset, count),
            Link::Cluster(c, _) => c.req_packed_commands(pipeline, offset, count),
            Link::Sentinel(s) => Box::pin(async move {
                let mut conn = s.current()?;
                let answer = conn.req_packed_commands(pipeline, offset, count).await;
                s.after(&answer);
                answer
            }),
        }
    }

    fn get_db(&self) -> i64 {
        match &self.0 {
            Link::Standalone(c, _) => c.get_db(),
            Link::Cluster(c, _) => c.get_db(),
            Link::Sentinel(s) => s.topology.db,
        }
    }
}

/// The same reconnect policy as the standalone stores: short timeouts, one
/// retry, and a lazy first connect.
fn manager(client: redis::Client, timeout: Duration) -> Result<ConnectionManager, StoreError> {
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout))
        .set_number_of_retries(1)
        .set_max_delay(Duration::from_secs(2));
    ConnectionManager::new_lazy_with_config(client, config).map_err(classify)
}

/// Where `host` is reached, with TLS when the URL said `rediss+sentinel://`.
fn address(host: &HostPort, tls: bool) -> RedisResult<ConnectionInfo> {
    let addr = if tls {
        ConnectionAddr::TcpTls {
            host: host.host.clone(),
            port: host.port,
            insecure: false,
            tls_params: None,
        }
    } else {
        ConnectionAddr::Tcp(host.host.clone(), host.port)
    };
    addr.into_connection_info()
}

fn with_credentials(mut redis: RedisConnectionInfo, c: &Credentials) -> RedisConnectionInfo {
    if let Some(user) = &c.username {
        redis = redis.set_username(user);
    }
    if let Some(password) = &c.password {
        redis = redis.set_password(password.expose());
    }
    redis
}

/// The master as the sentinels named it, and one managed connection to it.
struct Master {
    addr: HostPort,
    conn: ConnectionManager,
}

/// Follows the master of one Sentinel service.
struct SentinelLink {
    topology: SentinelTopology,
    timeout: Duration,
    master: ArcSwapOption<Master>,
    /// One re-resolution at a time; errors while it runs do not queue more.
    resolving: AtomicBool,
    /// The `+switch-master` listener, stopped when the link is dropped.
    listener: OnceLock<AbortHandle>,
    /// Counts the masters followed (`RedisLink::master_changes`).
    switched: watch::Sender<u64>,
}

impl Drop for SentinelLink {
    fn drop(&mut self) {
        if let Some(listener) = self.listener.get() {
            listener.abort();
        }
    }
}

impl SentinelLink {
    async fn start(topology: &SentinelTopology, timeout: Duration) -> Arc<Self> {
        let link = Arc::new(Self {
            topology: topology.clone(),
            timeout,
            master: ArcSwapOption::empty(),
            resolving: AtomicBool::new(false),
            listener: OnceLock::new(),
            switched: watch::Sender::new(0),
        });
        if let Some(addr) = link.resolve().await {
            link.follow(addr, &None);
        } else {
            tracing::warn!(service = %topology.service, "no sentinel named the Redis master yet");
        }
        let listener = tokio::spawn(events::listen(Arc::downgrade(&link)));
        let _ = link.listener.set(listener.abort_handle());
        link
    }

    /// The master's connection now, or an IO error (which starts a new
    /// resolution) while none is known.
    fn current(self: &Arc<Self>) -> RedisResult<ConnectionManager> {
        match self.master.load().as_ref() {
            Some(master) => Ok(master.conn.clone()),
            None => {
                self.rediscover();
                Err(RedisError::from((
                    ErrorKind::Io,
                    "no Redis master known yet",
                )))
            }
        }
    }

    /// Re-resolves after an answer that says the master may have moved.
    fn after<T>(self: &Arc<Self>, answer: &RedisResult<T>) {
        if let Err(e) = answer
            && master_may_have_moved(e)
        {
            self.rediscover();
        }
    }

    /// Asks the sentinels again in the background, once at a time.
    fn rediscover(self: &Arc<Self>) {
        if self.resolving.swap(true, Ordering::AcqRel) {
            return;
        }
        let link = Arc::clone(self);
        tokio::spawn(async move {
            let asked = link.master.load_full();
            if let Some(addr) = link.resolve().await {
                link.follow(addr, &asked);
            }
            link.resolving.store(false, Ordering::Release);
        });
    }

    /// The first answer of the sentinels, in configured order; `None` when
    /// none answers (the caller keeps the current master).
    async fn resolve(&self) -> Option<HostPort> {
        for sentinel in &self.topology.sentinels {
            match tokio::time::timeout(self.timeout, self.ask(sentinel)).await {
                Ok(Ok(Some(addr))) => return Some(addr),
                Ok(Ok(None)) => tracing::warn!(
                    sentinel = %format_args!("{}:{}", sentinel.host, sentinel.port),
                    service = %self.topology.service,
                    "sentinel does not know the service"
                ),
                Ok(Err(e)) => tracing::debug!(error = %e, "sentinel did not answer"),
                Err(_) => tracing::debug!("sentinel timed out"),
            }
        }
        None
    }

    async fn ask(&self, sentinel: &HostPort) -> RedisResult<Option<HostPort>> {
        let client = redis::Client::open(self.sentinel_info(sentinel)?)?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        let addr: Option<(String, u16)> = redis::cmd("SENTINEL")
            .arg("get-master-addr-by-name")
            .arg(&self.topology.service)
            .query_async(&mut conn)
            .await?;
        Ok(addr.map(|(host, port)| HostPort { host, port }))
    }

    fn sentinel_info(&self, sentinel: &HostPort) -> RedisResult<ConnectionInfo> {
        let info = address(sentinel, self.topology.tls)?;
        let mut redis = RedisConnectionInfo::default();
        if let Some(password) = &self.topology.sentinel_password {
            redis = redis.set_password(password.expose());
        }
        Ok(info.set_redis_settings(redis))
    }

    /// Points new commands at `addr` if the link still uses `asked`, the
    /// master it had when the question was put: an answer that arrives
    /// after a newer `+switch-master` moved the link must not move it back
    /// to a master that may since have been demoted.
    fn follow(&self, addr: HostPort, asked: &Option<Arc<Master>>) {
        if asked.as_ref().is_some_and(|m| m.addr == addr) {
            return;
        }
        let conn = match self.connect_to(&addr) {
            Ok(conn) => conn,
            Err(e) => {
                tracing::warn!(error = %e, "cannot connect to the new Redis master");
                return;
            }
        };
        let named = format!("{}:{}", addr.host, addr.port);
        let before = self
            .master
            .compare_and_swap(asked, Some(Arc::new(Master { addr, conn })));
        if same(&before, asked) {
            self.switched.send_modify(|n| *n += 1);
            tracing::info!(
                master = %named,
                service = %self.topology.service,
                "following the Redis master named by Sentinel"
            );
        } else {
            tracing::debug!(master = %named, "a newer master was followed meanwhile");
        }
    }

    fn connect_to(&self, addr: &HostPort) -> Result<ConnectionManager, StoreError> {
        let info = self.data_node(addr).map_err(classify)?;
        manager(redis::Client::open(info).map_err(classify)?, self.timeout)
    }

    /// A data node with the URL's credentials, database and TLS.
    fn data_node(&self, addr: &HostPort) -> RedisResult<ConnectionInfo> {
        let info = address(addr, self.topology.tls)?;
        let redis = RedisConnectionInfo::default().set_db(self.topology.db);
        Ok(info.set_redis_settings(with_credentials(redis, &self.topology.credentials)))
    }
}

fn same(a: &Option<Arc<Master>>, b: &Option<Arc<Master>>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => Arc::ptr_eq(a, b),
        (None, None) => true,
        _ => false,
    }
}

/// Connection trouble, a timeout, or `READONLY` from a demoted master.
fn master_may_have_moved(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || e.kind() == ErrorKind::Server(ServerErrorKind::ReadOnly)
}

/// Learns the slots from the first node that answers; also returns every
/// configured node with its credentials, where pub/sub may listen.
async fn cluster(
    c: &ClusterTopology,
    timeout: Duration,
) -> Result<(ClusterConnection, Arc<[ConnectionInfo]>), StoreError> {
    let nodes = c
        .nodes
        .iter()
        .map(|n| address(n, false))
        .collect::<RedisResult<Vec<_>>>()
        .map_err(classify)?;
    let credentials = with_credentials(RedisConnectionInfo::default(), &c.credentials);
    let listeners = nodes
        .iter()
        .map(|n| n.clone().set_redis_settings(credentials.clone()))
        .collect();
    let mut builder = ClusterClientBuilder::new(nodes)
        .use_protocol(ProtocolVersion::RESP3)
        .connection_timeout(timeout)
        .response_timeout(timeout);
    if let Some(user) = &c.credentials.username {
        builder = builder.username(user);
    }
    if let Some(password) = &c.credentials.password {
        builder = builder.password(password.expose());
    }
    let client = builder.build().map_err(classify)?;
    let first = timeout.max(Duration::from_secs(1)) * 4;
    let conn = tokio::time::timeout(first, client.get_async_connection())
        .await
        .map_err(|_| classify(RedisError::from((ErrorKind::Io, "cluster did not answer"))))?
        .map_err(classify)?;
    Ok((conn, listeners))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readonly_and_connection_errors_mean_ask_again() {
        let reply = b"-READONLY You can't write against a read only replica.\r\n";
        let Ok(Value::ServerError(readonly)) = redis::parse_redis_value(reply) else {
            panic!("not a server error");
        };
        let readonly = RedisError::from(readonly);
        assert!(master_may_have_moved(&readonly));
        let io = RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert!(master_may_have_moved(&io));
        let wrong_type = RedisError::from((ErrorKind::UnexpectedReturnType, "not a number"));
        assert!(!master_may_have_moved(&wrong_type));
    }

    #[tokio::test]
    async fn no_sentinel_answering_means_no_master_yet_and_a_clean_error() {
        let topology = RedisTopology::parse("redis+sentinel://127.0.0.1:1/mymaster").expect("url");
        let mut link = RedisLink::connect(&topology, Duration::from_millis(200))
            .await
            .expect("starts degraded");
        assert_eq!(link.sentinel_master(), None);
        let err = redis::cmd("PING")
            .query_async::<String>(&mut link)
            .await
            .expect_err("no master");
        assert!(err.is_io_error(), "{err}");
    }
}
