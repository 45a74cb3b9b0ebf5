//! The operators' status page (`GET /status`, issue 15 item 3): over HTTP
//! (type, its own Content-Security-Policy, the redirect from `/`, the
//! admin listener), and in headless Chromium, which must lay it out and
//! show the components and the mode — also while PostgreSQL is paused,
//! with no error text, URL or address on it.

use crate::support;

use reqwest::StatusCode;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use support::procs::free_port;
use support::{Backend, Stack, TestApp};

/// GET without following redirects; the status, headers and text.
async fn fetch(url: &str) -> (StatusCode, reqwest::header::HeaderMap, String) {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let response = client.get(url).send().await.expect("send");
    let status = response.status();
    let headers = response.headers().clone();
    (status, headers, response.text().await.expect("text"))
}

fn header<'a>(headers: &'a reqwest::header::HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

#[tokio::test]
async fn the_page_is_html_under_its_own_policy_and_home_redirects_to_it() {
    let stack = Stack::start(Backend::Embedded).await;
    let (status, headers, page) = fetch(&stack.app.url("/status")).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(header(&headers, "content-type"), "text/html; charset=utf-8");
    let policy = header(&headers, "content-security-policy");
    assert!(policy.starts_with("default-src 'none'"), "{policy}");
    assert!(policy.contains("style-src 'sha256-"), "{policy}");
    assert!(!policy.contains("script"), "{policy}");
    assert!(!policy.contains("unsafe"), "{policy}");
    assert_eq!(header(&headers, "cache-control"), "no-store");
    for needed in [
        r#"<meta http-equiv="refresh" content="5">"#,
        r#"name="viewport""#,
        r#"data-name="database""#,
        r#"data-name="redis""#,
        r#"id="mode""#,
        ">normal<",
        ">healthy<",
        "validation",
        "revocations held",
    ] {
        assert!(page.contains(needed), "{needed} missing from {page}");
    }
    for absent in ["<script", "src=", "http://", "https://", "<link"] {
        assert!(!page.contains(absent), "{absent} on the page: {page}");
    }

    let (status, headers, _) = fetch(&stack.app.url("/")).await;
    assert!(
        [StatusCode::SEE_OTHER, StatusCode::TEMPORARY_REDIRECT].contains(&status),
        "{status}"
    );
    assert_eq!(header(&headers, "location"), "/status");
}

#[tokio::test]
async fn security_events_of_the_last_hour_are_counted_by_kind() {
    let stack = Stack::start(Backend::Embedded).await;
    stack.app.user("eve").await;
    stack
        .app
        .login("eve", "not-her-password")
        .await
        .expect_error(401, "AUTH001");
    let (_, _, page) = fetch(&stack.app.url("/status")).await;
    assert!(page.contains("login_failed"), "{page}");
}

/// An upstream IdP that refuses connections: the page names it and the
/// failure's kind, never its JWKS URL or address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_idp_is_shown_by_its_failure_kind_without_its_url() {
    let config = r#"
[[idp]]
name = "upstream"
issuer = "https://idp.example"
jwks_url = "http://127.0.0.1:9/jwks"
audience = "holdfast-tests"
"#;
    let stack = Stack::start_with(Backend::Embedded, config).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    let page = loop {
        let (_, _, page) = fetch(&stack.app.url("/status")).await;
        if page.contains(r#"<dd class="kind">"#) {
            break page;
        }
        assert!(Instant::now() < deadline, "no IdP failure shown: {page}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(page.contains(r#"data-name="idp:upstream""#), "{page}");
    assert!(page.contains(">refused<"), "{page}");
    // Failing calls in the window make the node degraded, breaker open or not.
    assert!(page.contains(r#"id="status">degraded<"#), "{page}");
    for raw in ["127.0.0.1", "/jwks", "idp.example", ":9/"] {
        assert!(!page.contains(raw), "{raw:?} on the status page: {page}");
    }
}

/// With `[admin] listen` set, the page and its redirect are served by the
/// admin listener, like `/metrics`, and the public one answers 404.
#[tokio::test]
async fn with_an_admin_listener_the_page_is_served_there_alone() {
    let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let stack = Stack::start_with(
        Backend::Embedded,
        &format!("[admin]\nlisten = \"{admin}\"\n"),
    )
    .await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let admin_base = format!("http://{}", listener.local_addr().expect("addr"));
    let router = holdfast::http::admin_router(&stack.app.state);
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });

    for path in ["/status", "/"] {
        let (status, _, _) = fetch(&stack.app.url(path)).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "public {path}");
    }
    let (status, headers, page) = fetch(&format!("{admin_base}/status")).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(header(&headers, "content-security-policy").contains("style-src 'sha256-"));
    let (status, headers, _) = fetch(&format!("{admin_base}/")).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(header(&headers, "location"), "/status");
    server.abort();
}

