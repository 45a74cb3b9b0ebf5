//! The `holdfast` command line: serve, migrate, user create, healthcheck.

use clap::{Parser, Subcommand};
use holdfast::app::{self, AppState};
use holdfast::auth::accounts::Registration;
use holdfast::config::Config;
use holdfast::http::tls::{self, Certificate};
use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// mimalloc: with glibc's malloc, malloc, free and consolidation were
/// ~10 % of a verification's CPU under the multi-threaded runtime.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "holdfast",
    version,
    about = "An authentication service that stays up when its dependencies don't"
)]
struct Cli {
    /// TOML configuration; every key can also be set as HOLDFAST_<SECTION>__<KEY>.
    #[arg(long, global = true, env = "HOLDFAST_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the migrations, then serve the API.
    Serve,
    /// Run the database migrations and exit.
    Migrate,
    /// Manage users.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Exit 0 when the local node is ready (for container probes), 1 otherwise.
    Healthcheck,
    /// Break-glass tokens, usable with the database and Redis both down.
    Emergency {
        #[command(subcommand)]
        command: EmergencyCommand,
    },
    /// Manage signing keys (running nodes pick changes up within seconds).
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// The master key that seals the private signing keys at rest.
    MasterKey {
        #[command(subcommand)]
        command: MasterKeyCommand,
    },
}

#[derive(Subcommand)]
enum MasterKeyCommand {
    /// Re-encrypt every private signing key under the key in FILE (32 raw
    /// bytes or their base64), in one transaction; safe against running
    /// nodes, which keep their keys open in memory. Then give every node
    /// the new key (README, "Rotating the master key").
    Rotate {
        #[arg(long)]
        new: PathBuf,
    },
}

