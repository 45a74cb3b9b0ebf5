//! Pub/sub on whatever topology the link follows, for the invalidation
//! bus. A subscription is a connection of its own, so it does not follow a
//! failover with the command connections; each topology says where to
//! listen instead:
//!
//! * one server: that server;
//! * Sentinel: the master followed now. The stream ends when the link
//!   follows a new master, so the caller subscribes again there (a
//!   demoted master that stays up as a replica would still relay, but one
//!   that is cut off would hear nothing, silently);
//! * Cluster: any node, tried in configured order. A cluster forwards
//!   every `PUBLISH` to all its nodes over its bus, so one plain
//!   connection hears everything, and losing that node ends the stream at
//!   once — unlike the cluster client's own RESP3 subscriptions, which move
//!   only when something refreshes its slot map.
//!
//! The caller reconnects when a stream ends (`cache::bus`), and its poll
//! of the invalidation log covers what was published meanwhile.

use super::{Link, RedisLink, SentinelLink, master_may_have_moved};
use futures::StreamExt;
use futures::stream::BoxStream;
use redis::{ConnectionInfo, ErrorKind, RedisError, RedisResult};
use std::sync::Arc;
use std::time::Duration;

/// The messages of one subscription; ends when its connection is lost or
/// pub/sub moved elsewhere.
pub type Messages = BoxStream<'static, redis::Msg>;

impl RedisLink {
    /// Subscribes to `channel` where this topology's `PUBLISH`es are heard;
    /// each connection attempt is bounded by `timeout`.
    pub async fn subscribe(&self, channel: &str, timeout: Duration) -> RedisResult<Messages> {
        match &self.0 {
            Link::Standalone(_, info) => Ok(open(info, channel, timeout).await?.boxed()),
            Link::Sentinel(s) => s.subscribe(channel, timeout).await,
            Link::Cluster(_, nodes) => {
                let mut last = None;
                for node in nodes.iter() {
                    match open(node, channel, timeout).await {
                        Ok(messages) => return Ok(messages.boxed()),
                        Err(e) => last = Some(e),
                    }
                }
                Err(last.unwrap_or_else(|| no_node("no cluster node configured")))
            }
        }
    }
}

impl RedisLink {
    /// Waits `pause` before the next subscription attempt, or less when a
    /// Sentinel link follows a new master meanwhile: a subscriber that
    /// could not reach the old master tries the new one at once.
    pub async fn pause_before_subscribing(&self, pause: Duration) {
        match self.master_changes() {
            Some(mut changes) => {
                let _ = tokio::time::timeout(pause, changes.changed()).await;
            }
            None => tokio::time::sleep(pause).await,
        }
    }
}

impl SentinelLink {
    async fn subscribe(
        self: &Arc<Self>,
        channel: &str,
        timeout: Duration,
    ) -> RedisResult<Messages> {
        // Taken before the master is read: a switch in between ends the
        // stream at once rather than being missed.
        let mut moved = self.switched.subscribe();
        let Some(master) = self.master.load_full() else {
            self.rediscover();
            return Err(no_node("no Redis master known yet"));
        };
        let info = self.data_node(&master.addr)?;
        match open(&info, channel, timeout).await {
            Ok(messages) => Ok(messages
                .take_until(async move {
                    let _ = moved.changed().await;
                })
                .boxed()),
            Err(e) => {
                if master_may_have_moved(&e) {
                    self.rediscover();
                }
                Err(e)
            }
        }
    }
}

/// A plain RESP2 subscription on one node.
async fn open(
    info: &ConnectionInfo,
    channel: &str,
    timeout: Duration,
) -> RedisResult<redis::aio::PubSubStream> {
    let client = redis::Client::open(info.clone())?;
    let subscribed = async {
        let mut pubsub = client.get_async_pubsub().await?;
        pubsub.subscribe(channel).await?;
        Ok(pubsub.into_on_message())
    };
    tokio::time::timeout(timeout, subscribed)
        .await
        .map_err(|_| RedisError::from((ErrorKind::Io, "pub/sub subscription timed out")))?
}

fn no_node(why: &'static str) -> RedisError {
    RedisError::from((ErrorKind::Io, why))
}