/// Where screenshots go: `target/status-page/`, beside the build.
fn shots() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/status-page");
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_lays_out_the_page_with_components_and_mode() {
    let stack = Stack::start(Backend::Embedded).await;
    let url = stack.app.url("/status");
    let shot = shots().join("embedded-phone.png");
    let dom = chromium::dump_dom(&url).await;
    assert!(dom.contains(r#"data-name="database""#), "{dom}");
    assert!(
        dom.contains(r#"id="mode""#) && dom.contains(">normal<"),
        "{dom}"
    );
    chromium::screenshot(&url, &shot, (412, 1200)).await;
}

/// PostgreSQL paused (SIGSTOP), its breaker opened by failed logins: the
/// page still renders at once, shows the database breaker open, and says
/// what failed by its kind, with no driver text, URL or address. The
/// breaker stays open for 30 s (`SHORT_BREAKERS`), so what Chromium is
/// shown is still the open breaker, not a half-open probe.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_postgres_paused_the_page_renders_and_shows_the_breaker_open() {
    let stack = Stack::start_with(Backend::PostgresRedis, support::SHORT_BREAKERS).await;
    let app = &stack.app;
    app.user("eve").await;
    app.login("eve", "not-her-password")
        .await
        .expect_error(401, "AUTH001");
    let pg = stack.pg.as_ref().expect("postgres");
    pg.pause();
    app.fail_database_until_open().await;

    let started = Instant::now();
    let (status, _, page) = fetch(&app.url("/status")).await;
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "the page waited {:?} on a paused database",
        started.elapsed()
    );
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_database_open(&page);
    no_raw_failure_text(app, &page, pg.port);

    let url = app.url("/status");
    let dom = chromium::dump_dom(&url).await;
    assert_database_open(&dom);
    assert!(dom.contains(">degraded<"), "{dom}");
    assert!(
        dom.contains("login_failed"),
        "counted without the database: {dom}"
    );
    no_raw_failure_text(app, &dom, pg.port);
    chromium::screenshot(&url, &shots().join("postgres-paused.png"), (1200, 1100)).await;
    chromium::screenshot(
        &url,
        &shots().join("postgres-paused-phone.png"),
        (412, 1800),
    )
    .await;
    pg.resume();
}

fn assert_database_open(page: &str) {
    assert!(
        page.contains(r#"data-name="database" data-state="open""#),
        "database breaker not shown open: {page}"
    );
}

fn no_raw_failure_text(app: &TestApp, page: &str, pg_port: u16) {
    let host = app.base.trim_start_matches("http://");
    for raw in [
        "127.0.0.1",
        "localhost",
        "postgres://",
        "redis://",
        "error",
        "Error",
        host,
        &format!(":{pg_port}"),
    ] {
        assert!(!page.contains(raw), "{raw:?} on the status page: {page}");
    }
}

/// Headless Chromium, each run in a profile of its own and bounded in
/// time. `--no-sandbox`: the suite runs as root (CI), where Chromium's
/// sandbox refuses to start; the page it loads is our own. A machine without Chromium
/// fails these tests with the way to install it: a page nobody rendered
/// is not a tested page.
mod chromium {
    use std::path::Path;
    use std::process::Stdio;
    use std::time::Duration;
    use tokio::process::Command;

    const RUN_FOR_AT_MOST: Duration = Duration::from_secs(60);

    fn binary() -> &'static str {
        for name in ["chromium", "chromium-browser"] {
            let found = std::process::Command::new("sh")
                .args(["-c", &format!("command -v {name}")])
                .output()
                .is_ok_and(|o| o.status.success());
            if found {
                return name;
            }
        }
        panic!(
            "headless Chromium is needed to test the status page and none is installed: \
             run scripts/test as root (it installs Debian's `chromium`), or \
             `apt-get install chromium`"
        );
    }

    async fn run(args: &[String]) -> String {
        let profile = tempfile::tempdir().expect("profile dir");
        let mut cmd = Command::new(binary());
        cmd.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
        let child = cmd.spawn().expect("start chromium");
        let out = tokio::time::timeout(RUN_FOR_AT_MOST, child.wait_with_output())
            .await
            .expect("chromium ran past its bound")
            .expect("chromium output");
        assert!(
            out.status.success(),
            "chromium failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The DOM after Chromium has parsed and laid out the page.
    pub async fn dump_dom(url: &str) -> String {
        run(&["--dump-dom".into(), url.into()]).await
    }

    pub async fn screenshot(url: &str, file: &Path, (width, height): (u32, u32)) {
        let _ = std::fs::remove_file(file);
        run(&[
            format!("--screenshot={}", file.display()),
            format!("--window-size={width},{height}"),
            url.into(),
        ])
        .await;
        let size = std::fs::metadata(file).map(|m| m.len()).unwrap_or(0);
        assert!(size > 1000, "no screenshot written to {}", file.display());
    }
}
