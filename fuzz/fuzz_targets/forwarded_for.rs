//! `X-Forwarded-For` through the client-address extraction that per-IP
//! rate limits key on. Byte 0 picks the peer; the rest, split on newlines,
//! are the header's values. The answer must be the peer unless the peer is
//! a trusted proxy, and otherwise the peer or an untrusted address that
//! one of the values named.
#![no_main]

use holdfast::fuzzing::{IpNet, client_ip};
use holdfast::http::client_address::parse_forwarded_entry;
use libfuzzer_sys::fuzz_target;
use std::net::IpAddr;
use std::sync::LazyLock;

static TRUSTED: LazyLock<Vec<IpNet>> = LazyLock::new(|| {
    ["10.0.0.0/8", "192.168.1.0/24", "fd00::/8", "::1/128"]
        .iter()
        .map(|n| n.parse().expect("net"))
        .collect()
});

const PEERS: [&str; 6] = [
    "10.0.0.1",
    "192.168.1.7",
    "::1",
    "198.51.100.1",
    "2001:db8::1",
    "::ffff:10.0.0.1",
];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let peer: Option<IpAddr> = PEERS
        .get(usize::from(pick) % (PEERS.len() + 1))
        .map(|p| p.parse().expect("peer"));
    let values: Vec<&[u8]> = rest.split(|&b| b == b'\n').collect();
    let trusted = &*TRUSTED;
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    let answer = client_ip(peer, &values, trusted);
    let Some(peer) = peer else {
        assert_eq!(answer, None);
        return;
    };
    let (answer, rate_key) = answer.expect("a peer gives an address");
    assert!(!rate_key.is_empty());
    // IPv4-mapped IPv6 is the IPv4 address, for the peer too.
    let canonical = |ip: IpAddr| match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    let peer = canonical(peer);
    if !is_trusted(&peer) {
        assert_eq!(answer, peer, "an untrusted peer's header was believed");
        return;
    }
    if answer != peer {
        // Either the first untrusted entry from the right, or the left-most
        // trusted one reached: in both cases an entry a header named.
        // Entries are split on commas byte by byte: a value with bytes that
        // are not UTF-8 elsewhere still names the entries that are.
        let named = values
            .iter()
            .flat_map(|v| v.split(|&b| b == b','))
            .filter_map(|entry| std::str::from_utf8(entry).ok())
            .filter_map(parse_forwarded_entry)
            .any(|entry| canonical(entry) == answer);
        assert!(named, "{answer} is in no header value");
    }
});
