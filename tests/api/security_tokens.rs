//! Security issue 11, items 7 and 8, from the attacker's side: break-glass
//! tokens with bent claims or a leaked `jti`, upstream tokens not yet valid,
//! an oversized JWKS, weak passwords, and passwords hashed before NFKC
//! normalisation.

use crate::support;

use holdfast::auth::emergency;
use holdfast::auth::passwords::hash_once;
use holdfast::store::{PRE_NFKC_PREFIX, User, UserStatus};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use support::jwks::{ISSUER, UpstreamKey, start_upstream};
use support::{Backend, Stack};
use uuid::Uuid;

const BIN: &str = env!("CARGO_BIN_EXE_holdfast");
const ISS: &str = "http://holdfast.test";
const AUD: &str = "holdfast-tests";

/// A break-glass key pair, the public half written to `dir`.
fn emergency_keys(dir: &Path) -> String {
    let (private, public) = emergency::keygen().expect("keygen");
    std::fs::write(dir.join("emergency.pub"), public).expect("write");
    std::fs::write(dir.join("emergency.key"), &private).expect("write");
    private
}

fn emergency_config(dir: &Path, deny: &[Uuid]) -> String {
    let deny: Vec<String> = deny.iter().map(|j| format!("\"{j}\"")).collect();
    format!(
        "[emergency]\npublic_key_file = \"{}\"\ndeny_jti = [{}]\n",
        dir.join("emergency.pub").display(),
        deny.join(", ")
    )
}

/// Good claims for this node; tests bend one at a time.
fn good_claims() -> Value {
    let now = holdfast::auth::now();
    json!({"iss": ISS, "aud": AUD, "sub": "emergency", "iat": now, "nbf": now,
           "exp": now + 600, "jti": Uuid::new_v4(), "emergency": true,
           "reason": "INC-11: database down", "scope": ["admin"]})
}

