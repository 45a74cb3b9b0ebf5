//! Native TLS (`[tls]`) and the operators' listener (`[admin] listen`), on
//! the built binary as an operator runs it: handshake and ALPN, plain HTTP
//! refused, certificates replaced without a restart or a dropped
//! connection, bad files refused at start, `healthcheck` over TLS.

use crate::support;

use reqwest::{StatusCode, Version};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};
use support::procs::free_port;

const BIN: &str = env!("CARGO_BIN_EXE_holdfast");

/// A command with a clean HOLDFAST_* environment, run in `dir`.
fn holdfast(dir: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    for (key, _) in std::env::vars() {
        if key.starts_with("HOLDFAST_") {
            cmd.env_remove(key);
        }
    }
    cmd.current_dir(dir).env("HOLDFAST_LOG", "info");
    cmd
}

/// A self-signed P-256 certificate for localhost and 127.0.0.1, written as
/// `<name>.crt` and `<name>.key` in `dir`; returns the certificate's PEM.
fn self_signed(dir: &Path, name: &str) -> Vec<u8> {
    let cert = dir.join(format!("{name}.crt"));
    let key = dir.join(format!("{name}.key"));
    let out = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .arg("ec_paramgen_curve:P-256")
        .args(["-nodes", "-days", "2", "-subj", "/CN=localhost", "-addext"])
        .arg("subjectAltName=DNS:localhost,IP:127.0.0.1")
        // Otherwise openssl marks it a CA, which webpki refuses as a leaf.
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl (apt-get install openssl)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read(cert).expect("read cert")
}

/// Replaces `to` by `from` with a rename, as deployment tools do.
fn replace(from: &Path, to: &Path) {
    let staged = to.with_extension("new");
    std::fs::copy(from, &staged).expect("copy");
    std::fs::rename(staged, to).expect("rename");
}

/// A running `holdfast serve`, killed by PID on drop; its log lines
/// (stderr) arrive on `log`.
struct Server {
    child: Child,
    log: Receiver<String>,
}

impl Server {
    fn start(mut cmd: Command) -> Self {
        let mut child = cmd
            .arg("serve")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn serve");
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        let (log_tx, log) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = log_tx.send(line);
            }
        });
        let mut server = Server { child, log };
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            // Drained to the end: a closed pipe would fail the server's
            // next println.
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut banner = Vec::new();
        while Instant::now() < deadline {
            match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(line) if line.contains("listening") => return server,
                Ok(line) => banner.push(line),
                Err(_) => {
                    if let Ok(Some(status)) = server.child.try_wait() {
                        let log: Vec<String> = server.log.try_iter().collect();
                        panic!("serve exited early with {status}: {banner:?} {log:?}");
                    }
                }
            }
        }
        panic!("serve did not start: {banner:?}");
    }

    /// Waits for a log line containing `needle`.
    fn wait_for_log(&self, needle: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            if let Ok(line) = self.log.recv_timeout(left)
                && line.contains(needle)
            {
                return line;
            }
        }
        panic!("no log line with {needle:?} within {within:?}");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An embedded-mode node with `[tls]` on a free port.
struct TlsNode {
    dir: tempfile::TempDir,
    addr: SocketAddr,
    cert: PathBuf,
    key: PathBuf,
}

impl TlsNode {
    /// `first` is the name of the certificate the files start with.
    fn new(first: &str) -> (Self, Vec<u8>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let pem = self_signed(dir.path(), first);
        let cert = dir.path().join("tls.crt");
        let key = dir.path().join("tls.key");
        replace(&dir.path().join(format!("{first}.crt")), &cert);
        replace(&dir.path().join(format!("{first}.key")), &key);
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        (
            TlsNode {
                dir,
                addr,
                cert,
                key,
            },
            pem,
        )
    }

    fn command(&self) -> Command {
        let mut cmd = holdfast(self.dir.path());
        cmd.env("HOLDFAST_LISTEN", self.addr.to_string())
            .env("HOLDFAST_TLS__CERT_FILE", &self.cert)
            .env("HOLDFAST_TLS__KEY_FILE", &self.key);
        cmd
    }

    fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.addr.port())
    }

    /// A client that trusts `pem` alone and reaches `localhost` at the node.
    fn client(&self, pem: &[u8], http1_only: bool) -> reqwest::Client {
        let mut builder = reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(pem).expect("pem")])
            .resolve("localhost", self.addr)
            .pool_idle_timeout(Duration::from_secs(600))
            .timeout(Duration::from_secs(10));
        if http1_only {
            builder = builder.http1_only();
        }
        builder.build().expect("client")
    }
}

#[tokio::test]
async fn tls_speaks_http1_and_http2_by_alpn_and_refuses_plain_http() {
    let (node, pem) = TlsNode::new("a");
    let _server = Server::start(node.command());

    let h1 = node
        .client(&pem, true)
        .get(node.url("/livez"))
        .send()
        .await
        .expect("https, HTTP/1.1");
    assert_eq!(h1.status(), StatusCode::OK);
    assert_eq!(h1.version(), Version::HTTP_11);

    // reqwest offers h2 then http/1.1 by ALPN: the server must pick h2.
    let client = node.client(&pem, false);
    let h2 = client
        .get(node.url("/livez"))
        .send()
        .await
        .expect("https, h2");
    assert_eq!(h2.status(), StatusCode::OK);
    assert_eq!(h2.version(), Version::HTTP_2);
    sessions_name_the_tcp_peer(&node, &client).await;
    plain_http_gets_no_http_answer(&node).await;
}

/// Handlers still see the TCP peer (ConnectInfo): it is recorded on the
/// session a login creates.
async fn sessions_name_the_tcp_peer(node: &TlsNode, client: &reqwest::Client) {
    let register = client
        .post(node.url("/api/v1/auth/register"))
        .json(&json!({"email": "tls@example.com", "username": "tls", "password": "a-long-tls-passphrase"}))
        .send()
        .await
        .expect("register");
    assert_eq!(register.status(), StatusCode::CREATED);
    let login: Value = client
        .post(node.url("/api/v1/auth/login"))
        .json(&json!({"login": "tls", "password": "a-long-tls-passphrase"}))
        .send()
        .await
        .expect("login")
        .json()
        .await
        .expect("login json");
    let token = login["access_token"].as_str().expect("access_token");
    let sessions: Value = client
        .get(node.url("/api/v1/users/me/sessions"))
        .bearer_auth(token)
        .send()
        .await
        .expect("sessions")
        .json()
        .await
        .expect("sessions json");
    assert!(
        sessions.to_string().contains("127.0.0.1"),
        "the session names the client address: {sessions}"
    );
}

