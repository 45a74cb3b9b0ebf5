//! Emergency tokens through `EmergencyVerifier::verify` with a key loaded
//! from a public key file: raw tokens, and fuzzer-written headers and
//! claims signed with the emergency key (as the offline signer would), so
//! the checks after the signature are reached. Whatever gets in must be an
//! emergency token that lives at most `MAX_TTL` and is current now.
#![no_main]

use holdfast::auth::emergency::MAX_TTL;
use holdfast::fuzzing::status_of;
use holdfast_fuzz::{AUDIENCE, EMERGENCY, ISSUER, LEEWAY, NOW, TokenInput, sign, token_input};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let emergency = &*EMERGENCY;
    let token = match token_input(data) {
        Some(TokenInput::Raw(token)) => token.to_string(),
        Some(TokenInput::Signed { header, claims }) => sign(header, claims, &emergency.signing),
        None => return,
    };
    match emergency.verifier.verify(&token, NOW) {
        Ok(claims) => {
            assert!(claims.emergency);
            assert_eq!(claims.iss, ISSUER);
            assert_eq!(claims.aud, AUDIENCE);
            let life = i128::from(claims.exp) - i128::from(claims.iat);
            assert!(life <= i128::from(MAX_TTL), "a token living {life}s got in");
            assert!(i128::from(NOW) <= i128::from(claims.exp) + i128::from(LEEWAY));
            // DESIGN.md §2: issued no later than now + leeway, a reason,
            // and an optional nbf between iat and now + leeway.
            assert!(life > 0, "a token living {life}s got in");
            assert!(claims.iat <= NOW + LEEWAY, "issued in the future");
            assert!(!claims.reason.trim().is_empty(), "no reason");
            if let Some(nbf) = claims.nbf {
                assert!(nbf >= claims.iat && nbf <= NOW + LEEWAY, "nbf {nbf}");
            }
        }
        Err(error) => {
            let status = status_of(error);
            assert!(status.is_client_error(), "a token answered {status}");
        }
    }
});
