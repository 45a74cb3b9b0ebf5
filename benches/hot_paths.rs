//! Micro benchmarks of the per-request paths, on a real `AppState` over the
//! embedded store (SQLite in a temp dir): token issue, verification cold
//! (signature check) and warm (validation-cache hit), API key and authz
//! cache hits, one Argon2id hash with the service's parameters, and
//! signing and verifying with each algorithm (EdDSA, ES256, RS256).
//!
//! `cargo bench --bench hot_paths`. Under `cargo test` each runs once.

use divan::{Bencher, black_box};
use holdfast::app::AppState;
use holdfast::auth::accounts::Registration;
use holdfast::auth::passwords::hash_once;
use holdfast::config::Config;
use std::sync::OnceLock;
use uuid::Uuid;

fn main() {
    divan::main();
}

struct World {
    runtime: tokio::runtime::Runtime,
    state: AppState,
    user: Uuid,
    token: String,
    api_key: String,
    _dir: tempfile::TempDir,
}

/// One app for every benchmark, with a user who has a role, a token, an
/// API key and a cached authz decision.
fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let dir = tempfile::tempdir().expect("tempdir");
        let config_path = dir.path().join("holdfast.toml");
        std::fs::write(
            &config_path,
            format!("data_dir = \"{}\"\n", dir.path().display()),
        )
        .expect("config");
        let config = Config::load(Some(&config_path)).expect("config");
        let (state, user, api_key) = runtime.block_on(async {
            let state = AppState::build(config).await.expect("state");
            let now = holdfast::auth::now();
            let user = state
                .accounts()
                .register(
                    Registration {
                        email: "bench@example.com".into(),
                        username: "bench".into(),
                        password: "tangerine-orbit-lamp".into(),
                        roles: vec!["admin".into()],
                    },
                    now,
                )
                .await
                .expect("user");
            let key = state
                .api_keys()
                .create(user.id, "bench", &["users".to_string()], None, now)
                .await
                .expect("api key");
            state
                .api_keys()
                .authenticate(&key.key, "127.0.0.1", now)
                .await
                .expect("warm");
            state
                .rbac()
                .check(user.id, "docs:read")
                .await
                .expect("warm");
            (state, user.id, key.key)
        });
        let token = state
            .tokens()
            .issue_for(
                user,
                &["admin".to_string()],
                Uuid::new_v4(),
                holdfast::auth::now(),
            )
            .expect("token");
        World {
            runtime,
            state,
            user,
            token,
            api_key,
            _dir: dir,
        }
    })
}

#[divan::bench]
fn token_issue(bencher: Bencher) {
    let w = world();
    let roles = vec!["admin".to_string()];
    let sid = Uuid::new_v4();
    bencher.bench(|| {
        w.state
            .tokens()
            .issue_for(w.user, black_box(&roles), sid, holdfast::auth::now())
            .expect("issue")
    });
}

/// Header decode, signature check, claims, revocations (and the cache
/// insert a miss pays).
#[divan::bench]
fn verify_cold(bencher: Bencher) {
    let w = world();
    bencher.bench(|| {
        let header = jsonwebtoken::decode_header(black_box(&w.token)).expect("header");
        w.state
            .tokens()
            .verify_with_header(&w.token, header, holdfast::auth::now())
            .expect("verify")
    });
}

/// SHA-256 of the token, cache hit, liveness re-checks.
#[divan::bench]
fn verify_warm(bencher: Bencher) {
    let w = world();
    bencher.bench(|| {
        w.state
            .tokens()
            .verify(black_box(&w.token), holdfast::auth::now())
            .expect("verify")
    });
}

#[divan::bench]
fn api_key_cache_hit(bencher: Bencher) {
    let w = world();
    bencher.bench(|| {
        w.runtime
            .block_on(w.state.api_keys().authenticate(
                black_box(&w.api_key),
                "127.0.0.1",
                holdfast::auth::now(),
            ))
            .expect("key")
    });
}

#[divan::bench]
fn authz_cache_hit(bencher: Bencher) {
    let w = world();
    bencher.bench(|| {
        w.runtime
            .block_on(w.state.rbac().check(w.user, black_box("docs:read")))
            .expect("authz")
    });
}

/// m = 19 MiB, t = 2, p = 1: the cost of one login on a hash worker.
#[divan::bench(sample_count = 20, sample_size = 1)]
fn argon2id_hash() {
    hash_once(black_box("tangerine-orbit-lamp")).expect("hash");
}

const ALGORITHMS: [&str; 3] = ["EdDSA", "ES256", "RS256"];

/// An app signing with one algorithm (`[tokens] algorithm`), and a token
/// it issued.
struct Signer {
    _runtime: tokio::runtime::Runtime,
    state: AppState,
    token: String,
    _dir: tempfile::TempDir,
}

fn signer(algorithm: &str) -> &'static Signer {
    static SIGNERS: [OnceLock<Signer>; 3] = [const { OnceLock::new() }; 3];
    let index = ALGORITHMS
        .iter()
        .position(|a| *a == algorithm)
        .expect("algorithm");
    SIGNERS[index].get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let dir = tempfile::tempdir().expect("tempdir");
        let config_path = dir.path().join("holdfast.toml");
        std::fs::write(
            &config_path,
            format!(
                "data_dir = \"{}\"\n[tokens]\nalgorithm = \"{algorithm}\"\n",
                dir.path().display()
            ),
        )
        .expect("config");
        let config = Config::load(Some(&config_path)).expect("config");
        let state = runtime.block_on(AppState::build(config)).expect("state");
        let token = state
            .tokens()
            .issue_for(
                Uuid::new_v4(),
                &["admin".to_string()],
                Uuid::new_v4(),
                holdfast::auth::now(),
            )
            .expect("token");
        Signer {
            _runtime: runtime,
            state,
            token,
            _dir: dir,
        }
    })
}

/// Issuing an access token with each algorithm's key (claims, header,
/// signature).
#[divan::bench(args = ALGORITHMS)]
fn sign_with(bencher: Bencher, algorithm: &str) {
    let s = signer(algorithm);
    let roles = vec!["admin".to_string()];
    let (user, sid) = (Uuid::new_v4(), Uuid::new_v4());
    bencher.bench(|| {
        s.state
            .tokens()
            .issue_for(user, black_box(&roles), sid, holdfast::auth::now())
            .expect("issue")
    });
}

/// A cold verification (signature check included) with each algorithm.
#[divan::bench(args = ALGORITHMS)]
fn verify_with(bencher: Bencher, algorithm: &str) {
    let s = signer(algorithm);
    bencher.bench(|| {
        let header = jsonwebtoken::decode_header(black_box(&s.token)).expect("header");
        s.state
            .tokens()
            .verify_with_header(&s.token, header, holdfast::auth::now())
            .expect("verify")
    });
}
