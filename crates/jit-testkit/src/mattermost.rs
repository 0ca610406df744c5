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
    /// The custom slash commands registered, as the API's `Command` objects: created, listed,
    /// updated and given new tokens as Mattermost does (a trigger is unique in its team).
    pub commands: Vec<Value>,
    /// `PrivacySettings.ShowEmailAddress` off and the bot no admin: other users' `email` is
    /// blank, as Mattermost sanitises it.
    pub emails_hidden: bool,
    /// The bot token is a regular user's personal access token while
    /// `ServiceSettings.EnableUserAccessTokens` is off: Mattermost refuses it (401) exactly as
    /// it refuses a wrong token.
    pub access_tokens_disabled: bool,
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
/// `<name>@example.com`; `uadmin` is a system admin, `ubot` (`me`) the bot; every team's members
/// are `ubot`, `uadmin`, `ualice`, `ubob` and `ucarol`. `POST /commands/execute` calls the
/// registered command's URL with its token, as Mattermost does. The bot token is
/// `bot-token` (a call with another token, or none, is answered 401 as Mattermost answers it).
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
    state: axum::extract::State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    let mut answer = respond(state, method, uri, headers, body);
    // A command to execute calls its URL: done here, with the state's lock released.
    match answer.extensions_mut().remove::<Execute>() {
        Some(Execute(target, body)) => execute(target, &body).await,
        None => answer,
    }
}

/// A `POST /commands/execute` still to run: the command's trigger, URL and token, and the body.
#[derive(Clone)]
struct Execute(Option<(String, String, String)>, Value);

