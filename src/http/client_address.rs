//! Who the client is, as far as the network can tell (DESIGN.md §5 "Client
//! addresses"): the TCP peer, or — behind trusted proxies — the right-most
//! `X-Forwarded-For` entry that no trusted proxy wrote. Per-IP rate limits
//! are keyed on the result, so everything here is written so that a client
//! can never choose its own bucket: entries further left than the first
//! untrusted one are the client's own claims and are never read, and an
//! entry we cannot parse ends the walk instead of being skipped.
//!
//! Pure functions over bytes, so that a fuzz target can drive them.

use ipnet::IpNet;
use std::net::{IpAddr, Ipv6Addr};

/// One `X-Forwarded-For` entry as an address: `203.0.113.5`,
/// `203.0.113.5:4711`, `2001:db8::1`, `[2001:db8::1]`, `[2001:db8::1]:443`,
/// with surrounding whitespace. IPv4-mapped IPv6 (`::ffff:1.2.3.4`) is the
/// IPv4 address. Anything else (`unknown`, obfuscated identifiers, zone
/// ids, bad ports) is `None`.
pub fn parse_forwarded_entry(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim_matches(|c: char| c == ' ' || c == '\t');
    let ip = if let Some(rest) = entry.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        if !after.is_empty() {
            port(after.strip_prefix(':')?)?;
        }
        IpAddr::V6(inside.parse::<Ipv6Addr>().ok()?)
    } else if let Ok(ip) = entry.parse::<IpAddr>() {
        ip
    } else {
        // Only IPv4 carries a port without brackets: in IPv6 the colon
        // would be ambiguous.
        let (host, p) = entry.split_once(':')?;
        port(p)?;
        IpAddr::V4(host.parse().ok()?)
    };
    Some(ip.to_canonical())
}

/// A decimal TCP port (the value itself is not used).
fn port(text: &str) -> Option<u16> {
    if text.is_empty() || text.len() > 5 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Whether `ip` (canonical) is one of the trusted proxies; a trusted
/// network written in IPv4-mapped form matches the IPv4 address too.
fn is_trusted(ip: IpAddr, trusted: &[IpNet]) -> bool {
    let mapped = match ip {
        IpAddr::V4(v4) => Some(IpAddr::V6(v4.to_ipv6_mapped())),
        IpAddr::V6(_) => None,
    };
    trusted
        .iter()
        .any(|net| net.contains(&ip) || mapped.is_some_and(|m| net.contains(&m)))
}

/// The client's address. `forwarded_for` holds the raw values of every
/// `X-Forwarded-For` header instance, in the order received; together they
/// are one comma-separated list.
///
/// An untrusted peer is the client. Behind a trusted one the list is walked
/// from the right: the first entry that is not a trusted proxy is the
/// client. An entry that cannot be parsed (or is not UTF-8) ends the walk,
/// and so does the left end of an all-trusted chain; the client is then the
/// left-most trusted address reached, which a client cannot choose.
pub fn client_ip(peer: IpAddr, forwarded_for: &[&[u8]], trusted: &[IpNet]) -> IpAddr {
    let mut client = peer.to_canonical();
    if !is_trusted(client, trusted) {
        return client;
    }
    let entries = forwarded_for
        .iter()
        .rev()
        .flat_map(|value| value.rsplit(|b| *b == b','));
    for raw in entries {
        let Some(ip) = std::str::from_utf8(raw)
            .ok()
            .and_then(parse_forwarded_entry)
        else {
            return client;
        };
        if !is_trusted(ip, trusted) {
            return ip;
        }
        client = ip;
    }
    client
}

/// The key per-IP rate limits count under: the IPv4 address, or the /64
/// of an IPv6 one — a single IPv6 subscriber is routinely given a whole
/// /64, and would otherwise hold 2^64 buckets.
pub fn rate_key(ip: IpAddr) -> String {
    match ip.to_canonical() {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            format!("{}/64", Ipv6Addr::from(prefix))
        }
    }
}

#[cfg(test)]
#[path = "client_address_tests.rs"]
mod tests;
