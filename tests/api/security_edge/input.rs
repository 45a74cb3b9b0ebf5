//! Bad input never answers 500 (security issue 11, item 10): every string
//! field of every endpoint gets every bad value of `bad_json_values`, every
//! JSON endpoint every bad body, and every path and query parameter bad
//! percent-encoding; the answer is always a contract error (or a 2xx where
//! the value happens to be acceptable), on both backends.

use super::*;

/// Limits far above what the table sends, so that every case reaches the
/// code behind the limiter (a 429 would hide a 500).
const HIGH_LIMITS: &str = "[rate_limit]\nlogin_per_ip = \"100000/min\"\nregister_per_ip = \"100000/min\"\nrefresh_per_ip = \"100000/min\"\nlogin_failures_per_account = \"100000/15min\"\n";

#[derive(Clone, Copy)]
enum Auth {
    None,
    User,
    /// A session of its own per request: logout ends the one it is given.
    FreshUser,
    Admin,
    IntrospectKey,
}

struct Caller {
    user: String,
    admin: String,
    introspect_key: String,
    user_id: String,
}

impl Caller {
    async fn headers(&self, app: &TestApp, auth: Auth) -> Vec<(&'static str, String)> {
        let bearer = |t: &str| vec![("authorization", format!("Bearer {t}"))];
        match auth {
            Auth::None => Vec::new(),
            Auth::User => bearer(&self.user),
            Auth::FreshUser => bearer(&app.login_ok("edgeuser").await.access),
            Auth::Admin => bearer(&self.admin),
            Auth::IntrospectKey => vec![("x-api-key", self.introspect_key.clone())],
        }
    }
}

/// `(method, path, auth, body template)`: `BAD` in the template is replaced
/// by each bad value, raw.
fn json_cases(user_id: &str) -> Vec<JsonCase> {
    let mut cases = auth_cases();
    cases.extend(account_cases());
    cases.extend(admin_cases(user_id));
    cases
}

