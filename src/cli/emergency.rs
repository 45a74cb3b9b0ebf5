//! `holdfast emergency`: the offline key pair and the break-glass tokens
//! it signs, usable with the database and Redis both down.

use super::EmergencyCommand;
use holdfast::config::Config;

pub(super) fn emergency(config: &Config, command: EmergencyCommand) -> Result<(), String> {
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
