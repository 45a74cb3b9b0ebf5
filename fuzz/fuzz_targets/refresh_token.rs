//! Refresh tokens (`<session id>.<secret>`) through the parser the refresh
//! and logout paths use: what parses must be a session id and a 43-character
//! URL-safe secret, and must parse back the same.
#![no_main]

use holdfast::fuzzing::parse_refresh_token;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok((sid, hash)) = parse_refresh_token(token) {
        assert_eq!(hash.len(), 64);
        assert!(hash.bytes().all(|b| b.is_ascii_hexdigit()));
        let (_, secret) = token
            .trim()
            .split_once('.')
            .expect("a parsed token has a dot");
        assert_eq!(secret.len(), 43);
        let again = parse_refresh_token(&format!("{sid}.{secret}")).expect("parses back");
        assert_eq!(again, (sid, hash));
    }
});
