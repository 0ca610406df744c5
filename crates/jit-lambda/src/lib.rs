//! The backend as one AWS Lambda function (`deploy/aws/template.yaml`).
//!
//! One function answers three kinds of invocation:
//! - **HTTP** (API Gateway HTTP API, payload v2): the same axum router as `jit server`. After a
//!   write is answered, jobs that fell due (a grant right after an approval) run and due
//!   callbacks go out, before the function returns: a frozen function does no work. Reads run
//!   nothing more.
//! - **`{"jit":"tick"}`**, every minute from an EventBridge schedule: what `jit server`'s loops
//!   do (reload the key rings from Secrets Manager, recreate missing jobs, run due jobs, deliver
//!   callbacks, record key use, prune old callback rows), then the metrics as CloudWatch
//!   embedded-metric-format lines. A schedule that never fired costs at most this minute.
//! - **`{"jit":"job","kind":"revoke","request_id":"…"}`**, from the one-time schedule each job
//!   gets ([`Schedules`]): runs what is due, so the access ends at its time, not at the next
//!   tick.
//!
//! Every invocation first reloads a key ring whose last load is older than its refresh interval,
//! as the server's reload loop would have. Everything else is the server's: store (DynamoDB),
//! rings, provider, lifecycle, dispatcher.

mod emf;
pub mod local;
mod schedules;

pub use emf::Emf;
pub use schedules::{Schedules, schedule_name};

use jit_server::serve::Backend;
use lambda_http::lambda_runtime::{Error, LambdaEvent};
use lambda_http::request::LambdaRequest;
use lambda_http::tower::ServiceExt as _;
use lambda_http::{Body, RequestExt as _};
use serde::Deserialize;
use serde_json::Value;
use std::sync::Arc;

/// An invocation that is not HTTP: the tick, or a job's schedule firing.
#[derive(Debug, Deserialize, PartialEq, Eq)]
#[serde(tag = "jit", rename_all = "snake_case")]
pub enum Internal {
    /// The one-minute schedule.
    Tick,
    /// A job's one-time schedule.
    Job {
        /// `grant`, `revoke` or `timeout`.
        kind: String,
        /// The request.
        request_id: String,
    },
}

/// The function: the backend, built once per execution environment and kept warm.
#[derive(Debug)]
pub struct Function {
    backend: Backend,
    app: axum::Router,
    schedules: Option<Arc<Schedules>>,
    emf: Emf,
    /// Run due jobs and callbacks after each HTTP call (off in tests that step them by hand).
    inline_work: bool,
}

impl Function {
    /// Builds the function around a prepared backend.
    pub fn new(backend: Backend, schedules: Option<Arc<Schedules>>, emf: Emf) -> Self {
        let app = backend.app();
        Self {
            backend,
            app,
            schedules,
            emf,
            inline_work: true,
        }
    }

    /// Answers HTTP calls only, running no jobs or callbacks after them: tests step the
    /// lifecycle by hand, as with `Server::without_workers`.
    pub fn stepped(mut self) -> Self {
        self.inline_work = false;
        self
    }

    /// The backend (tests).
    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    /// Answers one invocation.
    pub async fn handle(&self, ev: LambdaEvent<Value>) -> Result<Value, Error> {
        let (payload, ctx) = ev.into_parts();
        self.backend.refresh_stale_rings().await;
        if let Some(s) = &self.schedules {
            s.set_target(&ctx.invoked_function_arn);
        }
        let out = if payload.get("jit").is_some() {
            let internal: Internal = serde_json::from_value(payload)
                .map_err(|e| Error::from(format!("not an invocation this function knows: {e}")))?;
            self.internal(internal).await
        } else {
            let req: LambdaRequest = serde_json::from_value(payload).map_err(|e| {
                Error::from(format!(
                    "not an API Gateway HTTP API (payload 2.0) event: {e}"
                ))
            })?;
            let mut req: lambda_http::Request = req.into();
            // The caller's address, as API Gateway saw it, for the per-source failure limit.
            if let Some(lambda_http::request::RequestContext::ApiGatewayV2(c)) =
                req.request_context_ref()
                && let Some(ip) = c.http.source_ip.as_deref().and_then(|s| s.parse().ok())
            {
                req.extensions_mut().insert(jit_http::ClientIp(ip));
            }
            let wrote = !matches!(
                *req.method(),
                axum::http::Method::GET | axum::http::Method::HEAD | axum::http::Method::OPTIONS
            );
            let answer = self.http(req.with_lambda_context(ctx)).await?;
            if self.inline_work && wrote {
                self.backend.run_due().await;
            }
            answer
        };
        self.emf.invocation(&self.backend.state);
        Ok(out)
    }

    async fn internal(&self, what: Internal) -> Value {
        match what {
            Internal::Tick => {
                let gauges = self.backend.tick().await;
                self.emf
                    .gauges(gauges.as_ref(), self.backend.state.clock.now_ms());
                serde_json::json!({"ok": true, "store_up": gauges.is_some()})
            }
            Internal::Job { kind, request_id } => {
                tracing::info!(job = %kind, request_id = %request_id, "schedule fired");
                self.backend.run_due().await;
                serde_json::json!({"ok": true})
            }
        }
    }

    async fn http(&self, req: lambda_http::Request) -> Result<Value, Error> {
        let resp = match self.app.clone().oneshot(req).await {
            Ok(r) => r,
            Err(never) => match never {},
        };
        let resp = lambda_http::IntoResponse::into_response(resp).await;
        let (parts, body) = resp.into_parts();
        let mut headers = parts.headers;
        let mut out = lambda_http::aws_lambda_events::apigw::ApiGatewayV2httpResponse::default();
        out.status_code = i64::from(parts.status.as_u16());
        out.cookies = headers
            .get_all(axum::http::header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_owned))
            .collect();
        headers.remove(axum::http::header::SET_COOKIE);
        let (binary, body) = match body {
            Body::Empty => (false, None),
            b @ Body::Text(_) => (false, Some(b)),
            b @ Body::Binary(_) => (true, Some(b)),
            _ => (false, None),
        };
        out.is_base64_encoded = binary;
        out.body = body;
        out.headers = headers;
        Ok(serde_json::to_value(out)?)
    }
}
