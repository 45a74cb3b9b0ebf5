//! Input rules for accounts: the NIST SP 800-63B password policy (length and
//! a blocklist of common and breached passwords, no composition rules) and
//! the shape of emails and usernames.

use crate::error::FieldError;
use std::collections::HashSet;

const MIN_PASSWORD_CHARS: usize = 12;
const MAX_PASSWORD_CHARS: usize = 256;

/// The blocklist, shipped in the repository and compiled into the binary.
const COMMON_PASSWORDS: &str = include_str!("../../data/common-passwords.txt");

pub struct PasswordPolicy {
    common: HashSet<String>,
}

impl PasswordPolicy {
    /// Builds the blocklist once; the service keeps one instance.
    pub fn load() -> Self {
        let common = COMMON_PASSWORDS
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(str::to_lowercase)
            .collect();
        Self { common }
    }

    pub fn len(&self) -> usize {
        self.common.len()
    }

    pub fn is_empty(&self) -> bool {
        self.common.is_empty()
    }

    /// Checks `password` for the field `field`; `context` holds values the
    /// password must not equal (the user's email and username).
    pub fn check(&self, field: &str, password: &str, context: &[&str]) -> Option<FieldError> {
        let chars = password.chars().count();
        if chars < MIN_PASSWORD_CHARS {
            return Some(FieldError::new(
                field,
                format!("must be at least {MIN_PASSWORD_CHARS} characters"),
            ));
        }
        if chars > MAX_PASSWORD_CHARS {
            return Some(FieldError::new(
                field,
                format!("must be at most {MAX_PASSWORD_CHARS} characters"),
            ));
        }
        let lower = password.to_lowercase();
        if self.common.contains(&lower) {
            return Some(FieldError::new(field, "is too common; choose another"));
        }
        if context
            .iter()
            .any(|c| !c.is_empty() && c.to_lowercase() == lower)
        {
            return Some(FieldError::new(
                field,
                "must differ from your email and username",
            ));
        }
        None
    }
}

/// The longest email accepted (RFC 5321's path limit less the brackets).
pub const MAX_EMAIL_BYTES: usize = 254;

/// A pragmatic email check: one `@`, a non-empty local part, a dotted domain,
/// no whitespace, at most 254 characters. Deliverability is not our concern.
pub fn check_email(email: &str) -> Option<FieldError> {
    let valid = email.len() <= MAX_EMAIL_BYTES
        && !email.chars().any(char::is_whitespace)
        && match email.split_once('@') {
            Some((local, domain)) => {
                !local.is_empty()
                    && !domain.contains('@')
                    && domain.contains('.')
                    && !domain.starts_with('.')
                    && !domain.ends_with('.')
            }
            None => false,
        };
    (!valid).then(|| FieldError::new("email", "must be a valid email address"))
}

/// 3 to 32 characters of letters, digits, `.`, `_` or `-`, starting with a
/// letter or digit; never containing `@`, so a login is never ambiguous.
pub fn check_username(username: &str) -> Option<FieldError> {
    let valid = (3..=32).contains(&username.len())
        && username
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && username
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    (!valid).then(|| {
        FieldError::new(
            "username",
            "must be 3-32 letters, digits, '.', '_' or '-', starting with a letter or digit",
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_list_is_large_and_enforced() {
        let policy = PasswordPolicy::load();
        assert!(policy.len() >= 10_000, "{}", policy.len());
        assert!(policy.check("password", "short", &[]).is_some());
        assert!(policy.check("password", "1q2w3e4r5t6y", &[]).is_some());
        assert!(policy.check("password", "PASSWORD1234", &[]).is_some());
        assert!(policy.check("password", &"x".repeat(257), &[]).is_some());
        assert!(
            policy
                .check("password", "alice@example.com", &["alice@example.com"])
                .is_some()
        );
        assert!(
            policy
                .check("password", "tangerine-orbit-lamp", &[])
                .is_none()
        );
    }

    #[test]
    fn emails_and_usernames() {
        assert!(check_email("a@example.com").is_none());
        assert!(check_email("a@b").is_some());
        assert!(check_email("a b@example.com").is_some());
        assert!(check_username("alice_1").is_none());
        assert!(check_username("al").is_some());
        assert!(check_username("a@b").is_some());
    }
}
