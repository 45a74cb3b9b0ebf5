//! `GET /api/v1/openapi.json`: an OpenAPI 3.1 document of exactly the routes
//! the router serves. The route list comes from the code, not from a list
//! kept here: the router registers every route through utoipa-axum's
//! `routes!` (route and documentation in one call), `openapi_document`
//! returns what it registered, and the source check below fails on a route
//! added any other way.

use crate::support;

use reqwest::{Method, StatusCode};
use serde_json::Value;
use std::collections::BTreeSet;
use support::{Backend, Stack};

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

/// `(METHOD, path)` of every operation in a document.
fn operations(doc: &Value) -> BTreeSet<(String, String)> {
    let paths = doc["paths"].as_object().expect("paths");
    let mut ops = BTreeSet::new();
    for (path, item) in paths {
        for method in METHODS {
            if item.get(method).is_some() {
                ops.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    ops
}

async fn served(stack: &Stack) -> Value {
    let response = stack
        .app
        .client
        .get(stack.app.url("/api/v1/openapi.json"))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["content-type"].to_str().ok(),
        Some("application/json")
    );
    let bytes = response.bytes().await.expect("body");
    serde_json::from_slice(&bytes).expect("the served document parses as JSON")
}

#[tokio::test]
async fn the_served_document_is_openapi_3_1_and_has_every_registered_route() {
    let stack = Stack::start(Backend::Embedded).await;
    let doc = served(&stack).await;
    let version = doc["openapi"].as_str().unwrap_or("");
    assert!(version.starts_with("3.1."), "openapi = {version:?}");

    let registered = holdfast::http::openapi_document(&stack.app.state);
    let registered = serde_json::to_value(&registered).expect("serialise");
    let registered = operations(&registered);
    let documented = operations(&doc);
    assert_eq!(
        registered.difference(&documented).collect::<Vec<_>>(),
        Vec::<&(String, String)>::new(),
        "registered routes missing from the served document"
    );
    assert_eq!(registered, documented);
    // The contract's routes, and this document itself.
    for route in [
        ("POST", "/api/v1/auth/login"),
        ("GET", "/api/v1/auth/verify"),
        ("DELETE", "/api/v1/users/me/sessions/{id}"),
        ("GET", "/api/v1/admin/audit"),
        ("GET", "/.well-known/jwks.json"),
        ("GET", "/livez"),
        ("GET", "/metrics"),
        ("GET", "/status"),
        ("GET", "/"),
        ("GET", "/api/v1/openapi.json"),
    ] {
        assert!(
            documented.contains(&(route.0.to_string(), route.1.to_string())),
            "{route:?} not documented"
        );
    }
    every_operation_is_complete(&doc);
}

/// Each operation answers something, every error refers to a shared
/// response in the error format, and each secured one documents 401.
fn every_operation_is_complete(doc: &Value) {
    let shared = doc["components"]["responses"]
        .as_object()
        .expect("responses");
    assert!(doc["components"]["schemas"]["ErrorBody"].is_object());
    for (name, response) in shared {
        assert_eq!(
            response["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/ErrorBody",
            "{name}"
        );
    }
    let schemes = doc["components"]["securitySchemes"]
        .as_object()
        .expect("schemes");
    let mut operation_ids = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in METHODS {
            let Some(op) = item.get(method) else { continue };
            let id = op["operationId"].as_str().unwrap_or("");
            assert!(
                operation_ids.insert(id.to_string()),
                "operationId {id:?} twice"
            );
            let responses = op["responses"].as_object().expect("responses");
            assert!(!responses.is_empty(), "{method} {path}: no responses");
            for (status, response) in responses {
                if status.starts_with('4') || status == "503" {
                    let target = response["$ref"].as_str().unwrap_or("");
                    let name = target.trim_start_matches("#/components/responses/");
                    let inline_ok = path == "/readyz" || path == "/api/v1/health";
                    assert!(
                        shared.contains_key(name) || inline_ok,
                        "{method} {path} {status}: not the error format"
                    );
                }
            }
            if let Some(security) = op["security"].as_array() {
                for requirement in security {
                    for scheme in requirement.as_object().expect("requirement").keys() {
                        assert!(schemes.contains_key(scheme), "{scheme}");
                    }
                }
                assert!(responses.contains_key("401"), "{method} {path}: no 401");
            }
        }
    }
}

/// Every documented route is served: without credentials none of them
/// falls through to the router's 404 or 405.
#[tokio::test]
async fn every_documented_route_is_served() {
    let stack = Stack::start(Backend::Embedded).await;
    let doc = served(&stack).await;
    for (method, path) in operations(&doc) {
        let concrete = path
            .replace("{id}", "0190b3a4-7c1e-7000-8000-000000000000")
            .replace("{name}", "database");
        let method = Method::from_bytes(method.as_bytes()).expect("method");
        let reply = stack.app.call(method.clone(), &concrete, None, None).await;
        assert!(
            reply.status != StatusCode::NOT_FOUND && reply.status != StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path}: {} {}",
            reply.status,
            reply.body
        );
    }
}

/// With `[admin] listen` set, `/metrics`, `/status` and `/` are not on this
/// listener, and not in its document.
#[tokio::test]
async fn the_document_follows_where_the_operator_endpoints_are() {
    let stack = Stack::start_with(Backend::Embedded, "[admin]\nlisten = \"127.0.0.1:1\"\n").await;
    let doc = served(&stack).await;
    for path in ["/metrics", "/status", "/"] {
        assert!(doc["paths"].get(path).is_none(), "{path}");
    }
    let reply = stack.app.get("/metrics", None).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
}

/// Routes are added only through `routes!` (documented): a bare axum
/// `.route(`, `.route_service(` or `.nest(` in `src/` would serve a route
/// the document does not have.
#[test]
fn routes_are_registered_only_with_their_documentation() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut offenders = Vec::new();
    let mut stack = vec![root];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read_dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().and_then(|e| e.to_str()) != Some("rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("read");
            for (n, line) in text.lines().enumerate() {
                let code = line.split("//").next().unwrap_or("");
                if [".route(", ".route_service(", ".nest(", ".nest_service("]
                    .iter()
                    .any(|call| code.contains(call))
                {
                    offenders.push(format!("{}:{}: {}", path.display(), n + 1, line.trim()));
                }
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "undocumented routes (use `.routes(routes!(handler))` with a \
         `#[utoipa::path]` on the handler):\n{}",
        offenders.join("\n")
    );
}

/// Found by `scripts/api-check`: the document allows a `null` body for
/// logout (the body is optional), and the server answered it 400.
#[tokio::test]
async fn logout_takes_a_null_body_as_no_body() {
    let stack = Stack::start(Backend::Embedded).await;
    let tokens = stack.app.user("nullbody").await;
    let reply = stack
        .app
        .call(
            Method::POST,
            "/api/v1/auth/logout",
            Some(&tokens.access),
            Some(Value::Null),
        )
        .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{}", reply.body);
    assert_eq!(
        stack.app.verify(&tokens.access).await.status,
        StatusCode::UNAUTHORIZED
    );
}
