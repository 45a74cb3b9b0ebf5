//! Helpers for tests/api/security_edge.rs: requests with raw bodies and headers
//! (bad JSON cannot be built from a `serde_json::Value`), and the check that
//! an answer is a contract error and never a 5xx.

use super::{Reply, TestApp};
use reqwest::Method;

/// JSON fragments that no field should turn into a 500: NUL, a lone
/// surrogate, an invalid escape, wrong types, numbers no integer holds,
/// a string under the body limit but far past any column's sense, and one
/// past the body limit. `(label, raw JSON value)`.
pub fn bad_json_values() -> Vec<(&'static str, String)> {
    vec![
        ("nul", r#""a\u0000b""#.to_string()),
        ("lone surrogate", r#""\ud800""#.to_string()),
        ("lone low surrogate", r#""x\udc00y""#.to_string()),
        ("invalid escape", r#""\q""#.to_string()),
        ("raw control character", "\"a\u{1}b\"".to_string()),
        ("number", "123".to_string()),
        ("huge float", "1e400".to_string()),
        ("huge integer", "99999999999999999999".to_string()),
        ("negative", "-1".to_string()),
        ("bool", "true".to_string()),
        ("null", "null".to_string()),
        ("array", "[\"a\"]".to_string()),
        ("object", "{\"a\":1}".to_string()),
        ("empty", "\"\"".to_string()),
        ("60 KB string", format!("\"{}\"", "a".repeat(60_000))),
        ("60 KB of é", format!("\"{}\"", "é".repeat(30_000))),
        // Past the 64 KiB body limit. (A 1 MB body gets the same 413, but
        // the server closes the connection without reading the rest, so
        // the client may see a broken pipe instead of the answer.)
        ("70 KB string", format!("\"{}\"", "a".repeat(70 * 1024))),
    ]
}

/// Whole bodies that are not JSON objects at all.
pub fn bad_bodies() -> Vec<(&'static str, String)> {
    vec![
        ("truncated", "{\"a\":".to_string()),
        ("not json", "hello".to_string()),
        ("array body", "[]".to_string()),
        (
            "deep nesting",
            format!("{}{}", "[".repeat(10_000), "]".repeat(10_000)),
        ),
        ("empty body", String::new()),
    ]
}

impl TestApp {
    /// A request with a raw body and the given headers.
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, String)],
        body: Option<String>,
    ) -> Reply {
        let mut request = self.client.request(method, self.url(path));
        for (name, value) in headers {
            request = request.header(*name, value.as_str());
        }
        if let Some(body) = body {
            request = request.body(body);
        }
        Reply::from(request.send().await.expect("request")).await
    }
}

/// Never a 5xx; every 4xx in the contract's error format with a known
/// code. `what` names the case in the failure message.
pub fn assert_contract_answer(reply: &Reply, what: &str) {
    let status = reply.status.as_u16();
    assert!(status < 500, "{what}: answered {status}: {}", reply.body);
    if status >= 400 {
        let error = &reply.body["error"];
        let code = error["code"].as_str().unwrap_or("");
        let known = [
            "REQ001",
            "REQ002",
            "VAL001",
            "AUTH001",
            "AUTH002",
            "AUTH003",
            "AUTH004",
            "AUTH005",
            "AUTH006",
            "AUTH007",
            "CONFLICT001",
            "NOTFOUND",
            "RATE001",
        ];
        assert!(
            known.contains(&code),
            "{what}: {status} without a contract error: {}",
            reply.body
        );
        assert!(
            error["correlation_id"].is_string() && error["timestamp"].is_string(),
            "{what}: {}",
            reply.body
        );
    }
}