#[derive(Subcommand)]
enum EmergencyCommand {
    /// Write a break-glass key pair: DIR/emergency.key (private, 0600, keep
    /// it offline) and DIR/emergency.pub (for `[emergency] public_key_file`).
    Keygen {
        #[arg(long)]
        out: PathBuf,
    },
    /// Sign a break-glass token (printed on stdout) with the offline key.
    Issue {
        #[arg(long)]
        key: PathBuf,
        /// Logged at every use of the token.
        #[arg(long)]
        reason: String,
        /// At most 1h.
        #[arg(long, default_value = "30m")]
        ttl: String,
        #[arg(long, default_value = "admin")]
        scope: Vec<String>,
        /// The `iss` to sign for; defaults to `issuer` of --config.
        #[arg(long)]
        issuer: Option<String>,
        /// The `aud` to sign for; defaults to `audience` of --config.
        #[arg(long)]
        audience: Option<String>,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Announce a new signing key; it signs after jwks_max_age.
    Rotate,
    /// Key leak: revoke every key and every session, sign with a new key now.
    RevokeAll,
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create a user; the password is read from standard input.
    Create {
        #[arg(long)]
        email: String,
        #[arg(long)]
        username: String,
        /// A role to grant, e.g. `admin`; repeatable.
        #[arg(long = "role")]
        roles: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config_file = cli.config.clone();
    let config = match Config::load(cli.config.as_deref()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    holdfast::telemetry::init(config.env);
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve => serve(config, config_file).await,
            Command::Migrate => app::migrate(&config)
                .await
                .map(|()| println!("migrations applied"))
                .map_err(|e| e.to_string()),
            Command::User {
                command:
                    UserCommand::Create {
                        email,
                        username,
                        roles,
                    },
            } => create_user(config, email, username, roles).await,
            Command::Healthcheck => healthcheck(&config).await,
            Command::Keys { command } => keys(config, command).await,
            Command::MasterKey {
                command: MasterKeyCommand::Rotate { new },
            } => app::rotate_master_key(&config, &new)
                .await
                .map(|n| println!("re-sealed {n} signing keys under {}", new.display()))
                .map_err(|e| e.to_string()),
            Command::Emergency { command } => emergency(&config, command),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("holdfast: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: Config, config_file: Option<PathBuf>) -> Result<(), String> {
    let listen = config.listen;
    let admin_listen = config.admin.listen;
    // Before anything is opened or migrated: a bad certificate or key stops
    // the start with the file and the problem named.
    let certificate = match &config.tls {
        Some(files) => Some(Certificate::load(files)?),
        None => None,
    };
    let describe = format!(
        "{} mode, database: {}, sessions: {}",
        match config.env {
            holdfast::config::Environment::Production => "production",
            holdfast::config::Environment::Development => "development",
        },
        match config.database_backend() {
            Ok(holdfast::config::DatabaseBackend::Postgres(_)) => "postgres".to_string(),
            Ok(holdfast::config::DatabaseBackend::Sqlite(path)) => format!("sqlite {path}"),
            Err(e) => e,
        },
        if config.redis.url.is_some() {
            "redis"
        } else {
            "memory"
        },
    );
    let state = AppState::build(config).await.map_err(|e| e.to_string())?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let admin_listener = match admin_listen {
        Some(admin) => Some(
            tokio::net::TcpListener::bind(admin)
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
    if state.users.count().await.unwrap_or(1) == 0 {
        println!(
            "No users yet. Create the first admin (the password is read from stdin):\n  \
             holdfast user create --email admin@example.com --username admin --role admin"
        );
    }
    spawn_reload_on_hangup(state.clone(), config_file, certificate.clone());
    // One signal, every listener: each drains its connections on it.
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
        let router = state.admin_router();
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
            tls::serve(listener, state.router(), &certificate, stopped()).await
        }
        None => axum::serve(
            listener,
            state
                .router()
                .into_make_service_with_connect_info::<SocketAddr>(),
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

async fn create_user(
    config: Config,
    email: String,
    username: String,
    roles: Vec<String>,
) -> Result<(), String> {
    let mut password = String::new();
    std::io::stdin()
        .read_to_string(&mut password)
        .map_err(|e| format!("cannot read the password from stdin: {e}"))?;
    let password = password.trim_end_matches(['\n', '\r']).to_string();
    let state = AppState::build(config).await.map_err(|e| e.to_string())?;
    let registration = Registration {
        email,
        username,
        password,
        roles,
    };
    match state
        .accounts
        .register(registration, holdfast::auth::now())
        .await
    {
        Ok(user) => {
            println!(
                "created user {} ({}) roles={:?}",
                user.id, user.username, user.roles
            );
            Ok(())
        }
        Err(holdfast::error::ApiError::Validation(fields)) => Err(fields
            .iter()
            .map(|f| format!("{}: {}", f.field, f.message))
            .collect::<Vec<_>>()
            .join("; ")),
        Err(e) => Err(e.to_string()),
    }
}

fn emergency(config: &Config, command: EmergencyCommand) -> Result<(), String> {
    use holdfast::auth::emergency;
    match command {
        EmergencyCommand::Keygen { out } => {
            let (private, public) = emergency::keygen()?;
            let key = out.join("emergency.key");
            holdfast::auth::master_key::write_private_file(&key, private.as_bytes())
                .map_err(|e| format!("cannot write {}: {e}", key.display()))?;
            let public_path = out.join("emergency.pub");
            std::fs::write(&public_path, public)
                .map_err(|e| format!("cannot write {}: {e}", public_path.display()))?;
            println!(
                "wrote {} (keep it offline) and {} (set [emergency] public_key_file)",
                key.display(),
                public_path.display()
            );
            Ok(())
        }
        EmergencyCommand::Issue {
            key,
            reason,
            ttl,
            scope,
            issuer,
            audience,
        } => {
            let ttl = humantime::parse_duration(&ttl)
                .map_err(|e| format!("--ttl {ttl}: {e}"))?
                .as_secs() as i64;
            let issuer = issuer.unwrap_or_else(|| config.issuer.clone());
            let audience = audience.unwrap_or_else(|| config.audience.clone());
            let pem =
                std::fs::read(&key).map_err(|e| format!("cannot read {}: {e}", key.display()))?;
            let token = emergency::issue(
                &pem,
                emergency::Issue {
                    issuer: &issuer,
                    audience: &audience,
                    reason: &reason,
                    ttl_secs: ttl,
                    scope,
                    now: holdfast::auth::now(),
                },
            )?;
            // A token for the wrong node is refused there; say what this
            // one is for, where the operator sees it but the token pipe
            // does not.
            eprintln!("signed for iss={issuer:?} aud={audience:?}");
            println!("{token}");
            Ok(())
        }
    }
}

async fn keys(config: Config, command: KeysCommand) -> Result<(), String> {
    let state = AppState::build(config).await.map_err(|e| e.to_string())?;
    let now = holdfast::auth::now();
    match command {
        KeysCommand::Rotate => {
            let kid = state.keys.rotate(now).await.map_err(|e| e.to_string())?;
            announce(
                &state,
                false,
                serde_json::json!({"kid": kid, "by": "cli"}),
                now,
            )
            .await;
            println!("rotation started: {kid} signs after jwks_max_age");
        }
        KeysCommand::RevokeAll => {
            let (kid, sessions) = state
                .keys
                .revoke_all(now)
                .await
                .map_err(|e| e.to_string())?;
            let detail = serde_json::json!({"kid": kid, "sessions_revoked": sessions, "by": "cli"});
            announce(&state, true, detail, now).await;
            println!("all keys revoked; {kid} signs now; {sessions} sessions revoked");
        }
    }
    Ok(())
}

/// Tells running nodes (invalidation log and pub/sub) and the audit log.
/// A failure here is reported but not fatal: the keys are already changed
/// and every node re-reads them within seconds anyway.
async fn announce(state: &AppState, revoked_all: bool, detail: serde_json::Value, now: i64) {
    let event = holdfast::cache::bus::Invalidation::KeysChanged { revoked_all };
    if let Err(e) = state.bus.publish_and_wait(event, now).await {
        eprintln!("warning: running nodes were not notified ({e}); they re-read keys within 10 s");
    }
    let kind = if revoked_all {
        "keys_revoked_all"
    } else {
        "key_rotated"
    };
    if let Err(e) = state.audit.record_and_wait(kind, None, detail).await {
        eprintln!("warning: audit event not stored: {e}");
    }
}

/// GET /readyz on the configured address, with a short timeout; over TLS
/// when `[tls]` is set (see `tls::self_check_connector` for what it trusts).
async fn healthcheck(config: &Config) -> Result<(), String> {
    let listen = config.listen;
    let target = if listen.ip().is_unspecified() {
        SocketAddr::from(([127, 0, 0, 1], listen.port()))
    } else {
        listen
    };
    let request = format!("GET /readyz HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\n\r\n");
    let tls = config.tls.is_some();
    let probe = async {
        let tcp = tokio::net::TcpStream::connect(target).await?;
        let mut reply = Vec::new();
        if tls {
            let mut stream = tls::self_check_connector()?
                .connect(target.ip().into(), tcp)
                .await?;
            stream.write_all(request.as_bytes()).await?;
            read_reply(&mut stream, &mut reply).await?;
        } else {
            let mut stream = tcp;
            stream.write_all(request.as_bytes()).await?;
            stream.read_to_end(&mut reply).await?;
        }
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&reply).into_owned())
    };
    match tokio::time::timeout(Duration::from_secs(3), probe).await {
        Ok(Ok(reply)) if reply.starts_with("HTTP/1.1 200") => {
            println!("ready");
            Ok(())
        }
        Ok(Ok(reply)) => Err(format!(
            "not ready: {}",
            reply.lines().next().unwrap_or("no answer")
        )),
        Ok(Err(e)) => Err(format!("cannot reach {target}: {e}")),
        Err(_) => Err(format!("{target} did not answer within 3s")),
    }
}

/// Reads to the end; a TLS peer that closes without close_notify after a
/// `Connection: close` answer has still answered in full.
async fn read_reply<S: tokio::io::AsyncRead + Unpin>(
    stream: &mut S,
    reply: &mut Vec<u8>,
) -> std::io::Result<()> {
    match stream.read_to_end(reply).await {
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !reply.is_empty() => Ok(()),
        other => other.map(|_| ()),
    }
}
