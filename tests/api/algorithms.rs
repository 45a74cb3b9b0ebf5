//! Signing algorithms (DESIGN.md §2, §6 `[tokens] algorithm`): EdDSA, ES256
//! and RS256 tokens verified by code that is not holdfast's, through the
//! JWKS it serves; rotation and revoke-all for each; an algorithm change
//! across restarts; and `X-Auth-Roles` for external tokens.

use crate::support;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use parking_lot::Mutex;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::jwks::{ISSUER, UpstreamKey, start_upstream};
use support::{Backend, Stack, TestApp, Tokens};

fn header(token: &str) -> jsonwebtoken::Header {
    jsonwebtoken::decode_header(token).expect("header")
}

fn kid(token: &str) -> String {
    header(token).kid.expect("kid")
}

fn b64(part: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD.decode(part).expect("base64url")
}

async fn jwks(app: &TestApp) -> Vec<Value> {
    let reply = app.get("/.well-known/jwks.json", None).await;
    assert_eq!(reply.status, StatusCode::OK);
    reply.body["keys"].as_array().expect("keys").clone()
}

/// Checks `token` as a resource server would, knowing only the served
/// JWKS: twice, once with the `jsonwebtoken` crate's JWK reader and once
/// with the raw public-key primitives of aws-lc-rs built from the JWK's
/// members (no holdfast code involved in either). Returns the claims.
async fn verify_independently(app: &TestApp, token: &str, alg: &str) -> Value {
    let served = jwks(app).await;
    let kid = kid(token);
    let jwk = served
        .iter()
        .find(|k| k["kid"] == kid.as_str())
        .unwrap_or_else(|| panic!("kid {kid} not served: {served:?}"));
    assert_eq!(jwk["alg"], alg, "{jwk}");
    assert_eq!(jwk["use"], "sig", "{jwk}");
    assert_eq!(
        header(token).alg,
        serde_json::from_value(json!(alg)).expect("alg")
    );

    // 1. jsonwebtoken's own JWK path.
    let parsed: jsonwebtoken::jwk::Jwk = serde_json::from_value(jwk.clone()).expect("jwk");
    let key = jsonwebtoken::DecodingKey::from_jwk(&parsed).expect("decoding key");
    let mut validation = jsonwebtoken::Validation::new(header(token).alg);
    validation.set_audience(&["holdfast-tests"]);
    validation.set_issuer(&["http://holdfast.test"]);
    let claims = jsonwebtoken::decode::<Value>(token, &key, &validation)
        .expect("verifies with jsonwebtoken")
        .claims;

    verify_signature_by_hand(jwk, token, alg);
    assert_kid_is_thumbprint(jwk, &kid, alg);
    claims
}

/// The signature checked with aws-lc-rs, from the JWK's members only.
fn verify_signature_by_hand(jwk: &Value, token: &str, alg: &str) {
    use aws_lc_rs::signature as sig;
    let parts: Vec<&str> = token.split('.').collect();
    let message = format!("{}.{}", parts[0], parts[1]);
    let signature = b64(parts[2]);
    let member = |name: &str| b64(jwk[name].as_str().expect(name));
    let checked = match alg {
        "EdDSA" => {
            assert_eq!(
                (&jwk["kty"], &jwk["crv"]),
                (&json!("OKP"), &json!("Ed25519"))
            );
            sig::UnparsedPublicKey::new(&sig::ED25519, member("x"))
                .verify(message.as_bytes(), &signature)
        }
        "ES256" => {
            assert_eq!((&jwk["kty"], &jwk["crv"]), (&json!("EC"), &json!("P-256")));
            let mut point = vec![4u8];
            point.extend(member("x"));
            point.extend(member("y"));
            sig::UnparsedPublicKey::new(&sig::ECDSA_P256_SHA256_FIXED, point)
                .verify(message.as_bytes(), &signature)
        }
        "RS256" => {
            assert_eq!(jwk["kty"], "RSA");
            assert!(member("n").len() >= 256, "RSA 2048 at least");
            sig::RsaPublicKeyComponents {
                n: member("n"),
                e: member("e"),
            }
            .verify(
                &sig::RSA_PKCS1_2048_8192_SHA256,
                message.as_bytes(),
                &signature,
            )
        }
        other => panic!("unexpected algorithm {other}"),
    };
    checked.expect("signature verifies from the JWK's members");
}