fn respond(
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
    if d.access_tokens_disabled {
        d.calls
            .push((method.to_string(), path.clone(), body.clone()));
        return session_expired();
    }
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some("Bearer bot-token") {
        d.violations.push(format!("{method} {path}: no bot token"));
        d.calls
            .push((method.to_string(), path.clone(), body.clone()));
        // As Mattermost answers a missing, wrong or revoked token.
        return session_expired();
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
            for pair in uri
                .query()
                .unwrap_or("")
                .split('&')
                .filter(|p| !p.is_empty())
            {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                let ok = match spec["query"].get(k).and_then(Value::as_str) {
                    None => false,
                    Some("boolean") => matches!(v, "true" | "false"),
                    Some("integer") => v.parse::<i64>().is_ok(),
                    Some(_) => true,
                };
                if !ok {
                    d.violations.push(format!(
                        "{name}: query parameter {k}={v} is not in the spec"
                    ));
                }
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
    if let Some(answer) = commands(&mut d, method.as_str(), &parts, &body, uri.query()) {
        return answer;
    }
    if let ("POST", ["commands", "execute"]) = (method.as_str(), parts.as_slice()) {
        let mut later = axum::http::StatusCode::OK.into_response();
        later
            .extensions_mut()
            .insert(Execute(execute_target(&d, &body), body));
        return later;
    }
    let hidden = d.emails_hidden;
    let seen = |mut u: Value| {
        if hidden && u["id"] != "ubot" {
            u["email"] = json!("");
        }
        u
    };
    let answer = match (method.as_str(), parts.as_slice()) {
        ("GET", ["users", "me"]) => user("ubot"),
        ("GET", ["users", uid]) => seen(user(uid)),
        ("GET", ["users"]) => Value::Array(
            ["ubot", "uadmin", "ualice", "ubob", "ucarol"]
                .into_iter()
                .map(|u| seen(user(u)))
                .collect(),
        ),
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

/// Mattermost's answer to a refused token.
fn session_expired() -> axum::response::Response {
    use axum::response::IntoResponse;
    (
        axum::http::StatusCode::UNAUTHORIZED,
        axum::Json(json!({
            "id": "api.context.session_expired.app_error",
            "message": "Invalid or expired session, please login again.",
            "status_code": 401
        })),
    )
        .into_response()
}

/// Mattermost's error answer.
fn app_error(status: u16, id: &str, message: &str) -> axum::response::Response {
    use axum::response::IntoResponse;
    (
        axum::http::StatusCode::from_u16(status).unwrap(),
        axum::Json(json!({"id": id, "message": message, "status_code": status})),
    )
        .into_response()
}

fn query_param<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query?
        .split('&')
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The slash command routes that keep state: list, create, update, new token.
fn commands(
    d: &mut Double,
    method: &str,
    parts: &[&str],
    body: &Value,
    query: Option<&str>,
) -> Option<axum::response::Response> {
    use axum::response::IntoResponse;
    let n = d.next_id;
    let token = format!("tok{n:023}");
    let find = |d: &Double, id: &str| d.commands.iter().position(|c| c["id"] == id);
    Some(match (method, parts) {
        ("GET", ["commands"]) => {
            let team = query_param(query, "team_id").unwrap_or("");
            let list: Vec<Value> = d
                .commands
                .iter()
                .filter(|c| c["team_id"] == team)
                .cloned()
                .collect();
            axum::Json(Value::Array(list)).into_response()
        }
        ("POST", ["commands"]) => {
            let trigger = body["trigger"].as_str().unwrap_or("").to_lowercase();
            if d.commands
                .iter()
                .any(|c| c["team_id"] == body["team_id"] && c["trigger"] == trigger.as_str())
            {
                return Some(app_error(
                    400,
                    "api.command.duplicate_trigger.app_error",
                    "This trigger word is already in use. Please choose another word.",
                ));
            }
            let mut c = json!({
                "username": "", "icon_url": "", "auto_complete": false, "auto_complete_desc": "",
                "auto_complete_hint": "", "display_name": "", "description": "",
            });
            for (k, v) in body.as_object().unwrap() {
                c[k] = v.clone();
            }
            c["id"] = json!(format!("cmd{n:023}"));
            c["token"] = json!(token);
            c["trigger"] = json!(trigger);
            c["creator_id"] = json!("ubot");
            c["create_at"] = json!(n);
            c["update_at"] = json!(n);
            c["delete_at"] = json!(0);
            d.commands.push(c.clone());
            (axum::http::StatusCode::CREATED, axum::Json(c)).into_response()
        }
        ("PUT", ["commands", id]) => {
            let Some(i) = find(d, id) else {
                return Some(app_error(
                    404,
                    "app.command.getbyid.missing.app_error",
                    "not found",
                ));
            };
            let old = d.commands[i].clone();
            // As the server: the body's id must be the path's, its team the command's; every
            // other field is replaced, except those the server keeps.
            if body["id"] != *id {
                return Some(app_error(
                    400,
                    "api.context.invalid_body_param.app_error",
                    "Invalid or missing command in request body.",
                ));
            }
            if body["team_id"] != old["team_id"] {
                return Some(app_error(
                    400,
                    "api.command.team_mismatch.app_error",
                    "Unable to update command across teams.",
                ));
            }
            let mut c = body.clone();
            for k in [
                "id",
                "token",
                "creator_id",
                "create_at",
                "delete_at",
                "team_id",
            ] {
                c[k] = old[k].clone();
            }
            c["trigger"] = json!(body["trigger"].as_str().unwrap_or("").to_lowercase());
            c["update_at"] = json!(n);
            d.commands[i] = c.clone();
            axum::Json(c).into_response()
        }
        ("PUT", ["commands", id, "regen_token"]) => {
            let Some(i) = find(d, id) else {
                return Some(app_error(
                    404,
                    "app.command.getbyid.missing.app_error",
                    "not found",
                ));
            };
            d.commands[i]["token"] = json!(token);
            axum::Json(json!({"token": token})).into_response()
        }
        _ => return None,
    })
}

/// The command `/trigger …` in an execute body names: its URL and token.
fn execute_target(d: &Double, body: &Value) -> Option<(String, String, String)> {
    let line = body["command"].as_str()?;
    let trigger = line
        .trim_start_matches('/')
        .split(' ')
        .next()?
        .to_lowercase();
    let c = d
        .commands
        .iter()
        .find(|c| c["trigger"] == trigger.as_str())?;
    Some((
        trigger,
        c["url"].as_str()?.to_owned(),
        c["token"].as_str()?.to_owned(),
    ))
}

/// `POST /commands/execute`: calls the command's URL with its token and the form Mattermost
/// sends, and answers as Mattermost does (500 with `…failed…` when the URL cannot be reached,
/// `…failed_resp…` when it answers other than 200).
async fn execute(
    target: Option<(String, String, String)>,
    body: &Value,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let Some((trigger, url, token)) = target else {
        return app_error(
            404,
            "api.command.execute_command.not_found.app_error",
            "Command not found.",
        );
    };
    let line = body["command"].as_str().unwrap_or("");
    let text = line.split_once(' ').map_or("", |(_, t)| t);
    let channel = body["channel_id"].as_str().unwrap_or("");
    let form = form(&[
        ("channel_id", channel),
        ("channel_name", "town-square"),
        ("command", &format!("/{trigger}")),
        ("response_url", "http://127.0.0.1:1/none"),
        ("team_domain", "acme"),
        ("team_id", "t1"),
        ("text", text),
        ("token", &token),
        ("trigger_id", "trig-ubot"),
        ("user_id", "ubot"),
        ("user_name", "jitbot"),
    ]);
    let sent = reqwest::Client::new()
        .post(&url)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("authorization", format!("Token {token}"))
        .body(form)
        .send()
        .await;
    match sent {
        Err(_) => app_error(
            500,
            "api.command.execute_command.failed.app_error",
            &format!("Command with a trigger of '{trigger}' failed."),
        ),
        Ok(r) if r.status() != reqwest::StatusCode::OK => app_error(
            500,
            "api.command.execute_command.failed_resp.app_error",
            &format!(
                "Command with a trigger of '{trigger}' returned response {}.",
                r.status()
            ),
        ),
        Ok(r) => {
            let reply: Value = r.json().await.unwrap_or(Value::Null);
            axum::Json(reply).into_response()
        }
    }
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
