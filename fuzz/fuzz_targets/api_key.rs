//! API keys (`hf_<prefix>_<secret>`) through the parser every API-key
//! request meets first: what parses must be exactly a 12-hex prefix and a
//! 64-hex secret, so nothing else reaches the store lookup.
#![no_main]

use holdfast::fuzzing::parse_api_key;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(key) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(prefix) = parse_api_key(key) {
        assert_eq!(prefix.len(), 12);
        assert!(prefix.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(key.len(), 3 + 12 + 1 + 64);
        assert!(key.starts_with("hf_"));
        assert!(key[4 + 12..].bytes().all(|b| b.is_ascii_hexdigit()));
    }
});