/// The kid is the RFC 7638 thumbprint of the published key.
fn assert_kid_is_thumbprint(jwk: &Value, kid: &str, alg: &str) {
    let canonical = match alg {
        "EdDSA" => format!(
            r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#,
            jwk["x"].as_str().expect("x")
        ),
        "ES256" => format!(
            r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
            jwk["x"].as_str().expect("x"),
            jwk["y"].as_str().expect("y")
        ),
        _ => format!(
            r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#,
            jwk["e"].as_str().expect("e"),
            jwk["n"].as_str().expect("n")
        ),
    };
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, canonical.as_bytes());
    assert_eq!(kid, URL_SAFE_NO_PAD.encode(digest.as_ref()));
}

/// Refreshes until the access token is signed by a key other than `old`
/// (the standby took over), within `limit`.
async fn refresh_until_signed_by_new_key(
    app: &TestApp,
    mut tokens: Tokens,
    old: &str,
    limit: Duration,
) -> Tokens {
    let deadline = Instant::now() + limit;
    loop {
        let reply = app.refresh(&tokens.refresh).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        tokens = Tokens::from(&reply.body);
        if kid(&tokens.access) != old {
            return tokens;
        }
        assert!(
            Instant::now() < deadline,
            "the standby never started signing"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn algorithms_in_use(app: &TestApp) -> Value {
    app.get("/.well-known/openid-configuration", None)
        .await
        .body["id_token_signing_alg_values_supported"]
        .clone()
}

/// Log in, verify independently, rotate, revoke all: for one algorithm.
async fn one_algorithm_end_to_end(alg: &str) {
    let config = format!("[tokens]\nalgorithm = \"{alg}\"\njwks_max_age = \"2s\"\n");
    let stack = Stack::start_with(Backend::PostgresRedis, &config).await;
    let app = &stack.app;
    let root = app.admin_token().await;
    let first = app.user("ann").await;
    let claims = verify_independently(app, &first.access, alg).await;
    assert_eq!(claims["sid"], first.session_id.as_str());
    assert_eq!(
        app.verify(&first.access).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(algorithms_in_use(app).await, json!([alg]));
    for key in jwks(app).await {
        for private in ["d", "p", "q", "dp", "dq", "qi"] {
            assert!(
                key.get(private).is_none(),
                "private member {private} served: {key}"
            );
        }
    }

    let rotated = rotate_to_a_standby(app, &root, &first, alg).await;
    let (fresh, served) = revoke_all_keys(app, &root, [&first, &rotated], alg).await;
    forged_tokens_are_refused(app, &fresh, &served, alg).await;
}

/// Rotation: a standby of the same kind, published first, then signing;
/// the old key's tokens keep verifying. Returns tokens the new key signed.
async fn rotate_to_a_standby(app: &TestApp, root: &str, first: &Tokens, alg: &str) -> Tokens {
    let old_kid = kid(&first.access);
    let reply = app
        .call(Method::POST, "/api/v1/admin/keys/rotate", Some(root), None)
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let new_kid = reply.body["kid"].as_str().expect("kid").to_string();
    let served = jwks(app).await;
    assert_eq!(served.len(), 2, "{served:?}");
    assert!(served.iter().all(|k| k["alg"] == alg), "{served:?}");
    let second = app.user("bob").await;
    assert_eq!(kid(&second.access), old_kid, "a standby does not sign");
    let rotated =
        refresh_until_signed_by_new_key(app, second, &old_kid, Duration::from_secs(15)).await;
    assert_eq!(kid(&rotated.access), new_kid);
    verify_independently(app, &rotated.access, alg).await;
    verify_independently(app, &first.access, alg).await;
    assert_eq!(
        app.verify(&first.access).await.status,
        StatusCode::NO_CONTENT
    );
    rotated
}

/// Revoke all: every key gone, a new one of the same kind signs at once.
/// Returns fresh tokens and the one key now served.
async fn revoke_all_keys(
    app: &TestApp,
    root: &str,
    old_tokens: [&Tokens; 2],
    alg: &str,
) -> (Tokens, Vec<Value>) {
    let reply = app
        .call(
            Method::POST,
            "/api/v1/admin/keys/revoke-all",
            Some(root),
            None,
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let served = jwks(app).await;
    assert_eq!(served.len(), 1, "{served:?}");
    assert_eq!(served[0]["alg"], alg);
    for old in old_tokens {
        app.verify(&old.access).await.expect_error(401, "AUTH003");
    }
    let fresh = app.login_ok("ann").await;
    assert_eq!(kid(&fresh.access), served[0]["kid"].as_str().expect("kid"));
    verify_independently(app, &fresh.access, alg).await;
    assert_eq!(
        app.verify(&fresh.access).await.status,
        StatusCode::NO_CONTENT
    );
    (fresh, served)
}

/// From the attacker's side: the same token with its header's alg swapped,
/// and an HS256 token keyed with the published key, are refused.
async fn forged_tokens_are_refused(app: &TestApp, fresh: &Tokens, served: &[Value], alg: &str) {
    let parts: Vec<&str> = fresh.access.split('.').collect();
    let mut forged_header: Value = serde_json::from_slice(&b64(parts[0])).expect("header");
    for other in ["EdDSA", "ES256", "RS256", "none"]
        .into_iter()
        .filter(|a| *a != alg)
    {
        forged_header["alg"] = json!(other);
        let forged = format!(
            "{}.{}.{}",
            URL_SAFE_NO_PAD.encode(forged_header.to_string()),
            parts[1],
            parts[2]
        );
        app.verify(&forged).await.expect_error(401, "AUTH003");
    }
    let claims: Value = serde_json::from_slice(&b64(parts[1])).expect("claims");
    let mut hs = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    hs.kid = Some(kid(&fresh.access));
    let hs = jsonwebtoken::encode(
        &hs,
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(served[0].to_string().as_bytes()),
    )
    .expect("hs256");
    app.verify(&hs).await.expect_error(401, "AUTH003");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eddsa_tokens_verify_independently_rotate_and_revoke() {
    one_algorithm_end_to_end("EdDSA").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn es256_tokens_verify_independently_rotate_and_revoke() {
    one_algorithm_end_to_end("ES256").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rs256_tokens_verify_independently_rotate_and_revoke() {
    one_algorithm_end_to_end("RS256").await;
}

/// What this thread logs while the guard lives (the app's start-up runs
/// on the test's own thread, so its warnings land here).
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    fn capture() -> (Self, tracing::subscriber::DefaultGuard) {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&buffer);
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || Sink(Arc::clone(&sink)))
            .finish();
        (Self(buffer), tracing::subscriber::set_default(subscriber))
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock()).into_owned()
    }
}

struct Sink(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Sink {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn set_algorithm(stack: &Stack, from: &str, to: &str) {
    let path = stack.data.path().join("holdfast.toml");
    let text = std::fs::read_to_string(&path).expect("config");
    let from = format!("algorithm = \"{from}\"");
    assert!(text.contains(&from), "{text}");
    std::fs::write(&path, text.replace(&from, &format!("algorithm = \"{to}\""))).expect("write");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_algorithm_change_across_restarts_rotates_once_and_never_back() {
    let mut stack = Stack::start_with(
        Backend::PostgresRedis,
        "[tokens]\nalgorithm = \"EdDSA\"\njwks_max_age = \"2s\"\n",
    )
    .await;
    let before = stack.app.user("cat").await;
    let ed_kid = kid(&before.access);

    // The first node with ES256: one rotation, standby first.
    set_algorithm(&stack, "EdDSA", "ES256");
    stack.restart_app().await;
    let served = jwks(&stack.app).await;
    let mut algs: Vec<&str> = served.iter().filter_map(|k| k["alg"].as_str()).collect();
    algs.sort();
    assert_eq!(algs, ["ES256", "EdDSA"], "{served:?}");
    let es_kid = served
        .iter()
        .find(|k| k["alg"] == "ES256")
        .and_then(|k| k["kid"].as_str())
        .expect("ES256 standby")
        .to_string();

    // A second node with ES256 during the standby: no second rotation.
    stack.restart_app().await;
    assert_eq!(jwks(&stack.app).await.len(), 2, "rotated twice");

    let after = refresh_until_signed_by_new_key(
        &stack.app,
        before.clone(),
        &ed_kid,
        Duration::from_secs(15),
    )
    .await;
    assert_eq!(kid(&after.access), es_kid);
    verify_independently(&stack.app, &after.access, "ES256").await;
    // Tokens of the old key verify until they expire.
    verify_independently(&stack.app, &before.access, "EdDSA").await;
    assert_eq!(
        stack.app.verify(&before.access).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        algorithms_in_use(&stack.app).await,
        json!(["ES256", "EdDSA"])
    );

    // A node restarted with the old algorithm warns and does not rotate back.
    set_algorithm(&stack, "ES256", "EdDSA");
    let (logs, guard) = Logs::capture();
    stack.restart_app().await;
    drop(guard);
    let text = logs.text();
    assert!(
        text.contains("older signing key"),
        "no warning logged: {text}"
    );
    assert!(
        text.contains("not this node's [tokens] algorithm"),
        "{text}"
    );
    assert_eq!(jwks(&stack.app).await.len(), 2, "rotated back: {text}");
    let later = stack.app.login_ok("cat").await;
    assert_eq!(
        kid(&later.access),
        es_kid,
        "the EdDSA node signs with the active key"
    );
    verify_independently(&stack.app, &later.access, "ES256").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_tokens_answer_roles_from_the_roles_claim() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (up, _server) = start_upstream(listener).await;
    let key = UpstreamKey::new("k1");
    up.publish(&[&key]);
    const PLAIN: &str = "https://plain.test/";
    let config = format!(
        "[[idp]]\nname = \"groups\"\nissuer = \"{ISSUER}\"\njwks_url = \"http://{addr}/jwks\"\naudience = \"holdfast-tests\"\nroles_claim = \"groups\"\n\
         [[idp]]\nname = \"plain\"\nissuer = \"{PLAIN}\"\njwks_url = \"http://{addr}/jwks\"\naudience = \"holdfast-tests\"\n"
    );
    let stack = Stack::start_with(Backend::Embedded, &config).await;
    let app = &stack.app;
    let token = |iss: &str, extra: Value| {
        let now = holdfast::auth::now();
        let mut claims = json!({"iss": iss, "aud": "holdfast-tests", "sub": "up-1",
                                "iat": now, "exp": now + 600});
        if let (Some(claims), Some(extra)) = (claims.as_object_mut(), extra.as_object()) {
            claims.extend(extra.clone());
        }
        key.sign(claims)
    };
    let roles = async |token: String| {
        let reply = app.verify(&token).await;
        assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.body);
        assert_eq!(reply.header("x-auth-method"), Some("external"));
        reply
            .header("x-auth-roles")
            .expect("X-Auth-Roles is always sent")
            .to_string()
    };
    assert_eq!(
        roles(token(ISSUER, json!({"groups": ["dev", "ops"]}))).await,
        "dev,ops"
    );
    assert_eq!(roles(token(ISSUER, json!({"groups": "dev"}))).await, "dev");
    assert_eq!(roles(token(ISSUER, json!({}))).await, "");
    assert_eq!(
        roles(token(ISSUER, json!({"groups": {"admin": true}}))).await,
        ""
    );
    assert_eq!(
        roles(token(ISSUER, json!({"groups": [1, true, "dev"]}))).await,
        "dev"
    );
    // No roles_claim on this IdP: empty, whatever the token says.
    assert_eq!(roles(token(PLAIN, json!({"groups": ["admin"]}))).await, "");
    // From the attacker's side: an upstream group whose name holds a comma
    // (or padding) must not read as the role `admin` to a proxy that
    // splits the header.
    let smuggled = roles(token(
        ISSUER,
        json!({"groups": ["viewer,admin", " admin", "dev"]}),
    ))
    .await;
    assert!(
        smuggled.split(',').all(|r| r.trim() != "admin"),
        "{smuggled}"
    );
    assert_eq!(smuggled, "dev");
}

#[test]
fn only_the_three_algorithms_and_a_named_roles_claim_are_accepted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let load = |text: &str| {
        let path = dir.path().join("holdfast.toml");
        std::fs::write(&path, text).expect("write");
        holdfast::config::Config::load(Some(&path))
    };
    for alg in ["EdDSA", "ES256", "RS256"] {
        load(&format!("[tokens]\nalgorithm = \"{alg}\"\n")).expect(alg);
    }
    // HS256 would sign with a secret any verifier holds; none is a token
    // anyone can forge.
    for alg in ["HS256", "none", "ES384", "es256"] {
        let error = load(&format!("[tokens]\nalgorithm = \"{alg}\"\n")).expect_err(alg);
        assert!(
            error.0.iter().any(|e| e.starts_with("tokens.algorithm")),
            "{error}"
        );
    }
    let idp = "[[idp]]\nname = \"up\"\nissuer = \"https://idp.test/\"\njwks_url = \"https://idp.test/jwks\"\naudience = \"a\"\n";
    load(&format!("{idp}roles_claim = \"groups\"\n")).expect("roles_claim");
    let error = load(&format!("{idp}roles_claim = \" \"\n")).expect_err("blank roles_claim");
    assert!(
        error.0.iter().any(|e| e.starts_with("idp.up.roles_claim")),
        "{error}"
    );
}