type JsonCase = (Method, String, Auth, &'static str);

/// Registration, login, refresh and logout.
fn auth_cases() -> Vec<JsonCase> {
    let p = |s: &str| s.to_string();
    vec![
        (
            Method::POST,
            p("/api/v1/auth/register"),
            Auth::None,
            r#"{"email":BAD,"username":"newbie","password":"tangerine-orbit-lamp"}"#,
        ),
        (
            Method::POST,
            p("/api/v1/auth/register"),
            Auth::None,
            r#"{"email":"newbie@example.com","username":BAD,"password":"tangerine-orbit-lamp"}"#,
        ),
        (
            Method::POST,
            p("/api/v1/auth/register"),
            Auth::None,
            r#"{"email":"newbie@example.com","username":"newbie","password":BAD}"#,
        ),
        (
            Method::POST,
            p("/api/v1/auth/login"),
            Auth::None,
            r#"{"login":BAD,"password":"tangerine-orbit-lamp"}"#,
        ),
        (
            Method::POST,
            p("/api/v1/auth/login"),
            Auth::None,
            r#"{"login":"edgeuser","password":BAD}"#,
        ),
        (
            Method::POST,
            p("/api/v1/auth/refresh"),
            Auth::None,
            r#"{"refresh_token":BAD}"#,
        ),
        (
            Method::POST,
            p("/api/v1/auth/logout"),
            Auth::FreshUser,
            r#"{"refresh_token":BAD}"#,
        ),
    ]
}

/// The caller's own profile, password and API keys.
fn account_cases() -> Vec<JsonCase> {
    let p = |s: &str| s.to_string();
    vec![
        (
            Method::PUT,
            p("/api/v1/users/me"),
            Auth::User,
            r#"{"email":BAD}"#,
        ),
        (
            Method::PUT,
            p("/api/v1/users/me"),
            Auth::User,
            r#"{"username":BAD}"#,
        ),
        (
            Method::PATCH,
            p("/api/v1/users/me/password"),
            Auth::User,
            r#"{"current_password":BAD,"new_password":"marble-kettle-horizon"}"#,
        ),
        (
            Method::PATCH,
            p("/api/v1/users/me/password"),
            Auth::User,
            r#"{"current_password":"tangerine-orbit-lamp","new_password":BAD}"#,
        ),
        (
            Method::POST,
            p("/api/v1/api-keys"),
            Auth::User,
            r#"{"name":BAD,"scopes":["users"]}"#,
        ),
        (
            Method::POST,
            p("/api/v1/api-keys"),
            Auth::User,
            r#"{"name":"k","scopes":[BAD]}"#,
        ),
        (
            Method::POST,
            p("/api/v1/api-keys"),
            Auth::User,
            r#"{"name":"k","scopes":BAD}"#,
        ),
        (
            Method::POST,
            p("/api/v1/api-keys"),
            Auth::User,
            r#"{"name":"k","scopes":["users"],"expires_in":BAD}"#,
        ),
    ]
}

/// Authorization checks, role administration and introspection.
fn admin_cases(user_id: &str) -> Vec<JsonCase> {
    let p = |s: &str| s.to_string();
    let roles = format!("/api/v1/admin/users/{user_id}/roles");
    vec![
        (
            Method::POST,
            p("/api/v1/authz/check"),
            Auth::User,
            r#"{"permission":BAD}"#,
        ),
        (
            Method::POST,
            p("/api/v1/authz/check"),
            Auth::Admin,
            r#"{"permission":"users:read","user_id":BAD}"#,
        ),
        (
            Method::POST,
            p("/api/v1/admin/roles"),
            Auth::Admin,
            r#"{"name":BAD,"permissions":["users:read"]}"#,
        ),
        (
            Method::POST,
            p("/api/v1/admin/roles"),
            Auth::Admin,
            r#"{"name":"edge-role","permissions":[BAD]}"#,
        ),
        (
            Method::POST,
            p("/api/v1/admin/roles"),
            Auth::Admin,
            r#"{"name":"edge-role","permissions":BAD}"#,
        ),
        (
            Method::PUT,
            roles.clone(),
            Auth::Admin,
            r#"{"roles":[BAD]}"#,
        ),
        (Method::PUT, roles, Auth::Admin, r#"{"roles":BAD}"#),
        (
            Method::POST,
            p("/api/v1/auth/introspect"),
            Auth::IntrospectKey,
            r#"{"token":BAD}"#,
        ),
    ]
}

/// Values that must be refused as malformed whatever the field: exactly
/// 400 REQ001, or 413 REQ002 for the body past the limit.
fn expected(label: &str) -> Option<(u16, &'static str)> {
    match label {
        "nul"
        | "lone surrogate"
        | "lone low surrogate"
        | "invalid escape"
        | "raw control character"
        | "huge float" => Some((400, "REQ001")),
        "70 KB string" => Some((413, "REQ002")),
        _ => None,
    }
}

async fn callers(app: &TestApp) -> Caller {
    let admin = app.admin_token().await;
    let user = app.user("edgeuser").await.access;
    let me = app.get("/api/v1/users/me", Some(&user)).await;
    let admin_key = app.api_key(&admin, &["introspect"]).await.1;
    Caller {
        user,
        admin,
        introspect_key: admin_key,
        user_id: me.body["id"].as_str().expect("id").to_string(),
    }
}

async fn json_fields_never_fail(app: &TestApp, caller: &Caller) {
    let json = ("content-type", "application/json".to_string());
    for (method, path, auth, template) in json_cases(&caller.user_id) {
        for (label, value) in bad_json_values() {
            let mut headers = caller.headers(app, auth).await;
            headers.push(json.clone());
            let body = template.replace("BAD", &value);
            let reply = app.raw(method.clone(), &path, &headers, Some(body)).await;
            let what = format!("{method} {path} {template} with {label}");
            assert_contract_answer(&reply, &what);
            if let Some((status, code)) = expected(label) {
                assert_eq!(
                    (reply.status.as_u16(), reply.code()),
                    (status, code),
                    "{what}: {}",
                    reply.body
                );
            }
        }
        for (label, body) in bad_bodies() {
            let mut headers = caller.headers(app, auth).await;
            headers.push(json.clone());
            let reply = app.raw(method.clone(), &path, &headers, Some(body)).await;
            assert_contract_answer(&reply, &format!("{method} {path} body {label}"));
        }
        // A JSON body under another content type.
        let mut headers = caller.headers(app, auth).await;
        headers.push(("content-type", "text/plain".to_string()));
        let body = template.replace("BAD", "\"x\"");
        let reply = app.raw(method.clone(), &path, &headers, Some(body)).await;
        assert_contract_answer(&reply, &format!("{method} {path} as text/plain"));
    }
}

async fn form_fields_never_fail(app: &TestApp, caller: &Caller) {
    let form = (
        "content-type",
        "application/x-www-form-urlencoded".to_string(),
    );
    let cases = [
        ("token=a%00b", Some((400, "REQ001"))),
        // Decoded lossily (U+FFFD): an unknown token, not an error.
        ("token=%FF%FE", None),
        ("token=%ED%A0%80", None),
        ("token=%", None),
        ("token=a&token=b", None),
        ("nothing=here", Some((400, "REQ001"))),
        ("", Some((400, "REQ001"))),
    ];
    let long = format!("token={}", "a".repeat(60_000));
    let huge = format!("token={}", "a".repeat(70 * 1024));
    let mut all: Vec<(String, Option<(u16, &str)>)> =
        cases.iter().map(|(b, e)| (b.to_string(), *e)).collect();
    all.push((long, None));
    all.push((huge, Some((413, "REQ002"))));
    for (body, expect) in all {
        let mut headers = caller.headers(app, Auth::IntrospectKey).await;
        headers.push(form.clone());
        let reply = app
            .raw(
                Method::POST,
                "/api/v1/auth/introspect",
                &headers,
                Some(body.clone()),
            )
            .await;
        let what = format!("introspect form {:.40}", body);
        assert_contract_answer(&reply, &what);
        if let Some((status, code)) = expect {
            assert_eq!(
                (reply.status.as_u16(), reply.code()),
                (status, code),
                "{what}"
            );
        }
    }
}

async fn queries_and_paths_never_fail(app: &TestApp, caller: &Caller) {
    queries_never_fail(app, caller).await;
    path_segments_never_fail(app, caller).await;
}

/// Malformed, duplicate and oversized query strings.
async fn queries_never_fail(app: &TestApp, caller: &Caller) {
    // Under and over the 8 KiB query limit, and far over it (the longest
    // URI the client library can send).
    let long = "a".repeat(8_000);
    let too_long = "a".repeat(9_000);
    let far_too_long = "a".repeat(60_000);
    let queries = [
        "/api/v1/admin/users?query=a%00b".to_string(),
        "/api/v1/admin/users?query=%FF".to_string(),
        "/api/v1/admin/users?query=%".to_string(),
        "/api/v1/admin/users?limit=abc".to_string(),
        "/api/v1/admin/users?limit=99999999999999999999".to_string(),
        "/api/v1/admin/users?limit=1e400".to_string(),
        "/api/v1/admin/users?limit=-1".to_string(),
        "/api/v1/admin/users?query=a&query=b".to_string(),
        format!("/api/v1/admin/users?query={long}"),
        format!("/api/v1/admin/users?query={too_long}"),
        format!("/api/v1/admin/users?query={far_too_long}"),
        "/api/v1/admin/audit?since=abc".to_string(),
        "/api/v1/admin/audit?since=99999999999999999999".to_string(),
        "/api/v1/admin/audit?since=%00".to_string(),
    ];
    for path in &queries {
        let headers = caller.headers(app, Auth::Admin).await;
        let reply = app.raw(Method::GET, path, &headers, None).await;
        let what = format!("GET {:.60}", path);
        assert_contract_answer(&reply, &what);
        if path.contains("%00") || path.contains("limit=abc") {
            reply.expect_error(400, "REQ001");
        }
        if path.len() > 9_000 {
            reply.expect_error(413, "REQ002");
        }
    }
}

/// Malformed, non-UUID and oversized path segments.
async fn path_segments_never_fail(app: &TestApp, caller: &Caller) {
    let segments = [
        "%00",
        "a%00b",
        "%FF",
        "%",
        "not-a-uuid",
        &"a".repeat(10_000),
    ];
    for segment in segments {
        let targets = [
            (
                Method::DELETE,
                format!("/api/v1/users/me/sessions/{segment}"),
                Auth::User,
            ),
            (
                Method::DELETE,
                format!("/api/v1/api-keys/{segment}"),
                Auth::User,
            ),
            (
                Method::POST,
                format!("/api/v1/admin/users/{segment}/disable"),
                Auth::Admin,
            ),
            (
                Method::DELETE,
                format!("/api/v1/admin/roles/{segment}"),
                Auth::Admin,
            ),
            (
                Method::POST,
                format!("/api/v1/admin/circuit-breakers/{segment}/reset"),
                Auth::Admin,
            ),
        ];
        for (method, path, auth) in targets {
            let headers = caller.headers(app, auth).await;
            let reply = app.raw(method.clone(), &path, &headers, None).await;
            let what = format!("{method} {:.60}", path);
            assert_contract_answer(&reply, &what);
            if segment.contains("%00") || segment == "%FF" {
                reply.expect_error(400, "REQ001");
            }
        }
    }
}

async fn bad_input_never_answers_500(backend: Backend) {
    let stack = Stack::start_with(backend, HIGH_LIMITS).await;
    let app = &stack.app;
    let caller = callers(app).await;
    json_fields_never_fail(app, &caller).await;
    form_fields_never_fail(app, &caller).await;
    queries_and_paths_never_fail(app, &caller).await;
    // Still serving, and nothing leaked into the account.
    let me = app.get("/api/v1/users/me", Some(&caller.user)).await;
    assert_eq!(me.status, StatusCode::OK, "{}", me.body);
    assert_eq!(me.body["username"], "edgeuser");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_never_answers_500_on_postgres() {
    bad_input_never_answers_500(Backend::PostgresRedis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_never_answers_500_embedded() {
    bad_input_never_answers_500(Backend::Embedded).await;
}