/// Signs whatever `claims` say with the offline key, as an attacker
/// holding a leaked key or an operator with a wrong clock would.
fn sign(private: &str, claims: &Value) -> String {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    header.kid = Some(emergency::KID.into());
    let key = jsonwebtoken::EncodingKey::from_ed_pem(private.as_bytes()).expect("key");
    jsonwebtoken::encode(&header, claims, &key).expect("sign")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emergency_tokens_with_bent_claims_are_refused() {
    let keys = tempfile::tempdir().expect("tempdir");
    let private = emergency_keys(keys.path());
    let stack = Stack::start_with(Backend::Embedded, &emergency_config(keys.path(), &[])).await;
    let app = &stack.app;
    let now = holdfast::auth::now();

    let good = sign(&private, &good_claims());
    let reply = app.verify(&good).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.body);
    assert_eq!(reply.header("x-auth-method"), Some("emergency"));
    // nbf is optional.
    let mut no_nbf = good_claims();
    no_nbf.as_object_mut().expect("object").remove("nbf");
    let reply = app.verify(&sign(&private, &no_nbf)).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.body);

    let bent: Vec<(&str, Value)> = vec![
        // Signed 5 h ahead, valid for an hour from then: it would have
        // worked for 6 h.
        (
            "iat in the future",
            json!({"iat": now + 5 * 3600, "nbf": now, "exp": now + 6 * 3600}),
        ),
        (
            "longer than an hour",
            json!({"iat": now - 60, "nbf": now - 60, "exp": now + 3600}),
        ),
        (
            "nbf before iat",
            json!({"iat": now, "nbf": now - 3600, "exp": now + 600}),
        ),
        ("nbf in the future", json!({"nbf": now + 300})),
        ("empty reason", json!({"reason": ""})),
        ("blank reason", json!({"reason": "   "})),
        ("other audience", json!({"aud": "another-node"})),
        ("other issuer", json!({"iss": "https://elsewhere.test"})),
    ];
    for (why, changes) in bent {
        let mut claims = good_claims();
        for (key, value) in changes.as_object().expect("object") {
            claims[key] = value.clone();
        }
        let token = sign(&private, &claims);
        let reply = app.verify(&token).await;
        assert_eq!(
            reply.status,
            StatusCode::UNAUTHORIZED,
            "{why}: {}",
            reply.body
        );
        assert_eq!(reply.code(), "AUTH003", "{why}");
        app.get("/api/v1/admin/circuit-breakers", Some(&token))
            .await
            .expect_error(401, "AUTH003");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaked_emergency_token_is_refused_by_jti_after_a_reload() {
    let keys = tempfile::tempdir().expect("tempdir");
    let private = emergency_keys(keys.path());
    let stack = Stack::start_with(Backend::Embedded, &emergency_config(keys.path(), &[])).await;
    let app = &stack.app;
    let leaked_claims = good_claims();
    let leaked = sign(&private, &leaked_claims);
    let other = sign(&private, &good_claims());
    assert_eq!(app.verify(&leaked).await.status, StatusCode::NO_CONTENT);

    let file = stack.data.path().join("holdfast.toml");
    let original = std::fs::read_to_string(&file).expect("read config");
    let jti: Uuid = leaked_claims["jti"]
        .as_str()
        .and_then(|j| j.parse().ok())
        .expect("jti");
    let denying = original.replace(
        &emergency_config(keys.path(), &[]),
        &emergency_config(keys.path(), &[jti]),
    );
    assert_ne!(denying, original);
    std::fs::write(&file, &denying).expect("write config");
    app.state.reload(Some(&file)).expect("reload");
    app.verify(&leaked).await.expect_error(401, "AUTH004");
    app.get("/api/v1/admin/circuit-breakers", Some(&leaked))
        .await
        .expect_error(401, "AUTH004");
    assert_eq!(app.verify(&other).await.status, StatusCode::NO_CONTENT);

    // A broken file changes nothing: the leaked token stays refused.
    std::fs::write(&file, format!("{denying}\nno_such_key = 1\n")).expect("write");
    assert!(app.state.reload(Some(&file)).is_err());
    app.verify(&leaked).await.expect_error(401, "AUTH004");
}

/// `holdfast serve`, killed on drop.
struct Served(Child);

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The real binary: `emergency issue` names what it signed for, and a
/// SIGHUP to `serve` reloads the deny list without ending the process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_deny_list_of_a_running_server() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (token, jti) = issue_from_the_cli(dir.path());
    let port = support::procs::free_port();
    let config = |deny: &[Uuid]| {
        format!(
            "listen = \"127.0.0.1:{port}\"\nissuer = \"{ISS}\"\naudience = \"{AUD}\"\ndata_dir = \"{}\"\n{}",
            dir.path().join("data").display(),
            emergency_config(dir.path(), deny)
        )
    };
    let file = dir.path().join("holdfast.toml");
    std::fs::write(&file, config(&[])).expect("write config");
    let mut served = serve(&file);
    let client = reqwest::Client::new();
    let verify = || {
        client
            .get(format!("http://127.0.0.1:{port}/api/v1/auth/verify"))
            .bearer_auth(&token)
            .send()
    };
    let mut status = None;
    for _ in 0..150 {
        if let Ok(reply) = verify().await {
            status = Some(reply.status());
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        status,
        Some(StatusCode::NO_CONTENT),
        "serve accepts the token"
    );

    std::fs::write(&file, config(&[jti])).expect("write config");
    // SAFETY: a signal to the child this test spawned and still owns.
    let sent = unsafe { libc::kill(served.0.id() as libc::pid_t, libc::SIGHUP) };
    assert_eq!(sent, 0);
    let mut refused = false;
    for _ in 0..50 {
        let reply = verify().await.expect("serve survives SIGHUP");
        if reply.status() == StatusCode::UNAUTHORIZED {
            let body: Value = reply.json().await.expect("json");
            assert_eq!(body["error"]["code"], "AUTH004");
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(refused, "the denied jti is refused after SIGHUP");
    assert!(
        served.0.try_wait().expect("try_wait").is_none(),
        "still serving"
    );
}

/// `holdfast serve --config FILE` with a clean `HOLDFAST_*` environment.
fn serve(file: &Path) -> Served {
    let mut serve = Command::new(BIN);
    for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("HOLDFAST_")) {
        serve.env_remove(key);
    }
    let child = serve
        .args(["serve", "--config"])
        .arg(file)
        .env("HOLDFAST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn serve");
    Served(child)
}

/// Break-glass keys in `dir` and a token from `emergency issue`, which
/// names the issuer and audience it signed for. Returns the token and jti.
fn issue_from_the_cli(dir: &Path) -> (String, Uuid) {
    emergency_keys(dir);
    let out = Command::new(BIN)
        .args(["emergency", "issue", "--reason", "INC-11", "--ttl", "10m"])
        .args(["--issuer", ISS, "--audience", AUD, "--key"])
        .arg(dir.join("emergency.key"))
        .env("HOLDFAST_LOG", "error")
        .output()
        .expect("issue");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("iss={ISS:?}")) && stderr.contains(&format!("aud={AUD:?}")),
        "{stderr}"
    );
    let token = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let payload = token.split('.').nth(1).expect("payload");
    let claims: Value = serde_json::from_slice(
        &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, payload)
            .expect("base64"),
    )
    .expect("claims");
    assert_eq!(
        (claims["iss"].as_str(), claims["aud"].as_str()),
        (Some(ISS), Some(AUD))
    );
    let jti: Uuid = claims["jti"]
        .as_str()
        .and_then(|j| j.parse().ok())
        .expect("jti");
    (token, jti)
}

