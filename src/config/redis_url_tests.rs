//! Good and bad `[redis] url` forms, and that no password reaches `Debug`
//! or an error message.
use super::*;

fn sentinel_of(url: &str) -> SentinelTopology {
    match RedisTopology::parse(url) {
        Ok(RedisTopology::Sentinel(s)) => s,
        other => panic!("{url}: not a Sentinel topology: {other:?}"),
    }
}

fn hp(host: &str, port: u16) -> HostPort {
    HostPort {
        host: host.into(),
        port,
    }
}

#[test]
fn standalone_urls_pass_through() {
    for url in [
        "redis://127.0.0.1:6379/0",
        "rediss://:pw@cache.example:6380",
    ] {
        assert_eq!(
            RedisTopology::parse(url),
            Ok(RedisTopology::Standalone(Secret::new(url.into())))
        );
    }
}

#[test]
fn sentinel_url_with_everything() {
    let s = sentinel_of(
        "redis+sentinel://app:p%40ss@10.0.0.1:26380,sentinel-b,[::1]:5000/mymaster?sentinel_password=s%26cret&db=3",
    );
    assert_eq!(
        s.sentinels,
        vec![
            hp("10.0.0.1", 26380),
            hp("sentinel-b", 26379),
            hp("::1", 5000)
        ]
    );
    assert_eq!(s.service, "mymaster");
    assert_eq!(s.credentials.username.as_deref(), Some("app"));
    assert_eq!(
        s.credentials.password.as_ref().map(|p| p.expose().as_str()),
        Some("p@ss")
    );
    assert_eq!(
        s.sentinel_password.as_ref().map(|p| p.expose().as_str()),
        Some("s&cret")
    );
    assert_eq!((s.db, s.tls), (3, false));
}

#[test]
fn sentinel_url_minimal_and_tls() {
    let s = sentinel_of("redis+sentinel://h:1/svc");
    assert_eq!(s.credentials, Credentials::default());
    assert_eq!(
        (s.db, s.tls, s.sentinel_password.is_none()),
        (0, false, true)
    );
    let s = sentinel_of("rediss+sentinel://:only-password@h:1/svc");
    assert!(s.tls);
    assert_eq!(s.credentials.username, None);
    assert!(s.credentials.password.is_some());
}

#[test]
fn cluster_url() {
    let Ok(RedisTopology::Cluster(c)) = RedisTopology::parse("redis-cluster://u:pw@a:7000,b")
    else {
        panic!("not a cluster");
    };
    assert_eq!(c.nodes, vec![hp("a", 7000), hp("b", 6379)]);
    assert_eq!(c.credentials.username.as_deref(), Some("u"));
}

#[test]
fn bad_urls_are_refused_with_a_reason() {
    for (url, reason) in [
        ("memcached://h:1", "must start with"),
        ("127.0.0.1:6379", "must be a URL"),
        ("redis+sentinel://h:1", "names the master's service"),
        ("redis+sentinel://h:1/", "names the master's service"),
        ("redis+sentinel:///mymaster", "names no host"),
        ("redis+sentinel://h:1,/mymaster", "is not host:port"),
        ("redis+sentinel://h:port/mymaster", "is not host:port"),
        ("redis+sentinel://h:0/mymaster", "is not host:port"),
        ("redis+sentinel://[::1/mymaster", "is not host:port"),
        ("redis+sentinel://h:1/mymaster?db=x", "db must be"),
        ("redis+sentinel://h:1/mymaster?db=-1", "db must be"),
        (
            "redis+sentinel://h:1/mymaster?timeout=1s",
            "unknown parameter `timeout`",
        ),
        (
            "redis+sentinel://h:1/mymaster?sentinel_password=%zz",
            "percent-encoding",
        ),
        ("redis-cluster://h:1/0", "takes no database"),
        ("redis-cluster://h:1?db=1", "takes no database"),
        ("redis-cluster://", "names no host"),
    ] {
        let err = RedisTopology::parse(url).expect_err(url);
        assert!(err.contains(reason), "{url}: {err}");
    }
}

#[test]
fn passwords_never_print() {
    let url = "redis+sentinel://u:hunter2@h:1/m?sentinel_password=swordfish";
    let debug = format!("{:?}", RedisTopology::parse(url).expect("parses"));
    assert!(
        !debug.contains("hunter2") && !debug.contains("swordfish"),
        "{debug}"
    );
    let debug = format!(
        "{:?}",
        RedisTopology::parse("redis-cluster://u:hunter2@h:1")
    );
    assert!(!debug.contains("hunter2"), "{debug}");
    // A malformed URL is reported without repeating it.
    let err = RedisTopology::parse("redis-cluster://u:hunter2@h:1/0").expect_err("bad");
    assert!(!err.contains("hunter2"), "{err}");
    let err = RedisTopology::parse("redis+sentinel://u:hun%zzter2@h:1/m").expect_err("bad");
    assert!(!err.contains("hunter2") && !err.contains("hun"), "{err}");
}

#[test]
fn config_accepts_the_ha_forms_and_names_the_key() {
    for url in [
        "redis://127.0.0.1:6379/0",
        "redis+sentinel://h:26379,g:26379/mymaster?db=1",
        "rediss+sentinel://h:26379/mymaster",
        "redis-cluster://h:7000,g:7001",
    ] {
        let config =
            crate::config::Config::from_toml(&format!("[redis]\nurl = \"{url}\"\n")).expect(url);
        assert!(matches!(config.redis_topology(), Ok(Some(_))), "{url}");
    }
    let err = crate::config::Config::from_toml("[redis]\nurl = \"redis+sentinel://h:1\"\n")
        .expect_err("no service");
    assert!(err.to_string().contains("redis.url: "), "{err}");
}
