//! `/.well-known/*`: the JWKS (cacheable by resource servers for
//! `jwks_max_age`) and the discovery document.

use crate::app::AppState;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

pub async fn jwks(State(state): State<AppState>) -> Response {
    let max_age = state.config().tokens.jwks_max_age.as_secs();
    let mut response = axum::Json(state.keys().jwks()).into_response();
    if let Ok(value) = HeaderValue::from_str(&format!("public, max-age={max_age}")) {
        response.headers_mut().insert(header::CACHE_CONTROL, value);
    }
    response
}

pub async fn openid_configuration(State(state): State<AppState>) -> Response {
    let issuer = state.config().issuer.trim_end_matches('/');
    let mut response = axum::Json(json!({
        "issuer": state.config().issuer,
        "jwks_uri": format!("{issuer}/.well-known/jwks.json"),
        "introspection_endpoint": format!("{issuer}/api/v1/auth/introspect"),
        "token_endpoint": format!("{issuer}/api/v1/auth/login"),
        // The algorithms of the keys in the JWKS (the signing key's first).
        "id_token_signing_alg_values_supported": state.keys().algorithms(),
        "token_endpoint_auth_methods_supported": ["none"],
        "grant_types_supported": ["password", "refresh_token"],
        "response_types_supported": ["token"],
        "subject_types_supported": ["public"],
    }))
    .into_response();
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    response
}
