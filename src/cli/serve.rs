//! `holdfast serve`: the API listener, the optional `[admin]` listener,
//! SIGHUP reloads and a graceful stop on SIGINT/SIGTERM.

use holdfast::app::AppState;
use holdfast::config::{Config, DatabaseBackend, Environment};
use holdfast::http::tls::{self, Certificate};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::net::TcpListener;

pub(super) async fn serve(config: Config, config_file: Option<PathBuf>) -> Result<(), String> {
    let listen = config.listen;
    let admin_listen = config.admin.listen;
    // Before anything is opened or migrated: a bad certificate or key stops
    // the start with the file and the problem named.
    let certificate = match &config.tls {
        Some(files) => Some(Certificate::load(files)?),
        None => None,
    };
    let describe = describe(&config);
    let state = AppState::build(config).await.map_err(|e| e.to_string())?;
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let admin_listener = match admin_listen {
        Some(admin) => Some(
            TcpListener::bind(admin)
                .await
                .map_err(|e| format!("cannot listen on {admin} ([admin] listen): {e}"))?,
        ),
        None => None,
    };
    let scheme = if certificate.is_some() {
        "https"
    } else {
        "http"
    };
    println!("holdfast listening on {scheme}://{listen} ({describe})");
    if let Some(admin) = admin_listen {
        println!("operator endpoints (/metrics) on http://{admin}");
    }
    if state.accounts().count().await.unwrap_or(1) == 0 {
        println!(
            "No users yet. Create the first admin (the password is read from stdin):\n  \
             holdfast user create --email admin@example.com --username admin --role admin"
        );
    }
    spawn_reload_on_hangup(state.clone(), config_file, certificate.clone());
    run(state, listener, admin_listener, certificate).await
}

/// The start-up line's summary of what this node runs on.
fn describe(config: &Config) -> String {
    format!(
        "{} mode, database: {}, sessions: {}",
        match config.env {
            Environment::Production => "production",
            Environment::Development => "development",
        },
        match config.database_backend() {
            Ok(DatabaseBackend::Postgres(_)) => "postgres".to_string(),
            Ok(DatabaseBackend::Sqlite(path)) => format!("sqlite {path}"),
            Err(e) => e,
        },
        if config.redis.url.is_some() {
            "redis"
        } else {
            "memory"
        },
    )
}

/// Serves until SIGINT/SIGTERM; one signal, every listener: each drains its
/// connections on it.
async fn run(
    state: AppState,
    listener: TcpListener,
    admin_listener: Option<TcpListener>,
    certificate: Option<Arc<Certificate>>,
) -> Result<(), String> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop_tx.send(true);
    });
    let stopped = move || {
        let mut stop_rx = stop_rx.clone();
        async move {
            let _ = stop_rx.wait_for(|stop| *stop).await;
        }
    };
    let admin = admin_listener.map(|admin_listener| {
        let router = holdfast::http::admin_router(&state);
        let stopped = stopped.clone();
        tokio::spawn(async move {
            axum::serve(
                admin_listener,
                router.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(stopped())
            .await
        })
    });
    let served = match certificate {
        Some(certificate) => {
            certificate.spawn_watch();
            tls::serve(
                listener,
                holdfast::http::router(&state),
                &certificate,
                stopped(),
            )
            .await
        }
        None => axum::serve(
            listener,
            holdfast::http::router(&state).into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(stopped())
        .await
        .map_err(|e| e.to_string()),
    };
    if let Some(admin) = admin {
        match admin.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "the [admin] listener failed"),
            Err(e) => tracing::error!(error = %e, "the [admin] listener failed"),
        }
    }
    served
}

/// SIGHUP re-reads the configuration (`AppState::reload`: the emergency
/// deny list) and the TLS certificate. Without a handler SIGHUP would end
/// the process.
fn spawn_reload_on_hangup(
    state: AppState,
    config_file: Option<PathBuf>,
    certificate: Option<Arc<Certificate>>,
) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangups = match signal(SignalKind::hangup()) {
        Ok(hangups) => hangups,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGHUP; configuration reload is off");
            return;
        }
    };
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            match state.reload(config_file.as_deref()) {
                Ok(()) => tracing::info!("configuration reloaded on SIGHUP"),
                Err(e) => tracing::error!("configuration not reloaded, the old one stays: {e}"),
            }
            if let Some(certificate) = &certificate {
                certificate.log_reload(Some(certificate.reload()), "SIGHUP");
            }
        }
    });
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down");
}
