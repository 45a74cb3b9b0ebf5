//! Input rules for accounts: the NIST SP 800-63B password policy (length,
//! a blocklist of common and breached passwords, and the patterns a guesser
//! tries first; no composition rules) and the shape of emails and usernames.
//!
//! A password is judged in its NFKC form, the form it is hashed in
//! (`nfkc::normalize`): `ｐａｓｓｗｏｒｄ` is `password`, and length is
//! counted in what is stored.

use crate::auth::error::FieldError;
use crate::auth::nfkc::normalize;
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
            .map(|l| normalize(l).to_lowercase())
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
        let password = normalize(password);
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
        if let Some(pattern) = self.pattern(&lower) {
            return Some(FieldError::new(
                field,
                format!("is too easy to guess: {pattern}; choose another"),
            ));
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

    /// The guessable shape of a whole (lower-case) password, if it has one.
    fn pattern(&self, lower: &str) -> Option<&'static str> {
        let chars: Vec<char> = lower.chars().collect();
        let period = smallest_period(&chars);
        if period == 1 {
            return Some("one character repeated");
        }
        if is_walk(&chars, SEQUENCES) {
            return Some("a sequence such as abcdef or 123456");
        }
        if is_walk(&chars, KEYBOARD) {
            return Some("a keyboard row such as qwerty");
        }
        let unit = &chars[..period];
        if period < chars.len()
            && (period <= 3
                || is_walk(unit, SEQUENCES)
                || is_walk(unit, KEYBOARD)
                || self.common.contains(&unit.iter().collect::<String>()))
        {
            return Some("a word or pattern repeated");
        }
        None
    }
}

/// Alphabet and digits, walked either way and round the end (`yzabc`,
/// `7890123`).
const SEQUENCES: &[&str] = &["abcdefghijklmnopqrstuvwxyz", "0123456789"];

/// A US keyboard: each row, the letter rows read in order, and the columns
/// (`1qaz2wsx`), walked either way and round the end.
const KEYBOARD: &[&str] = &[
    "`1234567890-=",
    "~!@#$%^&*()_+",
    "qwertyuiop[]\\",
    "asdfghjkl;'",
    "zxcvbnm,./",
    "1234567890qwertyuiopasdfghjklzxcvbnm",
    "1qaz2wsx3edc4rfv5tgb6yhn7ujm8ik,9ol.0p;/",
];

/// The length of the shortest unit that `chars` is a whole repetition of
/// (its own length when it is none).
fn smallest_period(chars: &[char]) -> usize {
    (1..=chars.len())
        .find(|&p| {
            chars.len().is_multiple_of(p) && chars.iter().skip(p).zip(chars).all(|(a, b)| a == b)
        })
        .unwrap_or(chars.len())
}

/// Is `chars` (two or more) a walk along one of `lines`, one step at a
/// time in one direction, wrapping round the end?
fn is_walk(chars: &[char], lines: &[&str]) -> bool {
    chars.len() >= 2
        && lines.iter().any(|line| {
            let line: Vec<char> = line.chars().collect();
            let n = line.len() as isize;
            let at = |c: &char| line.iter().position(|l| l == c).map(|i| i as isize);
            let Some(steps) = chars
                .windows(2)
                .map(|w| Some((at(&w[1])? - at(&w[0])?).rem_euclid(n)))
                .collect::<Option<Vec<isize>>>()
            else {
                return false;
            };
            steps.iter().all(|&s| s == 1) || steps.iter().all(|&s| s == n - 1)
        })
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

    /// Each guessable shape, and the ones that were accepted before.
    #[test]
    fn each_weak_pattern_is_refused() {
        let policy = PasswordPolicy::load();
        let refused = |p: &str| policy.check("password", p, &[]);
        let weak: &[(&str, &str)] = &[
            ("aaaaaaaaaaaa", "one character"),
            ("            ", "one character"),
            ("ZZZZZZZZZZZZZZZZ", "one character"),
            ("abcdefghijkl", "sequence"),
            ("123456789012", "sequence"),
            ("zyxwvutsrqpo", "sequence"),
            ("987654321098", "sequence"),
            ("wxyzabcdefgh", "sequence"),
            ("qwertyuiopas", "keyboard"),
            ("QWERTYUIOPASDF", "keyboard"),
            ("asdfghjkl;'a", "keyboard"),
            ("mnbvcxzlkjhg", "keyboard"),
            ("1234567890-=", "keyboard"),
            ("!@#$%^&*()_+", "keyboard"),
            ("6yhn7ujm8ik,9ol.", "keyboard"),
            ("passwordpassword", "repeated"),
            ("MonkeyMonkeyMonkey", "repeated"),
            ("abcabcabcabc", "repeated"),
            ("xq7xq7xq7xq7", "repeated"),
            ("asdfasdfasdf", "repeated"),
            ("dragondragon", "repeated"),
        ];
        for (password, kind) in weak {
            let error = refused(password).unwrap_or_else(|| panic!("{password:?} accepted"));
            assert_eq!(error.field, "password");
            let expected = match *kind {
                "one character" => "one character repeated",
                "sequence" => "a sequence",
                "keyboard" => "a keyboard row",
                _ => "repeated",
            };
            assert!(
                error.message.contains(expected),
                "{password:?}: {}",
                error.message
            );
        }
        for good in [
            "tangerine-orbit-lamp",
            "correct horse battery staple",
            "Zq8!mT4#pW2x",
            "abcdefghijkx9",
            "qwertyuiop-lamp",
        ] {
            assert!(refused(good).is_none(), "{good:?} refused");
        }
    }

    /// Every entry of data/common-passwords.txt, as listed and upper-cased.
    #[test]
    fn every_shipped_entry_is_refused() {
        let policy = PasswordPolicy::load();
        let entries: Vec<&str> = COMMON_PASSWORDS
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect();
        assert_eq!(entries.len(), 30_000);
        for entry in entries {
            assert!(policy.check("password", entry, &[]).is_some(), "{entry:?}");
            let upper = entry.to_uppercase();
            assert!(policy.check("password", &upper, &[]).is_some(), "{upper:?}");
        }
    }

    /// Judged in the NFKC form it is hashed in.
    #[test]
    fn the_policy_sees_the_nfkc_form() {
        let policy = PasswordPolicy::load();
        // Full-width letters: NFKC makes them `passwordpassword`.
        assert!(
            policy
                .check("password", "ｐａｓｓｗｏｒｄｐａｓｓｗｏｒｄ", &[])
                .is_some()
        );
        // 11 characters typed, 13 after NFKC (U+FB03 is "ffi").
        let expands = "tangerine\u{FB03}x";
        assert_eq!(expands.chars().count(), 11);
        assert!(policy.check("password", expands, &[]).is_none());
        // 12 typed, 11 after NFKC (e + combining acute is é).
        let shrinks = "tangerine\u{65}\u{301}x";
        assert_eq!(shrinks.chars().count(), 12);
        assert!(policy.check("password", shrinks, &[]).is_some());
        // 256 after NFKC is the most; each U+FB03 is three.
        let long: String = (0..200).map(|i: u32| i.to_string()).collect();
        let long: String = long.chars().take(250).collect();
        let at_most = format!("{long}\u{FB03}\u{FB03}");
        assert!(policy.check("password", &at_most, &[]).is_none());
        let error = policy
            .check("password", &format!("{at_most}\u{FB03}"), &[])
            .expect("259 after NFKC");
        assert!(error.message.contains("at most"), "{}", error.message);
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
