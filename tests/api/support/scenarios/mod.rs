//! The API conformance suite: every endpoint of the core and every error
//! code it can return. `conformance_suite!` stamps each scenario out as a
//! test for one backend, so embedded and PostgreSQL + Redis run the same
//! assertions.

mod access;
mod account;
mod auth;

pub use access::*;
pub use account::*;
pub use auth::*;

// `all_scenarios!` expands to paths under `support::`.

macro_rules! conformance_suite {
    ($backend:expr, $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let mut stack = support::Stack::start($backend).await;
                support::scenarios::$name(&mut stack).await;
            }
        )*
    };
}
pub(crate) use conformance_suite;

/// Every scenario below, for `conformance_suite!`.
#[macro_export]
macro_rules! all_scenarios {
    ($backend:expr) => {
        support::scenarios::conformance_suite!(
            $backend,
            register_answers_the_user_and_refuses_conflicts,
            register_validates_input,
            malformed_requests_get_contract_errors,
            login_by_email_or_username_and_same_answer_for_unknown,
            verify_answers_forward_auth_headers,
            expired_tokens_answer_auth002,
            tokens_verify_independently_against_served_jwks,
            refresh_rotates_and_reuse_revokes_the_session,
            logout_revokes_this_session,
            logout_all_revokes_every_session,
            profile_read_and_update,
            password_change_revokes_other_sessions,
            delete_me_disables_the_account,
            sessions_list_and_delete,
            well_known_documents,
            health_endpoints,
            request_ids_and_security_headers,
            restart_keeps_keys_users_and_revocations,
            api_keys_mint_verify_list_and_delete,
            roles_authz_search_and_audit,
        );
    };
}
