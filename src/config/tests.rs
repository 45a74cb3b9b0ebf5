//! Unit tests of `config`, kept beside it so the module stays readable.
use super::*;
use std::time::Duration;

fn load_toml(text: &str) -> Result<Config, ConfigError> {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("holdfast.toml");
    std::fs::write(&path, text).expect("write");
    Config::load(Some(&path))
}

#[test]
fn defaults_are_the_embedded_development_shape() {
    let config = load_toml("").expect("defaults load");
    assert_eq!(config.env, Environment::Development);
    assert_eq!(config.listen.to_string(), "127.0.0.1:8080");
    assert!(matches!(
        config.database_backend(),
        Ok(DatabaseBackend::Sqlite(_))
    ));
    assert_eq!(config.tokens.access_ttl, Duration::from_secs(900));
    assert_eq!(config.redis.timeout, Duration::from_millis(250));
}

#[test]
fn bad_keys_are_named() {
    let err = load_toml("[tokens]\naccess_ttl = \"soon\"\n").expect_err("must fail");
    assert!(err.to_string().contains("tokens.access_ttl"), "{err}");
    let err = load_toml("[databse]\nurl = \"x\"\n").expect_err("must fail");
    assert!(err.to_string().contains("databse"), "{err}");
}

#[test]
fn breaker_overrides_apply_per_dependency() {
    let config = load_toml(
        "[breaker]\nopen_wait = \"2s\"\n[breaker.redis]\nminimum_calls = 3\nopen_wait = \"1s\"\n",
    )
    .expect("load");
    let db = config.breaker.for_dependency("database");
    let redis = config.breaker.for_dependency("redis");
    assert_eq!(
        (db.minimum_calls, db.open_wait),
        (5, Duration::from_secs(2))
    );
    assert_eq!(
        (redis.minimum_calls, redis.open_wait),
        (3, Duration::from_secs(1))
    );
    let err = load_toml("[breaker.database]\nfailure_rate_threshold = 0\n").expect_err("bad");
    assert!(
        err.to_string()
            .contains("breaker.database.failure_rate_threshold"),
        "{err}"
    );
}

#[test]
fn rates_parse_as_the_contract_writes_them() {
    assert_eq!(
        parse_rate("10/min").map(|w| (w.limit, w.period.as_secs())),
        Some((10, 60))
    );
    assert_eq!(
        parse_rate("5/15min").map(|w| (w.limit, w.period.as_secs())),
        Some((5, 900))
    );
    assert_eq!(
        parse_rate("100/1h").map(|w| (w.limit, w.period.as_secs())),
        Some((100, 3600))
    );
    assert!(parse_rate("0/min").is_none() && parse_rate("ten/min").is_none());
    let err = load_toml("[rate_limit]\nlogin_per_ip = \"lots\"\n").expect_err("bad");
    assert!(err.to_string().contains("rate_limit.login_per_ip"), "{err}");
}

#[test]
fn production_requires_master_key_postgres_and_redis() {
    let err =
        load_toml("env = \"production\"\nissuer = \"https://a.example\"\n").expect_err("must fail");
    let text = err.to_string();
    assert!(text.contains("master_key_file"), "{text}");
    assert!(text.contains("database.url"), "{text}");
    assert!(text.contains("redis.url"), "{text}");
}

#[test]
fn lockout_limits_default_to_the_contract_and_must_fit() {
    let config = load_toml("").expect("defaults");
    let r = &config.rate_limit;
    assert_eq!(
        (r.login_failures_account_ceiling.limit, r.lockout_max),
        (100, Duration::from_secs(900))
    );
    assert_eq!(r.login_failures_account_ceiling.period.as_secs(), 900);
    assert_eq!(
        (
            r.api_key_failures_per_ip.limit,
            r.api_key_failures_per_ip.period.as_secs()
        ),
        (20, 60)
    );
    let err = load_toml("[rate_limit]\nlogin_failures_account_ceiling = \"100/1h\"\n")
        .expect_err("longer than lockout_max");
    assert!(
        err.to_string()
            .contains("rate_limit.login_failures_account_ceiling"),
        "{err}"
    );
    let err = load_toml("[rate_limit]\nlockout_max = \"0s\"\n").expect_err("zero");
    assert!(err.to_string().contains("rate_limit.lockout_max"), "{err}");
}
