//! `/api/v1/auth/*`: parse, call the domain, map the result.

use crate::app::AppState;
use crate::auth::accounts::Registration;
use crate::auth::now;
use crate::auth::rate_limit::Limit;
use crate::auth::sessions::TokenPair;
use crate::http::auth_outcomes::{self, AuthMethod};
use crate::http::caller::{Authenticated, Credential};
use crate::http::error::ApiError;
use crate::http::extract::{ClientInfo, Json, OptionalJson};
use crate::http::openapi::{
    BadRequest, Conflict, Forbidden, PayloadTooLarge, ServiceUnavailable, TooManyRequests,
    Unauthorized, Unprocessable,
};
use crate::http::users::UserView;
use crate::store::LimitDecision;
use axum::extract::State;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

#[derive(Deserialize, ToSchema)]
pub struct RegisterBody {
    #[schema(format = Email, max_length = 254)]
    pub(crate) email: String,
    /// Letters, digits, `.`, `_`, `-`; never `@`.
    #[schema(pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{2,31}$")]
    pub(crate) username: String,
    /// 12 to 256 characters (after NFKC), not a common password, not the
    /// email or username.
    #[schema(min_length = 12, max_length = 256)]
    pub(crate) password: String,
}

#[derive(Deserialize, ToSchema)]
pub struct LoginBody {
    /// The email or the username.
    #[schema(max_length = 254)]
    pub(crate) login: String,
    pub(crate) password: String,
}

#[derive(Deserialize, ToSchema)]
pub struct RefreshBody {
    pub(crate) refresh_token: String,
}

#[derive(Deserialize, ToSchema)]
pub struct LogoutBody {
    /// Also revokes this refresh token's session when given.
    refresh_token: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct TokenResponse {
    access_token: String,
    #[schema(value_type = String, pattern = "^Bearer$", example = "Bearer")]
    token_type: &'static str,
    /// Seconds until the access token expires.
    expires_in: i64,
    refresh_token: String,
    /// Seconds until the refresh token expires.
    refresh_expires_in: i64,
    session_id: Uuid,
}

impl From<TokenPair> for TokenResponse {
    fn from(p: TokenPair) -> Self {
        Self {
            access_token: p.access_token,
            token_type: "Bearer",
            expires_in: p.expires_in,
            refresh_token: p.refresh_token,
            refresh_expires_in: p.refresh_expires_in,
            session_id: p.session_id,
        }
    }
}

/// `RateLimit-*` headers (draft-ietf-httpapi-ratelimit-headers) of a
/// limited endpoint's answer.
fn rate_headers(d: &LimitDecision) -> [(&'static str, String); 3] {
    [
        ("ratelimit-limit", d.limit.to_string()),
        ("ratelimit-remaining", d.remaining.to_string()),
        (
            "ratelimit-reset",
            d.reset_after.as_secs().max(1).to_string(),
        ),
    ]
}

#[utoipa::path(
    post,
    path = "/api/v1/auth/register",
    tag = "auth",
    request_body = RegisterBody,
    responses(
        (status = 201, description = "The new user", body = UserView, headers(
            ("RateLimit-Limit" = u32), ("RateLimit-Remaining" = u32), ("RateLimit-Reset" = u64)
        )),
        BadRequest, PayloadTooLarge, Unprocessable, Conflict, TooManyRequests, ServiceUnavailable,
    )
)]
pub async fn register(
    State(state): State<AppState>,
    ClientInfo { rate_key, .. }: ClientInfo,
    Json(body): Json<RegisterBody>,
) -> Result<impl IntoResponse, ApiError> {
    let limit = state
        .limits()
        .check(Limit::RegisterPerIp, &rate_key)
        .await?;
    let registration = Registration {
        email: body.email,
        username: body.username,
        password: body.password,
        roles: Vec::new(),
    };
    let user = state.accounts().register(registration, now()).await?;
    Ok((
        StatusCode::CREATED,
        rate_headers(&limit),
        axum::Json(UserView::from(user)),
    ))
}

#[utoipa::path(
    post,
    path = "/api/v1/auth/login",
    tag = "auth",
    request_body = LoginBody,
    responses(
        (status = 200, description = "An access and a refresh token", body = TokenResponse, headers(
            ("RateLimit-Limit" = u32), ("RateLimit-Remaining" = u32), ("RateLimit-Reset" = u64)
        )),
        BadRequest, Unauthorized, Forbidden, PayloadTooLarge, Unprocessable, TooManyRequests,
        ServiceUnavailable,
    )
)]
pub async fn login(
    State(state): State<AppState>,
    ClientInfo { client, rate_key }: ClientInfo,
    Json(body): Json<LoginBody>,
) -> Result<impl IntoResponse, ApiError> {
    let answer: Result<_, ApiError> = async {
        // A login no account can have reaches no limiter (each name tried
        // is a limiter key).
        crate::auth::rate_limit::check_login(&body.login)?;
        // Shed at the door: no limiter or store call for a login with no
        // place to be hashed.
        let slot = state.sessions().hash_slot()?;
        let limit = state.limits().check(Limit::LoginPerIp, &rate_key).await?;
        let pair = state
            .sessions()
            .login(slot, &body.login, body.password, client, now())
            .await?;
        Ok((rate_headers(&limit), axum::Json(TokenResponse::from(pair))))
    }
    .await;
    auth_outcomes::record(AuthMethod::Password, &answer);
    answer
}