/// Plain HTTP on the TLS port: no HTTP answer, only a close or an alert.
async fn plain_http_gets_no_http_answer(node: &TlsNode) {
    let mut plain = TcpStream::connect(node.addr).expect("connect");
    plain
        .set_read_timeout(Some(Duration::from_secs(15)))
        .expect("timeout");
    plain
        .write_all(b"GET /livez HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .expect("write");
    let mut reply = Vec::new();
    let _ = plain.read_to_end(&mut reply);
    assert!(
        !reply.starts_with(b"HTTP/"),
        "plain HTTP got an HTTP answer: {:?}",
        String::from_utf8_lossy(&reply)
    );
    assert!(
        reply.is_empty() || reply[0] == 0x15,
        "a close or a TLS alert record: {reply:?}"
    );
    let err = reqwest::Client::new()
        .get(format!("http://{}/livez", node.addr))
        .timeout(Duration::from_secs(15))
        .send()
        .await;
    assert!(err.is_err(), "plain HTTP answered: {err:?}");
}

#[tokio::test]
async fn replaced_certificate_is_served_without_restart_and_open_connections_survive() {
    let (node, old_pem) = TlsNode::new("old");
    let new_pem = self_signed(node.dir.path(), "new");
    let server = Server::start(node.command());

    // A keep-alive connection opened before the change, by a client that
    // trusts the old certificate only: if this connection were dropped,
    // its next request would need a new handshake, which the new
    // certificate fails.
    let before = node.client(&old_pem, true);
    let first = before.get(node.url("/livez")).send().await.expect("old");
    assert_eq!(first.status(), StatusCode::OK);
    first.bytes().await.expect("body");

    replace(&node.dir.path().join("new.key"), &node.key);
    replace(&node.dir.path().join("new.crt"), &node.cert);
    server.wait_for_log("TLS certificate reloaded", Duration::from_secs(20));

    let after = node.client(&new_pem, true);
    let fresh = after.get(node.url("/livez")).send().await;
    assert_eq!(
        fresh
            .expect("new handshakes get the new certificate")
            .status(),
        StatusCode::OK
    );
    let stale = node
        .client(&old_pem, true)
        .get(node.url("/livez"))
        .send()
        .await;
    assert!(
        stale.is_err(),
        "new handshakes still get the old certificate"
    );

    let again = before
        .get(node.url("/livez"))
        .send()
        .await
        .expect("the connection opened before the reload still works");
    assert_eq!(again.status(), StatusCode::OK);

    // A bad new file is logged and the certificate in use stays.
    std::fs::write(&node.cert, b"-----BEGIN CERTIFICATE-----\nnot base64\n").expect("write");
    let line = server.wait_for_log("TLS certificate not reloaded", Duration::from_secs(20));
    assert!(line.contains("tls.cert_file"), "{line}");
    let still = after
        .get(node.url("/livez"))
        .send()
        .await
        .expect("the last good certificate is still served");
    assert_eq!(still.status(), StatusCode::OK);
    let new_handshake = node
        .client(&new_pem, true)
        .get(node.url("/livez"))
        .send()
        .await;
    assert_eq!(
        new_handshake
            .expect("new handshakes still get the last good certificate")
            .status(),
        StatusCode::OK
    );
}

#[test]
fn bad_certificate_or_key_is_refused_at_start_naming_the_file() {
    let (node, _) = TlsNode::new("good");
    self_signed(node.dir.path(), "other");
    let refused = |what: &str| {
        let out = node.command().arg("serve").output().expect("run");
        assert!(!out.status.success(), "{what}: started");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };

    std::fs::write(&node.cert, b"this is not a certificate\n").expect("write");
    let stderr = refused("garbage certificate");
    assert!(
        stderr.contains("tls.cert_file") && stderr.contains(&node.cert.display().to_string()),
        "{stderr}"
    );
    assert!(stderr.contains("no PEM certificate"), "{stderr}");

    replace(&node.dir.path().join("good.crt"), &node.cert);
    replace(&node.dir.path().join("other.key"), &node.key);
    let stderr = refused("key of another certificate");
    assert!(
        stderr.contains("is not the key of the certificate")
            && stderr.contains(&node.key.display().to_string()),
        "{stderr}"
    );

    std::fs::remove_file(&node.key).expect("rm");
    let stderr = refused("missing key");
    assert!(
        stderr.contains("tls.key_file") && stderr.contains("cannot read"),
        "{stderr}"
    );
}

#[test]
fn healthcheck_speaks_tls_when_tls_is_set() {
    let (node, _) = TlsNode::new("a");
    let _server = Server::start(node.command());

    let out = node.command().arg("healthcheck").output().expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("ready"));

    // The same probe in plain HTTP gets no answer from the TLS port.
    let out = node
        .command()
        .env_remove("HOLDFAST_TLS__CERT_FILE")
        .env_remove("HOLDFAST_TLS__KEY_FILE")
        .arg("healthcheck")
        .output()
        .expect("run");
    assert!(!out.status.success(), "plain healthcheck passed a TLS port");
}

#[tokio::test]
async fn admin_listen_alone_serves_metrics() {
    let dir = tempfile::tempdir().expect("tempdir");
    let main = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut cmd = holdfast(dir.path());
    cmd.env("HOLDFAST_LISTEN", main.to_string())
        .env("HOLDFAST_ADMIN__LISTEN", admin.to_string());
    let _server = Server::start(cmd);
    let client = reqwest::Client::new();

    let metrics = client
        .get(format!("http://{admin}/metrics"))
        .send()
        .await
        .expect("admin /metrics");
    assert_eq!(metrics.status(), StatusCode::OK);
    let text = metrics.text().await.expect("text");
    assert!(text.contains("holdfast_"), "{text}");

    let hidden = client
        .get(format!("http://{main}/metrics"))
        .send()
        .await
        .expect("main /metrics");
    assert_eq!(hidden.status(), StatusCode::NOT_FOUND);
    // The admin listener serves the operator endpoints and nothing else.
    let api = client
        .get(format!("http://{admin}/livez"))
        .send()
        .await
        .expect("admin /livez");
    assert_eq!(api.status(), StatusCode::NOT_FOUND);
    let live = client
        .get(format!("http://{main}/livez"))
        .send()
        .await
        .expect("main /livez");
    assert_eq!(live.status(), StatusCode::OK);
}
