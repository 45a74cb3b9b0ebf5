//! Good and bad `[database] url` forms, and that no password reaches
//! `Debug` or an error message.
use super::*;

fn hosts(url: &str) -> Vec<(String, String)> {
    pg_hosts(url)
        .unwrap_or_else(|e| panic!("{url}: {e}"))
        .into_iter()
        .map(|h| (h.label, h.url.expose().clone()))
        .collect()
}

fn pair(label: &str, url: &str) -> (String, String) {
    (label.into(), url.into())
}

#[test]
fn one_host_passes_through() {
    assert_eq!(
        hosts("postgres://holdfast@127.0.0.1/holdfast"),
        vec![pair(
            "127.0.0.1:5432",
            "postgres://holdfast@127.0.0.1/holdfast"
        )]
    );
    assert_eq!(
        hosts("postgresql://u:pw@db.example:6432/app?sslmode=require"),
        vec![pair(
            "db.example:6432",
            "postgresql://u:pw@db.example:6432/app?sslmode=require"
        )]
    );
}

#[test]
fn a_host_list_becomes_one_url_per_host() {
    assert_eq!(
        hosts("postgres://u:p%40ss@h1:5433,h2,[::1]:5434/db?connect_timeout=2"),
        vec![
            pair(
                "h1:5433",
                "postgres://u:p%40ss@h1:5433/db?connect_timeout=2"
            ),
            pair("h2:5432", "postgres://u:p%40ss@h2/db?connect_timeout=2"),
            pair(
                "[::1]:5434",
                "postgres://u:p%40ss@[::1]:5434/db?connect_timeout=2"
            ),
        ]
    );
    assert_eq!(
        hosts("postgres://a,b"),
        vec![
            pair("a:5432", "postgres://a"),
            pair("b:5432", "postgres://b")
        ]
    );
}

#[test]
fn a_socket_url_without_hosts_is_one_host() {
    let got = hosts("postgres:///holdfast?host=/run/postgresql");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].1, "postgres:///holdfast?host=/run/postgresql");
}

#[test]
fn bad_forms_are_refused_with_a_reason() {
    for (url, reason) in [
        ("mysql://h/db", "must start with postgres://"),
        ("postgres:/h/db", "must start with postgres://"),
        ("postgres://h1,,h2/db", "host 2 of 3"),
        ("postgres://h1:5432,h2:0/db", "host 2 of 2"),
        ("postgres://h1:port/db", "host 1 of 1"),
        ("postgres://h1,[::1/db", "host 2 of 2"),
        ("postgres://h1,::1/db", "host 2 of 2"),
        ("postgres://h1,h2/db?host=h3", "takes no host"),
        ("postgres://h1,h2/db?port=5", "takes no host"),
    ] {
        let err = pg_hosts(url).expect_err(url);
        assert!(err.contains(reason), "{url}: {err}");
    }
}

#[test]
fn the_password_never_reaches_an_error_or_debug() {
    for url in [
        "postgres://app:hunter2secret@h1,h2:bad/db",
        "postgres://app:hunter2secret@h1,/db",
        "postgres://app:hunter2/secret@h1,h2/db",
        "postgres://app:hunter2secret@h1:99999/db",
        "mysql://app:hunter2secret@h1/db",
    ] {
        let err = pg_hosts(url).expect_err(url);
        assert!(!err.contains("hunter2"), "{url}: {err}");
    }
    let good = pg_hosts("postgres://app:hunter2secret@h1,h2/db").expect("good");
    let debug = format!("{good:?}");
    assert!(!debug.contains("hunter2"), "{debug}");
    assert!(
        debug.contains("h1:5432") && debug.contains("h2:5432"),
        "{debug}"
    );
}

#[test]
fn config_errors_name_the_key_and_hide_the_password() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("holdfast.toml");
    std::fs::write(
        &path,
        "[database]\nurl = \"postgres://app:hunter2secret@h1,,h2/db\"\n\
         replica_url = \"postgres://app:hunter2secret@r1:x/db\"\n",
    )
    .expect("write");
    let err = crate::config::Config::load(Some(&path))
        .expect_err("bad URLs")
        .to_string();
    assert!(err.contains("database.url"), "{err}");
    assert!(err.contains("database.replica_url"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
}
