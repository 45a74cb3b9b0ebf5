//! The `holdfast` command line: `serve`, `migrate`, `user create`,
//! `healthcheck`, `emergency`, `keys` and `master-key`, one module per
//! subcommand that needs more than a line.

mod emergency;
mod healthcheck;
mod keys;
mod serve;
mod user;

use clap::{Parser, Subcommand};
use holdfast::app;
use holdfast::config::Config;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "holdfast",
    version,
    about = "An authentication service that stays up when its dependencies don't"
)]
pub struct Cli {
    /// TOML configuration; every key can also be set as HOLDFAST_<SECTION>__<KEY>.
    #[arg(long, global = true, env = "HOLDFAST_CONFIG")]
    pub config: Option<PathBuf>,
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
pub(crate) enum EmergencyCommand {
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
pub(crate) enum KeysCommand {
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

impl Cli {
    /// Runs the subcommand; the error is what the operator reads.
    pub async fn run(self, config: Config) -> Result<(), String> {
        match self.command {
            Command::Serve => serve::serve(config, self.config).await,
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
            } => user::create(config, email, username, roles).await,
            Command::Healthcheck => healthcheck::healthcheck(&config).await,
            Command::Keys { command } => keys::keys(config, command).await,
            Command::MasterKey {
                command: MasterKeyCommand::Rotate { new },
            } => app::rotate_master_key(&config, &new)
                .await
                .map(|n| println!("re-sealed {n} signing keys under {}", new.display()))
                .map_err(|e| e.to_string()),
            Command::Emergency { command } => emergency::emergency(&config, command),
        }
    }
}
