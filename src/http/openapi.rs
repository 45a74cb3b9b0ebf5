//! `GET /api/v1/openapi.json`: the OpenAPI 3.1 document of every route,
//! generated from the handlers' `#[utoipa::path]` attributes as the router
//! registers them (`utoipa_axum::OpenApiRouter`), so a route cannot be
//! served without being documented. This module holds what the handlers
//! share: the error body of DESIGN.md §3 (`ErrorBody`), one reusable
//! response per error status (`BadRequest`, `Unauthorized`, …, each naming
//! the codes it carries and its headers), the two security schemes, and the
//! handler that serves the document, serialised once when the router is
//! built. No UI: the document is the product (DEPENDENCIES.md trap 8).

use crate::http::error::ApiError;
use axum::Extension;
use axum::body::Bytes;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use utoipa::openapi::header::Header;
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{Content, Ref, RefOr};
use utoipa::{IntoResponses, Modify, OpenApi, ToSchema};

/// Every failure: `{"error": {...}}` (DESIGN.md §3, `ApiError`).
#[derive(ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(ToSchema)]
pub struct ErrorDetail {
    pub code: ErrorCode,
    /// Short and generic; the code is what clients branch on.
    pub message: String,
    /// The request's `X-Request-Id`, also in the server's log.
    pub correlation_id: String,
    #[schema(format = DateTime)]
    pub timestamp: String,
    /// Present for VAL001 (`fields`), CONFLICT001 (`field`), REQ001 and
    /// AUTH005 with a reason (`reason`), SVC001 (`dependency`).
    #[schema(required = false)]
    pub details: Option<ErrorDetails>,
}

/// The contract's error codes (`ApiError::parts`).
#[derive(ToSchema)]
#[schema(rename_all = "UPPERCASE")]
pub enum ErrorCode {
    Req001,
    Req002,
    Val001,
    Auth001,
    Auth002,
    Auth003,
    Auth004,
    Auth005,
    Auth006,
    Auth007,
    Conflict001,
    NotFound,
    Rate001,
    Svc001,
    Svc002,
    Internal,
}

#[derive(ToSchema)]
pub struct ErrorDetails {
    /// VAL001: each field that failed and why.
    #[schema(required = false)]
    pub fields: Option<Vec<crate::http::error::FieldError>>,
    /// CONFLICT001: `email` or `username`.
    #[schema(required = false)]
    pub field: Option<String>,
    #[schema(required = false)]
    pub reason: Option<String>,
    /// SVC001: the dependency that is down (`database`, `redis`,
    /// `rate_limiter`, `password_hashing`, an identity provider…).
    #[schema(required = false)]
    pub dependency: Option<String>,
}

/// The error responses, one per status, each a `components.responses`
/// entry that operations refer to.
const ERRORS: [(&str, u16, &str); 9] = [
    (
        "BadRequest",
        400,
        "REQ001: malformed request (bad JSON, wrong content type, missing field, bad query string or path, a NUL character anywhere).",
    ),
    (
        "Unauthorized",
        401,
        "AUTH001 invalid credentials, AUTH002 token expired, AUTH003 token invalid or missing, AUTH004 revoked, AUTH007 refresh token reuse (session revoked). `WWW-Authenticate: Bearer` (with `error=\"invalid_token\"` for a bad token).",
    ),
    (
        "Forbidden",
        403,
        "AUTH005 authenticated but not permitted (`details.reason` may say why), AUTH006 account disabled.",
    ),
    ("NotFound", 404, "NOTFOUND: no such resource."),
    (
        "Conflict",
        409,
        "CONFLICT001: email or username already taken (`details.field`).",
    ),
    ("PayloadTooLarge", 413, "REQ002: request body over 64 KiB."),
    (
        "Unprocessable",
        422,
        "VAL001: validation failed; `details.fields` lists each field.",
    ),
    (
        "TooManyRequests",
        429,
        "RATE001: rate limited; `Retry-After` and `RateLimit-*` headers set.",
    ),
    (
        "ServiceUnavailable",
        503,
        "SVC001 a dependency is unavailable (`details.dependency`), or SVC002 the service is in read-only mode; `Retry-After` set.",
    ),
];

fn integer_header(description: &str) -> Header {
    let mut header = Header::new(ObjectBuilder::new().schema_type(Type::Integer));
    header.description = Some(description.into());
    header
}

