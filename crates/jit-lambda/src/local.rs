//! The function behind a local HTTP listener: each request becomes the API Gateway HTTP API
//! (payload 2.0) event Lambda would deliver, and the function's answer becomes the response,
//! as API Gateway (or cargo-lambda's emulator) does. The API suite runs the function this way
//! in process, with its injected clock; `tests/emulator.rs` runs the real binary on the
//! emulator.

use crate::Function;
use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, Response, StatusCode};
use base64::Engine as _;
use lambda_http::lambda_runtime::{Context, LambdaEvent};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Most bytes of a request body (API Gateway's payload limit).
const MAX_BODY: usize = 10 * 1024 * 1024;

/// Serves `function` on `listener` until `shutdown` completes.
pub async fn serve(
    function: Arc<Function>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let seq = Arc::new(AtomicU64::new(0));
    let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
        let f = function.clone();
        let seq = seq.clone();
        async move { invoke(&f, req, seq.fetch_add(1, Ordering::Relaxed)).await }
    });
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

fn text_like(content_type: Option<&str>) -> bool {
    content_type.is_none_or(|c| {
        c.starts_with("text/") || c.starts_with("application/json") || c.contains("+json")
    })
}

/// The payload 2.0 event of `req`.
pub async fn event(req: axum::extract::Request, n: u64) -> Result<Value, String> {
    let (parts, body) = req.into_parts();
    let peer = parts
        .extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map_or("127.0.0.1".to_owned(), |c| c.0.ip().to_string());
    let bytes = axum::body::to_bytes(body, MAX_BODY)
        .await
        .map_err(|e| format!("reading the body: {e}"))?;
    let mut headers = serde_json::Map::new();
    let mut cookies = Vec::new();
    for (k, v) in &parts.headers {
        let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
        if k == axum::http::header::COOKIE {
            cookies.extend(v.split("; ").map(|c| Value::String(c.to_owned())));
        }
        match headers.get_mut(k.as_str()) {
            // API Gateway joins repeated headers with commas.
            Some(Value::String(prev)) => {
                prev.push(',');
                prev.push_str(&v);
            }
            _ => {
                headers.insert(k.as_str().to_owned(), Value::String(v));
            }
        }
    }
    let content_type = parts
        .headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let (body, b64) = if bytes.is_empty() {
        (Value::Null, false)
    } else if text_like(content_type) && std::str::from_utf8(&bytes).is_ok() {
        (
            Value::String(String::from_utf8_lossy(&bytes).into_owned()),
            false,
        )
    } else {
        (
            Value::String(base64::engine::general_purpose::STANDARD.encode(&bytes)),
            true,
        )
    };
    let path = parts.uri.path().to_owned();
    let query = parts.uri.query().unwrap_or("").to_owned();
    let mut ev = json!({
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": query,
        "headers": headers,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "local",
            "domainName": "localhost",
            "domainPrefix": "local",
            "http": {
                "method": parts.method.as_str(),
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": peer,
                "userAgent": parts.headers.get(axum::http::header::USER_AGENT)
                    .and_then(|v| v.to_str().ok()).unwrap_or(""),
            },
            "requestId": format!("local-{n}"),
            "routeKey": "$default",
            "stage": "$default",
            "time": "07/Dec/2026:00:00:00 +0000",
            "timeEpoch": 0,
        },
        "isBase64Encoded": b64,
    });
    if let Some(o) = ev.as_object_mut() {
        if !cookies.is_empty() {
            o.insert("cookies".into(), Value::Array(cookies));
        }
        if !body.is_null() {
            o.insert("body".into(), body);
        }
    }
    Ok(ev)
}

/// The response API Gateway makes of the function's answer.
pub fn response(answer: &Value) -> Result<Response<Body>, String> {
    let status = answer["statusCode"]
        .as_u64()
        .and_then(|s| u16::try_from(s).ok())
        .and_then(|s| StatusCode::from_u16(s).ok())
        .ok_or("the answer has no statusCode")?;
    let mut out = Response::builder().status(status);
    if let Some(h) = answer["headers"].as_object() {
        for (k, v) in h {
            if let (Ok(k), Some(Ok(v))) = (
                HeaderName::try_from(k.as_str()),
                v.as_str().map(HeaderValue::from_str),
            ) {
                out = out.header(k, v);
            }
        }
    }
    if let Some(c) = answer["cookies"].as_array() {
        for v in c.iter().filter_map(Value::as_str) {
            if let Ok(v) = HeaderValue::from_str(v) {
                out = out.header(axum::http::header::SET_COOKIE, v);
            }
        }
    }
    let body = match answer["body"].as_str() {
        None => Vec::new(),
        Some(b) if answer["isBase64Encoded"].as_bool() == Some(true) => {
            base64::engine::general_purpose::STANDARD
                .decode(b)
                .map_err(|e| format!("the answer's base64 body: {e}"))?
        }
        Some(b) => b.as_bytes().to_vec(),
    };
    out.body(Body::from(body)).map_err(|e| e.to_string())
}

async fn invoke(f: &Function, req: axum::extract::Request, n: u64) -> Response<Body> {
    let bad = |status: StatusCode, msg: String| {
        let mut r = Response::new(Body::from(msg));
        *r.status_mut() = status;
        r
    };
    let ev = match event(req, n).await {
        Ok(ev) => ev,
        Err(e) => return bad(StatusCode::PAYLOAD_TOO_LARGE, e),
    };
    let mut ctx = Context::default();
    ctx.request_id = format!("local-{n}");
    ctx.invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:jit-access".into();
    match f.handle(LambdaEvent::new(ev, ctx)).await {
        Ok(answer) => response(&answer).unwrap_or_else(|e| bad(StatusCode::BAD_GATEWAY, e)),
        // Lambda answers a function error with 502 through API Gateway.
        Err(e) => bad(StatusCode::BAD_GATEWAY, e.to_string()),
    }
}
