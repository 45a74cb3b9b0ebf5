//! `POST /api/v1/auth/introspect` (RFC 7662). The caller proves itself with
//! an API key holding scope `introspect`; the token comes as a form field
//! or in JSON. Anything not currently valid is `{"active": false}`; when
//! validity cannot be decided (an issuer or the database is unreachable)
//! the answer is 503, never a false `active: false`.

use crate::app::AppState;
use crate::http::caller::{Credential, resolve_token};
use crate::http::error::ApiError;
use crate::http::extract::{ClientInfo, limited};
use crate::http::openapi::{
    BadRequest, Forbidden, PayloadTooLarge, ServiceUnavailable, TooManyRequests, Unauthorized,
};
use axum::extract::{FromRequest, Request, State};
use axum::http::{StatusCode, header};
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::ToSchema;

#[derive(Deserialize, ToSchema)]
pub struct IntrospectBody {
    /// An access, emergency, upstream or API-key token.
    token: String,
}

/// The RFC 7662 answer (schema only: `active` builds it). Only `active`
/// when the token is not valid now; the other members by token type.
#[derive(ToSchema)]
pub struct Introspection {
    pub active: bool,
    #[schema(required = false)]
    pub token_type: Option<TokenType>,
    /// The user id, or an upstream issuer's subject.
    #[schema(required = false)]
    pub sub: Option<String>,
    #[schema(required = false)]
    pub roles: Option<Vec<String>>,
    /// Space-separated scopes (emergency tokens, API keys).
    #[schema(required = false)]
    pub scope: Option<String>,
    /// Unix seconds; `null` for an API key that does not expire.
    #[schema(required = false)]
    pub exp: Option<i64>,
    #[schema(required = false)]
    pub iat: Option<i64>,
    #[schema(required = false)]
    pub nbf: Option<i64>,
    #[schema(required = false)]
    pub sid: Option<uuid::Uuid>,
    #[schema(required = false)]
    pub jti: Option<String>,
    #[schema(required = false)]
    pub iss: Option<String>,
    #[schema(required = false)]
    pub aud: Option<String>,
    /// The upstream issuer's name (`external`).
    #[schema(required = false)]
    pub idp: Option<String>,
}

#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
pub enum TokenType {
    AccessToken,
    Emergency,
    ApiKey,
    External,
}

/// The body as `application/x-www-form-urlencoded` (RFC 7662) or JSON.
pub struct FormOrJson(IntrospectBody);

impl<S: Send + Sync> FromRequest<S> for FormOrJson {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let form = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
        if form {
            axum::Form::<IntrospectBody>::from_request(limited(req), state)
                .await
                .map_err(|e| match e.status() {
                    StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge,
                    _ => ApiError::Malformed(e.body_text()),
                })
                .and_then(|axum::Form(b)| {
                    crate::http::extract::refuse_nul(&b.token)?;
                    Ok(FormOrJson(b))
                })
        } else {
            crate::http::extract::Json::<IntrospectBody>::from_request(req, state)
                .await
                .map(|crate::http::extract::Json(b)| FormOrJson(b))
        }
    }
}

#[utoipa::path(
    post,
    path = "/api/v1/auth/introspect",
    tag = "auth",
    security(("api_key" = [])),
    request_body(content(
        (IntrospectBody = "application/x-www-form-urlencoded"),
        (IntrospectBody = "application/json"),
    )),
    responses(
        (status = 200, description = "RFC 7662: `{active: false}` for anything not valid now", body = Introspection),
        BadRequest, Unauthorized, Forbidden, PayloadTooLarge, TooManyRequests, ServiceUnavailable,
    )
)]
pub async fn introspect(
    State(state): State<AppState>,
    caller: Credential,
    ClientInfo { rate_key, .. }: ClientInfo,
    FormOrJson(body): FormOrJson,
) -> Result<axum::Json<Value>, ApiError> {
    match caller {
        Credential::ApiKey(key) if key.has_scope("introspect") => {}
        _ => return Err(ApiError::Forbidden),
    }
    let now = crate::auth::now();
    let token = body.token.trim();
    let resolved = if token.starts_with("hf_") {
        state
            .api_keys()
            .authenticate(token, &rate_key, now)
            .await
            .map(Credential::ApiKey)
            .map_err(ApiError::from)
    } else {
        resolve_token(&state, token, now).await
    };
    let answer = match resolved {
        Ok(credential) => active(credential),
        // Undecided (a store down, or this caller's failed lookups over
        // their limit): never a false `active: false`.
        Err(
            e @ (ApiError::Unavailable { .. }
            | ApiError::ReadOnly
            | ApiError::Internal(_)
            | ApiError::RateLimited { .. }),
        ) => {
            return Err(e);
        }
        Err(_) => json!({ "active": false }),
    };
    Ok(axum::Json(answer))
}

/// The RFC 7662 answer for a token that is valid now.
fn active(credential: Credential) -> Value {
    match credential {
        Credential::User(c) => json!({
            "active": true,
            "token_type": "access_token",
            "sub": c.sub,
            "roles": c.roles,
            "exp": c.exp,
            "iat": c.iat,
            "nbf": c.nbf,
            "sid": c.sid,
            "jti": c.jti,
            "iss": c.iss,
            "aud": c.aud,
        }),
        Credential::Emergency(c) => json!({
            "active": true,
            "token_type": "emergency",
            "sub": c.sub,
            "scope": c.scope.join(" "),
            "exp": c.exp,
            "iat": c.iat,
            "jti": c.jti,
        }),
        Credential::ApiKey(k) => json!({
            "active": true,
            "token_type": "api_key",
            "sub": k.user_id,
            "scope": k.scopes.join(" "),
            "exp": k.expires_at,
        }),
        Credential::External(e) => json!({
            "active": true,
            "token_type": "external",
            "sub": e.sub,
            "idp": e.idp,
        }),
    }
}
