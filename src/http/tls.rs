//! Native TLS (DESIGN.md §1, `[tls]`): axum's `serve` speaks plain HTTP
//! only, so this is the accept loop for a TLS port — tokio-rustls on the
//! aws-lc-rs provider (the one crypto stack of the crate), HTTP/2 or
//! HTTP/1.1 by ALPN — with the same connect info and graceful shutdown as
//! `axum::serve`.
//!
//! The certificate lives behind a resolver whose `CertifiedKey` is swapped
//! atomically: a reload (files changed, or SIGHUP) changes what new
//! handshakes get while open connections keep their session, and a reload
//! that fails keeps the old certificate.

use crate::config::TlsConfig;
use arc_swap::ArcSwap;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::crypto::{CryptoProvider, aws_lc_rs};
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::{self, DigitallySignedStruct, ServerConfig, SignatureScheme};
use tower::Service;

/// How often the certificate files' modification times are checked.
pub const POLL_INTERVAL: Duration = Duration::from_secs(2);

/// A client that connects and never finishes its handshake holds a task and
/// a socket; this bounds how long.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The provider every TLS object of the crate uses, named explicitly so a
/// second provider elsewhere in the tree can never be picked by default.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(aws_lc_rs::default_provider())
}

/// What identifies one version of the files: a reload is tried when it
/// changes (replacing a file by rename changes the modification time too).
type Stamp = [Option<(SystemTime, u64)>; 2];

/// The server's certificate and key, re-read from `[tls]` on demand.
#[derive(Debug)]
pub struct Certificate {
    files: TlsConfig,
    current: ArcSwap<CertifiedKey>,
    /// The files' stamp when last read, successfully or not: a bad new file
    /// is reported once, not at every poll.
    seen: parking_lot::Mutex<Stamp>,
}

impl Certificate {
    /// Loads the files; any problem is an error naming the file and what
    /// is wrong with it, for the start-up message.
    pub fn load(files: &TlsConfig) -> Result<Arc<Self>, String> {
        let stamp = stamp(files);
        let key = certified_key(files)?;
        Ok(Arc::new(Certificate {
            files: files.clone(),
            current: ArcSwap::from_pointee(key),
            seen: parking_lot::Mutex::new(stamp),
        }))
    }

    /// Re-reads the files now (SIGHUP). On error the old certificate stays.
    pub fn reload(&self) -> Result<(), String> {
        *self.seen.lock() = stamp(&self.files);
        let key = certified_key(&self.files)?;
        self.current.store(Arc::new(key));
        Ok(())
    }

    /// Re-reads the files if they changed since they were last read.
    /// `None` when they did not change.
    pub fn reload_if_changed(&self) -> Option<Result<(), String>> {
        let now = stamp(&self.files);
        if *self.seen.lock() == now {
            return None;
        }
        Some(self.reload())
    }

    /// Polls the files every `POLL_INTERVAL` for as long as the process runs.
    pub fn spawn_watch(self: &Arc<Self>) {
        let certificate = Arc::clone(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(POLL_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                certificate.log_reload(certificate.reload_if_changed(), "the files changed");
            }
        });
    }

    /// Logs the outcome of a reload; `why` says what started it.
    pub fn log_reload(&self, outcome: Option<Result<(), String>>, why: &str) {
        match outcome {
            None => {}
            Some(Ok(())) => tracing::info!(
                cert_file = %self.files.cert_file.display(),
                "TLS certificate reloaded ({why})"
            ),
            Some(Err(e)) => tracing::error!(
                "TLS certificate not reloaded ({why}), the old one stays in use: {e}"
            ),
        }
    }

    /// The server configuration for the acceptor: ALPN offers h2 first.
    pub fn server_config(self: &Arc<Self>) -> Result<ServerConfig, String> {
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(self) as Arc<dyn ResolvesServerCert>);
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(config)
    }
}

impl ResolvesServerCert for Certificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

fn stamp(files: &TlsConfig) -> Stamp {
    let one = |path: &Path| {
        std::fs::metadata(path)
            .ok()
            .and_then(|m| Some((m.modified().ok()?, m.len())))
    };
    [one(&files.cert_file), one(&files.key_file)]
}

/// Reads and checks both files: PEM, at least one certificate, a key the
/// provider can sign with, and the key belonging to the first certificate.
fn certified_key(files: &TlsConfig) -> Result<CertifiedKey, String> {
    let cert_name = files.cert_file.display();
    let key_name = files.key_file.display();
    let certs = CertificateDer::pem_file_iter(&files.cert_file)
        .map_err(|e| format!("tls.cert_file {cert_name}: {}", pem_error(e)))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("tls.cert_file {cert_name}: {}", pem_error(e)))?;
    if certs.is_empty() {
        return Err(format!(
            "tls.cert_file {cert_name}: no PEM certificate (-----BEGIN CERTIFICATE-----) in it"
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key_file).map_err(|e| {
        format!(
            "tls.key_file {key_name}: {} (a PKCS#8, PKCS#1 or SEC1 PEM private key is expected)",
            pem_error(e)
        )
    })?;
    let signing_key = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| format!("tls.key_file {key_name}: unusable private key: {e}"))?;
    let certified = CertifiedKey::new(certs, signing_key);
    certified.keys_match().map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => format!(
            "tls.key_file {key_name} is not the key of the certificate in tls.cert_file {cert_name}"
        ),
        other => format!("tls.cert_file {cert_name}: bad certificate: {other}"),
    })?;
    Ok(certified)
}

fn pem_error(e: rustls_pki_types::pem::Error) -> String {
    match e {
        rustls_pki_types::pem::Error::Io(e) => format!("cannot read: {e}"),
        rustls_pki_types::pem::Error::NoItemsFound => "nothing of the expected kind in it".into(),
        other => format!("not valid PEM: {other}"),
    }
}

/// Serves `router` over TLS on `listener` until `shutdown` completes, then
/// lets open connections finish (as `axum::serve(..).with_graceful_shutdown`).
/// Handlers see `ConnectInfo<SocketAddr>` as with
/// `into_make_service_with_connect_info`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    certificate: &Arc<Certificate>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), String> {
    let acceptor = TlsAcceptor::from(Arc::new(certificate.server_config()?));
    let mut make_service = router.into_make_service_with_connect_info::<SocketAddr>();
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: as axum::serve,
                    // wait instead of spinning on the error.
                    tracing::error!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(service) = make_service.call(peer).await;
        let acceptor = acceptor.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => stream,
                // Plain HTTP, scanners, expired client patience: nothing to
                // answer, the connection is closed.
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let builder = Builder::new(TokioExecutor::new());
            let connection =
                builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
            if let Err(e) = watcher.watch(connection).await {
                tracing::trace!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// The TLS client of `holdfast healthcheck`, which connects to this node's
/// own listen address. It does not verify the certificate chain or name:
/// the probe sends no credential and reads only a status line, and
/// verifying would fail for reasons that are not about readiness — the
/// certificate names the public host, not the loopback address dialled,
/// its issuer need not be in any trust store here, and while the files are
/// being replaced the server presents the previous certificate for up to
/// `POLL_INTERVAL`. The handshake signature is still checked against the
/// presented key, so it is a real TLS session with the process that holds
/// that key.
pub fn self_check_connector() -> std::io::Result<tokio_rustls::TlsConnector> {
    let provider = provider();
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(std::io::Error::other)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// Accepts any certificate, but checks the handshake signatures made with
/// its key (see `self_check_connector` for why).
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
