//! The sentinels' `+switch-master` events, heard so that a failover moves
//! the link even when no command is failing (no traffic, or every call
//! refused by an open breaker): the first command after the switch
//! already reaches the new master.

use super::{HostPort, SentinelLink};
use futures::StreamExt;
use redis::{ErrorKind, RedisError, RedisResult};
use std::sync::Weak;
use std::time::Duration;

/// The channel on which sentinels announce a new master.
const SWITCH_MASTER: &str = "+switch-master";
/// Pause before trying the sentinels again when none could be listened to.
const RELISTEN_DELAY: Duration = Duration::from_secs(1);

/// Listens for `+switch-master` on one sentinel at a time, moving to the
/// next when one goes away; ends when the link is dropped.
pub(super) async fn listen(link: Weak<SentinelLink>) {
    loop {
        let Some(sentinels) = link.upgrade().map(|l| l.topology.sentinels.clone()) else {
            return;
        };
        for sentinel in &sentinels {
            if let Err(e) = listen_to(&link, sentinel).await {
                tracing::debug!(error = %e, "sentinel event stream ended");
            }
            if link.strong_count() == 0 {
                return;
            }
        }
        tokio::time::sleep(RELISTEN_DELAY).await;
    }
}

async fn listen_to(link: &Weak<SentinelLink>, sentinel: &HostPort) -> RedisResult<()> {
    let (info, timeout, service) = match link.upgrade() {
        Some(l) => (
            l.sentinel_info(sentinel)?,
            l.timeout,
            l.topology.service.clone(),
        ),
        None => return Ok(()),
    };
    let client = redis::Client::open(info)?;
    let mut pubsub = tokio::time::timeout(timeout, client.get_async_pubsub())
        .await
        .map_err(|_| RedisError::from((ErrorKind::Io, "sentinel timed out")))??;
    pubsub.subscribe(SWITCH_MASTER).await?;
    // A switch may have happened while nobody was listening.
    if let Some(l) = link.upgrade() {
        l.rediscover();
    }
    let mut events = pubsub.into_on_message();
    while let Some(event) = events.next().await {
        let payload: String = event.get_payload()?;
        match (switched_to(&payload, &service), link.upgrade()) {
            (_, None) => return Ok(()),
            (Some(addr), Some(l)) => {
                let now = l.master.load_full();
                l.follow(addr, &now);
            }
            (None, Some(_)) => {}
        }
    }
    Ok(())
}

/// `<service> <old-ip> <old-port> <new-ip> <new-port>`: the new master,
/// when the event is about our service.
fn switched_to(payload: &str, service: &str) -> Option<HostPort> {
    let parts: Vec<&str> = payload.split_whitespace().collect();
    match parts.as_slice() {
        [name, _, _, host, port] if *name == service => Some(HostPort {
            host: host.to_string(),
            port: port.parse().ok()?,
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn switch_master_events_name_the_new_master_of_our_service() {
        let event = "mymaster 127.0.0.1 6380 127.0.0.1 6381";
        assert_eq!(
            switched_to(event, "mymaster"),
            Some(HostPort {
                host: "127.0.0.1".into(),
                port: 6381
            })
        );
        assert_eq!(switched_to(event, "other"), None);
        assert_eq!(switched_to("mymaster 1 2 3", "mymaster"), None);
        assert_eq!(switched_to("mymaster a 1 b port", "mymaster"), None);
    }
}
