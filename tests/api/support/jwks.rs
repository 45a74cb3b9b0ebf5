//! A small upstream identity provider: Ed25519 keys, tokens signed with
//! them, and a JWKS endpoint the test can rotate, break and stop. The same
//! document is served at `/jwks` (with a Content-Length) and at
//! `/jwks-chunked` (streamed, no length declared).

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode as AxumStatus;
use axum::response::IntoResponse;
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use parking_lot::Mutex;
use serde_json::{Value, json};
use std::sync::Arc;

pub const ISSUER: &str = "https://idp.test/";

/// One Ed25519 key of the upstream issuer.
pub struct UpstreamKey {
    kid: String,
    pkcs8: Vec<u8>,
    public: Vec<u8>,
}

impl UpstreamKey {
    pub fn new(kid: &str) -> Self {
        use aws_lc_rs::signature::KeyPair;
        let pkcs8 = aws_lc_rs::signature::Ed25519KeyPair::generate_pkcs8(
            &aws_lc_rs::rand::SystemRandom::new(),
        )
        .expect("pkcs8");
        let pair = aws_lc_rs::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("pair");
        Self {
            kid: kid.into(),
            public: pair.public_key().as_ref().to_vec(),
            pkcs8: pkcs8.as_ref().to_vec(),
        }
    }

    pub fn jwk(&self) -> Value {
        json!({"kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig",
               "kid": self.kid, "x": URL_SAFE_NO_PAD.encode(&self.public)})
    }

    pub fn sign(&self, claims: Value) -> String {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(
            &header,
            &claims,
            &jsonwebtoken::EncodingKey::from_ed_der(&self.pkcs8),
        )
        .expect("sign")
    }

    pub fn token(&self, sub: &str) -> String {
        let now = holdfast::auth::now();
        self.sign(json!({"iss": ISSUER, "aud": "holdfast-tests", "sub": sub,
                         "iat": now, "exp": now + 600}))
    }
}

/// What the JWKS endpoint answers: the keys, or a 500.
#[derive(Clone)]
pub struct Upstream {
    jwks: Arc<Mutex<Option<Value>>>,
    fetches: Arc<Mutex<u32>>,
}

async fn serve_jwks(State(up): State<Upstream>) -> impl IntoResponse {
    *up.fetches.lock() += 1;
    match up.jwks.lock().clone() {
        Some(jwks) => (AxumStatus::OK, axum::Json(jwks)).into_response(),
        None => AxumStatus::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// The JWKS in 64 KiB chunks, with no Content-Length: the client learns
/// the size only by reading.
async fn serve_jwks_chunked(State(up): State<Upstream>) -> impl IntoResponse {
    *up.fetches.lock() += 1;
    match up.jwks.lock().clone() {
        Some(jwks) => {
            let bytes = jwks.to_string().into_bytes();
            let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
                bytes.chunks(64 * 1024).map(|c| Ok(c.to_vec())).collect();
            let body = axum::body::Body::from_stream(futures::stream::iter(chunks));
            (
                AxumStatus::OK,
                [(axum::http::header::CONTENT_TYPE, "application/json")],
                body,
            )
                .into_response()
        }
        None => AxumStatus::INTERNAL_SERVER_ERROR.into_response(),
    }
}

impl Upstream {
    /// `keys`, plus an unknown member `padding` of `bytes` characters: a
    /// valid JWKS of any size.
    pub fn publish_padded(&self, keys: &[&UpstreamKey], bytes: usize) {
        let keys: Vec<Value> = keys.iter().map(|k| k.jwk()).collect();
        *self.jwks.lock() = Some(json!({ "keys": keys, "padding": "x".repeat(bytes) }));
    }

    pub fn publish(&self, keys: &[&UpstreamKey]) {
        let keys: Vec<Value> = keys.iter().map(|k| k.jwk()).collect();
        *self.jwks.lock() = Some(json!({ "keys": keys }));
    }

    pub fn break_it(&self) {
        *self.jwks.lock() = None;
    }

    pub fn fetches(&self) -> u32 {
        *self.fetches.lock()
    }
}

pub async fn start_upstream(
    listener: tokio::net::TcpListener,
) -> (Upstream, tokio::task::JoinHandle<()>) {
    let up = Upstream {
        jwks: Arc::new(Mutex::new(None)),
        fetches: Arc::new(Mutex::new(0)),
    };
    let app = Router::new()
        .route("/jwks", get(serve_jwks))
        .route("/jwks-chunked", get(serve_jwks_chunked))
        .with_state(up.clone());
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (up, server)
}
