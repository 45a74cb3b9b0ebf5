//! Access tokens through `TokenService::verify` with a real key ring: raw
//! tokens as a client sends them, and fuzzer-written headers and claims
//! signed with the ring's own key, so the checks after the signature (claim
//! types, `iss`/`aud`, time, revocation) are reached too. Whatever gets in
//! must be what the service would have issued; whatever does not must be a
//! 4xx, never a panic or a 500.
#![no_main]

use holdfast::fuzzing::status_of;
use holdfast_fuzz::{ACCESS, AUDIENCE, ISSUER, LEEWAY, NOW, TokenInput, sign, token_input};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let access = &*ACCESS;
    let token = match token_input(data) {
        Some(TokenInput::Raw(token)) => token.to_string(),
        Some(TokenInput::Signed { header, claims }) => sign(header, claims, &access.signing),
        None => return,
    };
    match access.service.verify(&token, NOW) {
        Ok(claims) => {
            assert_eq!(claims.iss, ISSUER);
            assert_eq!(claims.aud, AUDIENCE);
            assert!(i128::from(NOW) <= i128::from(claims.exp) + i128::from(LEEWAY));
            assert!(i128::from(claims.nbf) <= i128::from(NOW) + i128::from(LEEWAY));
            let header = jsonwebtoken::decode_header(&token).expect("a verified token's header");
            assert_eq!(header.alg, jsonwebtoken::Algorithm::EdDSA);
            assert_eq!(header.kid.as_deref(), Some(access.kid.as_str()));
        }
        Err(error) => {
            let status = status_of(error);
            assert!(status.is_client_error(), "a token answered {status}");
        }
    }
});