#[utoipa::path(
    post,
    path = "/api/v1/auth/refresh",
    tag = "auth",
    request_body = RefreshBody,
    responses(
        (status = 200, description = "A rotated token pair", body = TokenResponse, headers(
            ("RateLimit-Limit" = u32), ("RateLimit-Remaining" = u32), ("RateLimit-Reset" = u64)
        )),
        BadRequest, Unauthorized, Forbidden, PayloadTooLarge, TooManyRequests, ServiceUnavailable,
    )
)]
pub async fn refresh(
    State(state): State<AppState>,
    ClientInfo { rate_key, .. }: ClientInfo,
    Json(body): Json<RefreshBody>,
) -> Result<impl IntoResponse, ApiError> {
    let limit = state.limits().check(Limit::RefreshPerIp, &rate_key).await?;
    let pair = state.sessions().refresh(&body.refresh_token, now()).await?;
    Ok((rate_headers(&limit), axum::Json(TokenResponse::from(pair))))
}

/// Revokes this session (and the refresh token's, when one is given).
#[utoipa::path(
    post,
    path = "/api/v1/auth/logout",
    tag = "auth",
    security(("bearer" = [])),
    request_body(content = Option<LogoutBody>, description = "Optional"),
    responses(
        (status = 204, description = "Logged out"),
        BadRequest, Unauthorized, Forbidden, PayloadTooLarge, ServiceUnavailable,
    )
)]
pub async fn logout(
    State(state): State<AppState>,
    Authenticated(claims): Authenticated,
    OptionalJson(body): OptionalJson<LogoutBody>,
) -> Result<StatusCode, ApiError> {
    let refresh_token = body.and_then(|b| b.refresh_token);
    state
        .sessions()
        .logout(claims.sub, claims.sid, refresh_token.as_deref(), now())
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Revokes every session of the user.
#[utoipa::path(
    post,
    path = "/api/v1/auth/logout-all",
    tag = "auth",
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Every session revoked"),
        Unauthorized, Forbidden, ServiceUnavailable,
    )
)]
pub async fn logout_all(
    State(state): State<AppState>,
    Authenticated(claims): Authenticated,
) -> Result<StatusCode, ApiError> {
    state.sessions().logout_all(claims.sub, now()).await?;
    Ok(StatusCode::NO_CONTENT)
}

const USER_ID: HeaderName = HeaderName::from_static("x-auth-user-id");
const ROLES: HeaderName = HeaderName::from_static("x-auth-roles");
const METHOD: HeaderName = HeaderName::from_static("x-auth-method");
const SESSION_ID: HeaderName = HeaderName::from_static("x-auth-session-id");
const SCOPES: HeaderName = HeaderName::from_static("x-auth-scopes");
const API_KEY_ID: HeaderName = HeaderName::from_static("x-auth-api-key-id");
const IDP: HeaderName = HeaderName::from_static("x-auth-idp");

/// A UUID as a header value, formatted on the stack.
fn uuid_value(id: &Uuid) -> HeaderValue {
    let mut buf = Uuid::encode_buffer();
    HeaderValue::from_str(id.hyphenated().encode_lower(&mut buf))
        .unwrap_or_else(|_| HeaderValue::from_static(""))
}

#[utoipa::path(
    get,
    path = "/api/v1/auth/verify",
    tag = "auth",
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 204, description = "Any accepted credential: the identity in headers", headers(
            ("X-Auth-User-Id" = String, description = "The user (or an upstream subject)"),
            ("X-Auth-Roles" = String, description = "Comma-separated roles (an emergency token's scopes)"),
            ("X-Auth-Method" = String, description = "`jwt`, `api_key`, `emergency` or `external`"),
            ("X-Auth-Session-Id" = String, description = "`jwt` only"),
            ("X-Auth-Scopes" = String, description = "`api_key` only: comma-separated scopes"),
            ("X-Auth-Api-Key-Id" = String, description = "`api_key` only"),
            ("X-Auth-Idp" = String, description = "`external` only: the issuer's name"),
        )),
        Unauthorized, Forbidden, TooManyRequests, ServiceUnavailable,
    )
)]
/// Forward-auth for nginx `auth_request`, Traefik and Envoy: 204 with the
/// identity in headers, or the error. Touches no store (but an API key
/// not yet cached). Headers go straight into the response, sized once:
/// this is the hottest handler.
pub async fn verify(credential: Credential) -> Result<Response, ApiError> {
    let mut response = StatusCode::NO_CONTENT.into_response();
    let headers = response.headers_mut();
    headers.reserve(16);
    let value = |s: &str| HeaderValue::from_str(s).map_err(ApiError::internal);
    match credential {
        Credential::User(claims) => {
            headers.insert(USER_ID, uuid_value(&claims.sub));
            headers.insert(ROLES, value(&claims.roles.join(","))?);
            headers.insert(METHOD, HeaderValue::from_static("jwt"));
            headers.insert(SESSION_ID, uuid_value(&claims.sid));
        }
        Credential::Emergency(claims) => {
            headers.insert(USER_ID, value(&claims.sub)?);
            headers.insert(ROLES, value(&claims.scope.join(","))?);
            headers.insert(METHOD, HeaderValue::from_static("emergency"));
        }
        Credential::ApiKey(key) => {
            headers.insert(USER_ID, uuid_value(&key.user_id));
            headers.insert(ROLES, HeaderValue::from_static(""));
            headers.insert(SCOPES, value(&key.scopes.join(","))?);
            headers.insert(API_KEY_ID, uuid_value(&key.id));
            headers.insert(METHOD, HeaderValue::from_static("api_key"));
        }
        Credential::External(identity) => {
            headers.insert(USER_ID, value(&identity.sub)?);
            headers.insert(ROLES, value(&identity.roles.join(","))?);
            headers.insert(IDP, value(&identity.idp)?);
            headers.insert(METHOD, HeaderValue::from_static("external"));
        }
    }
    Ok(response)
}