fn idp_config(name: &str, issuer: &str, url: &str) -> String {
    format!(
        "[[idp]]\nname = \"{name}\"\nissuer = \"{issuer}\"\njwks_url = \"{url}\"\naudience = \"{AUD}\"\ntimeout = \"2s\"\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_tokens_not_yet_valid_and_oversized_jwks_are_refused() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (up, _server) = start_upstream(listener).await;
    let k1 = UpstreamKey::new("k1");
    // Valid keys, 1 MiB and a bit: served with and without a length.
    up.publish_padded(&[&k1], 1024 * 1024 + 1);
    const CHUNKED: &str = "https://chunked.test/";
    let config = format!(
        "{}{}",
        idp_config("sized", ISSUER, &format!("http://{addr}/jwks")),
        idp_config("chunked", CHUNKED, &format!("http://{addr}/jwks-chunked"))
    );
    let stack = Stack::start_with(Backend::Embedded, &config).await;
    let app = &stack.app;
    let token_from = |iss: &str, extra: Value| {
        let now = holdfast::auth::now();
        let mut claims = json!({"iss": iss, "aud": AUD, "sub": "upstream-user",
                                "iat": now, "exp": now + 600});
        for (key, value) in extra.as_object().expect("object") {
            claims[key] = value.clone();
        }
        k1.sign(claims)
    };

    for (iss, idp) in [(ISSUER, "idp:sized"), (CHUNKED, "idp:chunked")] {
        let reply = app.verify(&token_from(iss, json!({}))).await;
        reply.expect_error(503, "SVC001");
        assert_eq!(reply.body["error"]["details"]["dependency"], idp);
    }
    assert!(up.fetches() >= 2, "both were fetched, and refused");

    // The same keys at a sane size: accepted.
    up.publish(&[&k1]);
    let admin = app.admin_token().await;
    let refreshed = app
        .post("/api/v1/admin/jwks/refresh", Some(&admin), json!({}))
        .await;
    assert_eq!(refreshed.status, StatusCode::OK, "{}", refreshed.body);
    for iss in [ISSUER, CHUNKED] {
        let reply = app.verify(&token_from(iss, json!({}))).await;
        assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.body);
    }

    // nbf: past (and within the leeway) accepted, future refused.
    let now = holdfast::auth::now();
    for nbf in [now - 60, now + 10] {
        let reply = app.verify(&token_from(ISSUER, json!({"nbf": nbf}))).await;
        assert_eq!(
            reply.status,
            StatusCode::NO_CONTENT,
            "nbf {nbf}: {}",
            reply.body
        );
    }
    app.verify(&token_from(ISSUER, json!({"nbf": now + 600})))
        .await
        .expect_error(401, "AUTH003");
}

/// NFKC changes it: "ﬁ" (U+FB01) and full-width letters.
const RAW: &str = "ﬁｎｅ-tangerine-orbit";

