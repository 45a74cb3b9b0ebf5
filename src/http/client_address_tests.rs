use super::*;

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

fn nets(list: &[&str]) -> Vec<IpNet> {
    list.iter().map(|n| n.parse().expect("net")).collect()
}

fn walk(peer: &str, headers: &[&str], trusted: &[&str]) -> IpAddr {
    let values: Vec<&[u8]> = headers.iter().map(|h| h.as_bytes()).collect();
    client_ip(ip(peer), &values, &nets(trusted))
}

#[test]
fn entries_parse_with_ports_brackets_and_whitespace() {
    let cases = [
        ("203.0.113.5", Some("203.0.113.5")),
        (" 203.0.113.5\t", Some("203.0.113.5")),
        ("203.0.113.5:4711", Some("203.0.113.5")),
        ("2001:db8::1", Some("2001:db8::1")),
        ("[2001:db8::1]", Some("2001:db8::1")),
        ("[2001:db8::1]:443", Some("2001:db8::1")),
        (" [2001:db8::1]:443 ", Some("2001:db8::1")),
        ("::ffff:1.2.3.4", Some("1.2.3.4")),
        ("[::ffff:1.2.3.4]:80", Some("1.2.3.4")),
        ("", None),
        ("   ", None),
        ("unknown", None),
        ("_hidden", None),
        ("203.0.113.5:", None),
        ("203.0.113.5:99999", None),
        ("203.0.113.5:+80", None),
        ("203.0.113.5:80:80", None),
        ("[2001:db8::1", None),
        ("[2001:db8::1]443", None),
        ("[2001:db8::1]:", None),
        ("[203.0.113.5]", None),
        ("fe80::1%eth0", None),
        ("\"203.0.113.5\"", None),
        ("203.0.113", None),
        ("host.example:80", None),
    ];
    for (entry, want) in cases {
        assert_eq!(
            parse_forwarded_entry(entry),
            want.map(ip),
            "entry {entry:?}"
        );
    }
}

#[test]
fn an_untrusted_peer_is_the_client_whatever_it_forwards() {
    let trusted = ["10.0.0.0/8"];
    assert_eq!(
        walk("198.51.100.1", &["6.6.6.6"], &trusted),
        ip("198.51.100.1")
    );
    assert_eq!(walk("10.0.0.1", &["6.6.6.6"], &[]), ip("10.0.0.1"));
}

#[test]
fn the_right_most_untrusted_entry_is_the_client() {
    let trusted = ["10.0.0.0/8"];
    assert_eq!(
        walk("10.0.0.1", &["6.6.6.6, 203.0.113.9, 10.0.0.2"], &trusted),
        ip("203.0.113.9")
    );
    // Several header instances are one list, in order.
    assert_eq!(
        walk("10.0.0.1", &["6.6.6.6", "203.0.113.9, 10.0.0.2"], &trusted),
        ip("203.0.113.9")
    );
    assert_eq!(
        walk("10.0.0.1", &["6.6.6.6, 203.0.113.9", "10.0.0.2"], &trusted),
        ip("203.0.113.9")
    );
    // Ports and brackets do not hide the address.
    assert_eq!(
        walk("10.0.0.1", &["6.6.6.6, 203.0.113.9:4711"], &trusted),
        ip("203.0.113.9")
    );
    assert_eq!(
        walk("10.0.0.1", &["6.6.6.6, [2001:db8::7]:443"], &trusted),
        ip("2001:db8::7")
    );
}

#[test]
fn an_unparseable_entry_ends_the_walk_at_the_last_trusted_hop() {
    let trusted = ["10.0.0.0/8"];
    // The client appends garbage after its spoofed address: the garbage
    // ends the walk, and the proxy that wrote it is the bucket.
    assert_eq!(
        walk("10.0.0.1", &["6.6.6.6, bogus"], &trusted),
        ip("10.0.0.1")
    );
    assert_eq!(
        walk("10.0.0.1", &["6.6.6.6, bogus, 10.0.0.2"], &trusted),
        ip("10.0.0.2")
    );
    assert_eq!(walk("10.0.0.1", &["6.6.6.6,"], &trusted), ip("10.0.0.1"));
    assert_eq!(walk("10.0.0.1", &["6.6.6.6,,"], &trusted), ip("10.0.0.1"));
    // Not UTF-8 either.
    let values: Vec<&[u8]> = vec![b"6.6.6.6, \xff\xfe"];
    assert_eq!(
        client_ip(ip("10.0.0.1"), &values, &nets(&trusted)),
        ip("10.0.0.1")
    );
}

#[test]
fn an_all_trusted_chain_ends_at_its_left_most_hop() {
    let trusted = ["10.0.0.0/8"];
    assert_eq!(walk("10.0.0.1", &[], &trusted), ip("10.0.0.1"));
    assert_eq!(
        walk("10.0.0.1", &["10.1.1.1, 10.2.2.2"], &trusted),
        ip("10.1.1.1")
    );
}

#[test]
fn ipv4_mapped_addresses_are_ipv4_for_the_peer_entries_and_proxies() {
    // A dual-stack listener sees IPv4 peers in mapped form.
    assert_eq!(
        walk("::ffff:10.0.0.1", &["203.0.113.9"], &["10.0.0.0/8"]),
        ip("203.0.113.9")
    );
    // A trusted list written in mapped form trusts the IPv4 address.
    assert_eq!(
        walk("10.0.0.1", &["203.0.113.9"], &["::ffff:10.0.0.0/104"]),
        ip("203.0.113.9")
    );
    // A mapped entry is not a way around the trusted list.
    assert_eq!(
        walk("10.0.0.1", &["6.6.6.6, ::ffff:10.0.0.9"], &["10.0.0.0/8"]),
        ip("6.6.6.6")
    );
    assert_eq!(walk("::ffff:198.51.100.1", &[], &[]), ip("198.51.100.1"));
}

#[test]
fn ipv6_clients_share_a_key_per_64() {
    assert_eq!(rate_key(ip("203.0.113.9")), "203.0.113.9");
    assert_eq!(rate_key(ip("::ffff:203.0.113.9")), "203.0.113.9");
    assert_eq!(rate_key(ip("2001:db8:1:2::1")), "2001:db8:1:2::/64");
    assert_eq!(
        rate_key(ip("2001:db8:1:2:ffff:ffff:ffff:ffff")),
        "2001:db8:1:2::/64"
    );
    assert_ne!(
        rate_key(ip("2001:db8:1:2::1")),
        rate_key(ip("2001:db8:1:3::1"))
    );
}
