//! `/.well-known/*`: the JWKS (cacheable by resource servers for
//! `jwks_max_age`) and the discovery document.

use crate::app::AppState;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use utoipa::ToSchema;

/// The JWKS (schema only: the key ring builds it).
#[derive(ToSchema)]
pub struct Jwks {
    pub keys: Vec<Jwk>,
}

/// One public key (RFC 7517): EdDSA (`OKP`), ES256 (`EC`) or RS256 (`RSA`).
#[derive(ToSchema)]
pub struct Jwk {
    pub kty: String,
    #[schema(required = false)]
    pub kid: Option<String>,
    #[schema(required = false)]
    pub alg: Option<String>,
    #[schema(rename = "use", required = false)]
    pub use_: Option<String>,
    #[schema(required = false)]
    pub crv: Option<String>,
    #[schema(required = false)]
    pub x: Option<String>,
    #[schema(required = false)]
    pub y: Option<String>,
    #[schema(required = false)]
    pub n: Option<String>,
    #[schema(required = false)]
    pub e: Option<String>,
}

/// The discovery document (schema only: `openid_configuration` builds it).
#[derive(ToSchema)]
pub struct OpenIdConfiguration {
    pub issuer: String,
    pub jwks_uri: String,
    pub introspection_endpoint: String,
    pub token_endpoint: String,
    pub id_token_signing_alg_values_supported: Vec<String>,
    pub token_endpoint_auth_methods_supported: Vec<String>,
    pub grant_types_supported: Vec<String>,
    pub response_types_supported: Vec<String>,
    pub subject_types_supported: Vec<String>,
}

#[utoipa::path(
    get,
    path = "/.well-known/jwks.json",
    tag = "well-known",
    responses(
        (status = 200, description = "The keys that verify our tokens", body = Jwks),
        crate::http::openapi::ServiceUnavailable,
    )
)]
pub async fn jwks(State(state): State<AppState>) -> Response {
    let max_age = state.config().tokens.jwks_max_age.as_secs();
    let mut response = axum::Json(state.keys().jwks()).into_response();
    if let Ok(value) = HeaderValue::from_str(&format!("public, max-age={max_age}")) {
        response.headers_mut().insert(header::CACHE_CONTROL, value);
    }
    response
}

#[utoipa::path(
    get,
    path = "/.well-known/openid-configuration",
    tag = "well-known",
    responses(
        (status = 200, description = "Issuer, endpoints and token algorithms", body = OpenIdConfiguration),
        crate::http::openapi::ServiceUnavailable,
    )
)]
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