fn error_response(status: u16, description: &str) -> RefOr<utoipa::openapi::Response> {
    let mut response = ResponseBuilder::new().description(description).content(
        "application/json",
        Content::new(Some(Ref::from_schema_name("ErrorBody"))),
    );
    match status {
        401 => {
            let mut h = Header::new(ObjectBuilder::new().schema_type(Type::String));
            h.description = Some("`Bearer` or `Bearer error=\"invalid_token\"` (RFC 6750)".into());
            response = response.header("WWW-Authenticate", h);
        }
        429 => {
            response = response
                .header(
                    "Retry-After",
                    integer_header("Seconds until a retry may succeed"),
                )
                .header(
                    "RateLimit-Limit",
                    integer_header("Requests allowed per window"),
                )
                .header("RateLimit-Remaining", integer_header("Always 0 here"))
                .header(
                    "RateLimit-Reset",
                    integer_header("Seconds until the window resets"),
                );
        }
        503 => {
            response = response.header(
                "Retry-After",
                integer_header("Seconds until a retry may succeed"),
            );
        }
        _ => {}
    }
    RefOr::T(response.build())
}

/// One reusable error response per status: `responses(Unauthorized, …)`
/// in a handler's `#[utoipa::path]` adds a reference to it.
macro_rules! error_responses {
    ($($name:ident = $status:literal;)*) => {$(
        #[doc = concat!("The ", stringify!($status), " error response (`components.responses.", stringify!($name), "`).")]
        pub struct $name;
        impl IntoResponses for $name {
            fn responses() -> BTreeMap<String, RefOr<utoipa::openapi::Response>> {
                BTreeMap::from([(
                    $status.to_string(),
                    RefOr::Ref(Ref::from_response_name(stringify!($name))),
                )])
            }
        }
    )*};
}

error_responses! {
    BadRequest = 400;
    Unauthorized = 401;
    Forbidden = 403;
    NotFound = 404;
    Conflict = 409;
    PayloadTooLarge = 413;
    Unprocessable = 422;
    TooManyRequests = 429;
    ServiceUnavailable = 503;
}

/// The security schemes and the shared error responses.
struct Components;

impl Modify for Components {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.security_schemes.insert(
            "bearer".into(),
            RefOr::T(SecurityScheme::Http(
                Http::builder()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "An access token from /auth/login, an emergency token, or a \
                         configured upstream issuer's token",
                    ))
                    .build(),
            )),
        );
        components.security_schemes.insert(
            "api_key".into(),
            RefOr::T(SecurityScheme::ApiKey(ApiKey::Header(
                ApiKeyValue::with_description(
                    "X-API-Key",
                    "An API key (`hf_…`) from POST /api-keys; `Authorization: ApiKey <key>` works too",
                ),
            ))),
        );
        for (name, status, description) in ERRORS {
            components
                .responses
                .insert(name.into(), error_response(status, description));
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "holdfast",
        description = "An authentication service that stays up when its dependencies don't. \
                       Every error answers `{\"error\": {code, message, correlation_id, timestamp, details?}}`; \
                       every response carries `X-Request-Id`.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    components(schemas(ErrorBody)),
    modifiers(&Components),
    tags(
        (name = "auth", description = "Registration, login, tokens, forward-auth, introspection"),
        (name = "users", description = "The caller's own account and sessions"),
        (name = "api-keys", description = "The caller's API keys"),
        (name = "authz", description = "Permission checks"),
        (name = "admin", description = "Operators: role admin, an API key with scope `admin`, or an emergency token"),
        (name = "health", description = "Liveness, readiness, health and metrics: no authentication"),
        (name = "well-known", description = "JWKS and discovery"),
        (name = "meta", description = "This document"),
    )
)]
struct ApiDoc;

/// The document's skeleton: info, tags, security schemes, shared errors.
/// The router adds each route's path as it registers it.
pub fn base() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// The serialised document, filled in once the router holding this route
/// has been built (it documents itself too).
#[derive(Clone, Default)]
pub struct Document(Arc<OnceLock<Bytes>>);

impl Document {
    pub fn set(&self, openapi: &utoipa::openapi::OpenApi) {
        match serde_json::to_vec(openapi) {
            Ok(json) => {
                let _ = self.0.set(Bytes::from(json));
            }
            Err(e) => tracing::error!(error = %e, "the OpenAPI document did not serialise"),
        }
    }
}

/// The top of an OpenAPI document (the rest is free-form here).
#[derive(ToSchema)]
pub struct OpenApiDocument {
    #[schema(pattern = r"^3\.1\.\d+$", example = "3.1.0")]
    pub openapi: String,
    #[schema(value_type = Object)]
    pub info: (),
    #[schema(value_type = Object)]
    pub paths: (),
    #[schema(value_type = Object)]
    pub components: (),
}

/// This OpenAPI 3.1 document.
#[utoipa::path(
    get,
    path = "/api/v1/openapi.json",
    operation_id = "openapi_document",
    tag = "meta",
    responses((status = 200, description = "The OpenAPI 3.1 document of every route", body = OpenApiDocument))
)]
pub async fn document(Extension(document): Extension<Document>) -> Result<Response, ApiError> {
    let json = document
        .0
        .get()
        .ok_or_else(|| ApiError::internal("the OpenAPI document is not built"))?;
    let mut response = json.clone().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(response)
}