/// Every weak shape is a 422 naming the field, at sign-up and on change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weak_passwords_are_refused_with_the_field_named() {
    let stack = Stack::start_with(
        Backend::Embedded,
        "[rate_limit]\nregister_per_ip = \"1000/min\"\n",
    )
    .await;
    let app = &stack.app;
    let weak = [
        "123456789012",
        "aaaaaaaaaaaa",
        "abcdefghijkl",
        "qwertyuiopas",
        "passwordpassword",
        "            ",
        "zyxwvutsrqpo",
        "1234567890-=",
        "dragondragon",
        "1q2w3e4r5t6y",
        "ｐａｓｓｗｏｒｄｐａｓｓｗｏｒｄ",
        "short",
    ];
    for (i, password) in weak.iter().enumerate() {
        let reply = app
            .post(
                "/api/v1/auth/register",
                None,
                json!({"email": format!("weak{i}@example.com"), "username": format!("weak{i}"),
                       "password": password}),
            )
            .await;
        assert_eq!(reply.status.as_u16(), 422, "{password:?}: {}", reply.body);
        assert_eq!(reply.code(), "VAL001");
        assert_eq!(
            reply.body["error"]["details"]["fields"][0]["field"], "password",
            "{password:?}: {}",
            reply.body
        );
    }
    let user = app.user("strong").await;
    for password in weak {
        let reply = app
            .call(
                reqwest::Method::PATCH,
                "/api/v1/users/me/password",
                Some(&user.access),
                Some(json!({"current_password": support::PASSWORD, "new_password": password})),
            )
            .await;
        assert_eq!(reply.status.as_u16(), 422, "{password:?}: {}", reply.body);
        assert_eq!(
            reply.body["error"]["details"]["fields"][0]["field"], "new_password",
            "{}",
            reply.body
        );
    }
}

/// A user as a store holds it, hashed outside the service.
async fn insert_user(stack: &Stack, name: &str, password_hash: String) {
    let now = holdfast::auth::now();
    stack
        .app
        .state
        .user_store()
        .create(&User {
            id: Uuid::new_v4(),
            email: format!("{name}@example.com"),
            username: name.into(),
            password_hash,
            status: UserStatus::Active,
            roles: vec![],
            not_before: None,
            security_version: 0,
            created_at: now,
            updated_at: now,
        })
        .await
        .expect("insert user");
}

async fn stored_hash(stack: &Stack, name: &str) -> String {
    let user = stack
        .app
        .state
        .user_store()
        .by_login(name)
        .await
        .expect("read");
    user.expect("user").password_hash
}

async fn pre_normalisation_hashes_upgrade_on_login(backend: Backend) {
    let stack = Stack::start(backend).await;
    let app = &stack.app;
    let normalized = holdfast::auth::nfkc::normalize(RAW);
    assert_ne!(normalized, RAW);
    // Hashed from the raw form before normalisation, and marked so.
    let old = format!("{PRE_NFKC_PREFIX}{}", hash_once(RAW).expect("hash"));
    insert_user(&stack, "legacy", old.clone()).await;
    assert_eq!(stored_hash(&stack, "legacy").await, old, "the mark is kept");

    let reply = app.login("legacy", RAW).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let mut upgraded = String::new();
    for _ in 0..100 {
        upgraded = stored_hash(&stack, "legacy").await;
        if upgraded != old {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(upgraded.starts_with("$argon2id$"), "replaced: {upgraded}");
    // Now a hash of the NFKC form: the NFKC form logs in (it could not
    // against the raw hash), and so does the raw input, normalised.
    for input in [normalized.as_str(), RAW] {
        let reply = app.login("legacy", input).await;
        assert_eq!(reply.status, StatusCode::OK, "{input}: {}", reply.body);
    }

    // A hash taken as normalised never gets the raw-form check: the same
    // raw-form hash, unmarked, does not match the raw input.
    let unmarked = hash_once(RAW).expect("hash");
    insert_user(&stack, "modern", unmarked.clone()).await;
    app.login("modern", RAW).await.expect_error(401, "AUTH001");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(stored_hash(&stack, "modern").await, unmarked, "untouched");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pre_normalisation_hashes_upgrade_on_login_embedded() {
    pre_normalisation_hashes_upgrade_on_login(Backend::Embedded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pre_normalisation_hashes_upgrade_on_login_postgres() {
    pre_normalisation_hashes_upgrade_on_login(Backend::PostgresRedis).await;
}
