//! The JSON bodies of register, login and refresh (byte 0 picks which)
//! through the handlers' own extractor and the checks made before any
//! store is touched: the password policy, email and username rules, the
//! refresh-token parser. A body is refused with a 4xx, never a 5xx.
#![no_main]

use holdfast::auth::policy::{PasswordPolicy, check_email, check_username};
use holdfast::fuzzing::{login_body, refresh_body, register_body, status_of};
use libfuzzer_sys::fuzz_target;
use std::sync::LazyLock;

static POLICY: LazyLock<PasswordPolicy> = LazyLock::new(PasswordPolicy::load);

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let refused = match pick % 3 {
        0 => match register_body(body, &POLICY) {
            Ok((email, username)) => {
                assert!(check_email(&email).is_none() && check_username(&username).is_none());
                assert_eq!(email, email.trim().to_lowercase());
                None
            }
            Err(error) => Some(error),
        },
        1 => login_body(body).err(),
        _ => refresh_body(body).err(),
    };
    if let Some(error) = refused {
        let status = status_of(error);
        assert!(status.is_client_error(), "a body answered {status}");
    }
});
