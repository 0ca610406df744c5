//! A Mattermost double for tests: an HTTP server on 127.0.0.1 that speaks the REST API v4
//! payloads the bridge uses and checks every call against the contract derived from the API's
//! OpenAPI files (`fixtures/mattermost-contract.json`); a call the spec does not allow is
//! recorded as a violation for the test to assert on.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, Uri};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};

/// What the double saw.
#[derive(Debug, Default)]
pub struct Double {
    /// Every call: method, path, JSON body (`Null` when none).
    pub calls: Vec<(String, String, Value)>,
    /// Calls the API spec does not allow.
    pub violations: Vec<String>,
    /// Faults to answer, once each: the next call with this method whose path ends with the
    /// suffix gets this status (after being recorded).
    pub faults: Vec<(String, String, u16)>,
    next_id: u64,
}

impl Double {
    /// The bodies of the calls with this method whose path ends with `suffix`, in order.
    pub fn bodies(&self, method: &str, suffix: &str) -> Vec<Value> {
        self.calls
            .iter()
            .filter(|(m, p, _)| m == method && p.ends_with(suffix))
            .map(|(_, _, b)| b.clone())
            .collect()
    }
}

/// The double's state, shared with the test.
pub type Shared = Arc<Mutex<Double>>;

/// Starts the double; returns its base URL and its state. Users are `u<name>` with email
/// `<name>@example.com`; `uadmin` is a system admin, `ubot` (`me`) the bot; the bot token is
/// `bot-token`.
pub async fn spawn() -> (String, Shared) {
    let double: Shared = Arc::default();
    let app = axum::Router::new()
        .fallback(mattermost)
        .with_state(double.clone());
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    (url, double)
}

fn contract() -> Value {
    let p = crate::workspace_root().join("fixtures/mattermost-contract.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn type_ok(t: &str, v: &Value) -> bool {
    match t {
        "string" => v.is_string(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        "boolean" => v.is_boolean(),
        "array" => v.is_array(),
        "object" => v.is_object(),
        _ => true,
    }
}

fn check(schema: &Value, v: &Value, at: &str, out: &mut Vec<String>) {
    if let Some(t) = schema.get("type").and_then(Value::as_str)
        && !type_ok(t, v)
    {
        out.push(format!("{at}: expected {t}, got {v}"));
        return;
    }
    if let Some(req) = schema.get("required").and_then(Value::as_array) {
        for r in req {
            if v.get(r.as_str().unwrap()).is_none() {
                out.push(format!("{at}: missing required {r}"));
            }
        }
    }
    if let (Some(props), Some(obj)) = (
        schema.get("properties").and_then(Value::as_object),
        v.as_object(),
    ) {
        for (k, ps) in props {
            if let Some(x) = obj.get(k) {
                check(ps, x, &format!("{at}.{k}"), out);
            }
        }
    }
    if let (Some(items), Some(arr)) = (schema.get("items"), v.as_array()) {
        for (i, x) in arr.iter().enumerate() {
            check(items, x, &format!("{at}[{i}]"), out);
        }
    }
}

fn template_matches(template: &str, path: &str) -> bool {
    let (t, p): (Vec<&str>, Vec<&str>) = (template.split('/').collect(), path.split('/').collect());
    t.len() == p.len()
        && t.iter()
            .zip(&p)
            .all(|(a, b)| (a.starts_with('{') && !b.is_empty()) || a == b)
}

/// The user JSON the double answers for `id`.
pub fn user(id: &str) -> Value {
    let (name, roles) = match id {
        "uadmin" => ("admin", "system_user system_admin"),
        "ubot" => ("jitbot", "system_user"),
        other => (other.trim_start_matches('u'), "system_user"),
    };
    json!({"id": id, "username": name, "email": format!("{name}@example.com"), "roles": roles})
}

async fn mattermost(
    axum::extract::State(d): axum::extract::State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let path = uri.path().to_owned();
    let body: Value = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&body).unwrap_or(Value::Null)
    };
    let c = contract();
    let mut d = d.lock().unwrap();
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some("Bearer bot-token") {
        d.violations.push(format!("{method} {path}: no bot token"));
    }
    let op = c["operations"].as_object().unwrap().iter().find(|(k, _)| {
        let (m, t) = k.split_once(' ').unwrap();
        m == method.as_str() && template_matches(t, &path)
    });
    match op {
        None => d.violations.push(format!(
            "{method} {path}: not an operation of the Mattermost API v4"
        )),
        Some((name, spec)) => {
            let mut out = Vec::new();
            if !spec["body"].is_null() {
                check(&spec["body"], &body, "body", &mut out);
            }
            for o in out {
                d.violations.push(format!("{name}: {o}"));
            }
        }
    }
    d.calls
        .push((method.to_string(), path.clone(), body.clone()));
    if let Some(i) = d
        .faults
        .iter()
        .position(|(m, suffix, _)| m == method.as_str() && path.ends_with(suffix.as_str()))
    {
        let (_, _, status) = d.faults.remove(i);
        let status = axum::http::StatusCode::from_u16(status).unwrap();
        return (
            status,
            [("retry-after", "0")],
            axum::Json(json!({"message": "injected fault", "status_code": status.as_u16()})),
        )
            .into_response();
    }
    d.next_id += 1;
    let id = format!("p{:025}", d.next_id);
    let parts: Vec<&str> = path.trim_start_matches("/api/v4/").split('/').collect();
    let answer = match (method.as_str(), parts.as_slice()) {
        ("GET", ["users", "me"]) => user("ubot"),
        ("GET", ["users", uid]) => user(uid),
        ("POST", ["users", "usernames"]) => Value::Array(
            body.as_array()
                .unwrap()
                .iter()
                .filter_map(|n| n.as_str())
                .filter(|n| ["bob", "carol", "alice"].contains(n))
                .map(|n| user(&format!("u{n}")))
                .collect(),
        ),
        ("GET", ["channels", _, "members", _]) => json!({"roles": "channel_user"}),
        ("POST", ["channels", "direct"]) => {
            json!({"id": format!("dm-{}", body[1].as_str().unwrap_or(""))})
        }
        ("POST", ["posts"]) | ("PUT", ["posts", _, "patch"]) => json!({"id": id}),
        _ => json!({"status": "OK"}),
    };
    // Success statuses as the spec's `responses` give them (posts.yaml, channels.yaml,
    // commands.yaml): creations answer 201.
    let status = match (method.as_str(), parts.as_slice()) {
        ("POST", ["posts"] | ["posts", "ephemeral"] | ["channels", "direct"] | ["commands"]) => {
            axum::http::StatusCode::CREATED
        }
        _ => axum::http::StatusCode::OK,
    };
    (status, axum::Json(answer)).into_response()
}

/// An `application/x-www-form-urlencoded` body, as Mattermost sends slash commands.
pub fn form(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| {
            let enc: String = v
                .bytes()
                .map(|b| {
                    if b.is_ascii_alphanumeric() {
                        (b as char).to_string()
                    } else {
                        format!("%{b:02X}")
                    }
                })
                .collect();
            format!("{k}={enc}")
        })
        .collect::<Vec<_>>()
        .join("&")
}
