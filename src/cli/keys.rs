//! `holdfast keys`: rotate or revoke every signing key from the command
//! line, through the same operation as the admin API.

use super::KeysCommand;
use holdfast::app::AppState;
use holdfast::auth::key_rotation::{Delivery, KeyChange};
use holdfast::config::Config;

pub(super) async fn keys(config: Config, command: KeysCommand) -> Result<(), String> {
    let state = AppState::build(config).await.map_err(|e| e.to_string())?;
    let now = holdfast::auth::now();
    let rotation = &state.key_rotation();
    match command {
        KeysCommand::Rotate => {
            let change = rotation.rotate("cli", Delivery::Wait, now).await;
            let change = warn_undelivered(change.map_err(|e| e.to_string())?);
            println!("rotation started: {} signs after jwks_max_age", change.kid);
        }
        KeysCommand::RevokeAll => {
            let change = rotation.revoke_all("cli", Delivery::Wait, now).await;
            let change = warn_undelivered(change.map_err(|e| e.to_string())?);
            println!(
                "all keys revoked; {} signs now; {} sessions revoked",
                change.kid,
                change.sessions_revoked.unwrap_or_default()
            );
        }
    }
    Ok(())
}

/// Not fatal: the keys are already changed and every node re-reads them
/// within seconds anyway.
fn warn_undelivered(change: KeyChange) -> KeyChange {
    if let Some(e) = &change.not_announced {
        eprintln!("warning: running nodes were not notified ({e}); they re-read keys within 10 s");
    }
    if let Some(e) = &change.not_audited {
        eprintln!("warning: audit event not stored: {e}");
    }
    change
}
