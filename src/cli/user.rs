//! `holdfast user create`: the first admin, before anyone can log in.

use holdfast::app::AppState;
use holdfast::auth::accounts::Registration;
use holdfast::config::Config;
use std::io::Read;

pub(super) async fn create(
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
        .accounts()
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
        Err(holdfast::auth::error::AuthError::Validation(fields)) => Err(fields
            .iter()
            .map(|f| format!("{}: {}", f.field, f.message))
            .collect::<Vec<_>>()
            .join("; ")),
        Err(e) => Err(e.to_string()),
    }
}
