//! The domain: accounts, sessions and the tokens and keys behind them. It
//! knows nothing of HTTP; callers pass `now` so expiry logic is testable at
//! its boundaries.

pub mod accounts;
pub mod api_keys;
pub mod audit;
pub mod claims;
pub mod clock;
pub mod emergency;
pub mod error;
pub mod external;
pub mod key_kinds;
pub mod key_rotation;
pub mod keys;
pub mod master_key;
pub mod nfkc;
pub mod passwords;
pub mod policy;
pub mod rate_limit;
pub mod rbac;
pub mod recent_events;
pub mod revocation;
pub mod sessions;
pub mod tokens;
pub mod validation_cache;

/// SHA-256 of a high-entropy secret or token (refresh secrets, API keys,
/// validation-cache keys): a fast hash is right where guessing is hopeless;
/// Argon2 is for passwords.
pub fn sha256(text: &str) -> [u8; 32] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, text.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// `sha256` as lower-case hex, the form the stores keep.
pub fn sha256_hex(text: &str) -> String {
    hex::encode(sha256(text))
}

/// Seconds since the Unix epoch, read once per request at the edge.
pub fn now() -> crate::store::UnixTime {
    crate::store::unix_now()
}

/// Milliseconds since the Unix epoch: for ordering changes that can happen
/// within one second (role changes).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as i64)
}
