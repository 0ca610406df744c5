//! A signed client of the backend API. Every call is signed with the newest signing key of the
//! bridge-to-backend ring (v2 with audience `backend` by default; v1 for the existing backend).
//!
//! One typed method per route ([`Client::create_request`], [`Client::accounts`], …), taking
//! and returning the wire types of `jit_proto::wire`; the bridge and the CLI use only these.
//! [`Client::send`], [`Client::get`] and [`Client::post`] send raw JSON, for tests that probe
//! the wire with bodies the types cannot express.

use jit_keys::RefreshingRing;
use jit_proto::Clock;
use jit_proto::keyring::{KeyEntry, KeyRing};
use jit_proto::sign::{Audience, RequestParts, SignInput, SignatureVersion, new_nonce, sign};
use jit_proto::wire::{
    AccountConfig, ApproveBody, ApproversBody, AuditVerified, BindBody, CallbackList,
    CreateRequestBody, DecisionBody, ErrorBody, ErrorCode, ExtendBody, KeyUsageList,
    KeyUsageRecorded, KeyUsageReport, OverdueList, PolicyBody, RequestList, RequestView,
    ResendAnswer, SetPostBody, UnbindBody,
};
use reqwest::Method;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::sync::Arc;

/// Why a call could not be made (an HTTP error status is not an error here: it is returned).
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No key can sign now.
    #[error("no signing key: the key ring is empty or every key is verify-only or not yet active")]
    NoSigningKey,
    /// The URL does not parse.
    #[error("invalid URL: {0}")]
    Url(String),
    /// The transport failed.
    #[error("HTTP: {}", jit_http::outbound::describe(.0))]
    Http(#[from] reqwest::Error),
    /// The OS random generator failed.
    #[error("random generator: {0}")]
    Random(String),
    /// A success answer that is not the route's type (a backend of another version?).
    #[error("the backend's answer does not decode: {0}")]
    Decode(String),
}

/// A typed answer: the route's type on 2xx, the error body otherwise.
#[derive(Debug, Clone)]
pub struct Reply<T> {
    /// HTTP status.
    pub status: u16,
    /// Key id that signed the call.
    pub key_id: String,
    /// The answer.
    pub outcome: Result<T, ErrorBody>,
}

impl<T> Reply<T> {
    /// True for 2xx.
    pub fn is_success(&self) -> bool {
        self.outcome.is_ok()
    }

    /// The error code of a refusal.
    pub fn code(&self) -> Option<ErrorCode> {
        self.outcome.as_ref().err().map(|e| e.code)
    }

    /// The refusal's message (what a person is shown).
    pub fn message(&self) -> Option<&str> {
        self.outcome.as_ref().err().map(|e| e.message.as_str())
    }
}

/// Filters of `GET /requests`; `None` leaves a filter out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestQuery {
    /// One request by id or unique prefix.
    pub request_id: Option<String>,
    /// Channel.
    pub channel_id: Option<String>,
    /// Account.
    pub account_id: Option<String>,
    /// Requester's email.
    pub requester_email: Option<String>,
    /// Requester's user id.
    pub requester_mm_user_id: Option<String>,
    /// Statuses, comma-separated.
    pub status: Option<String>,
    /// From this date (`YYYY-MM-DD` or RFC 3339).
    pub start_date: Option<String>,
    /// Until this date.
    pub end_date: Option<String>,
    /// Page size.
    pub limit: Option<u32>,
    /// The previous page's `next_token`.
    pub next_token: Option<String>,
}

impl RequestQuery {
    fn to_query(&self) -> String {
        let limit = self.limit.map(|l| l.to_string());
        query(&[
            ("request_id", self.request_id.as_deref()),
            ("channel_id", self.channel_id.as_deref()),
            ("account_id", self.account_id.as_deref()),
            ("requester_email", self.requester_email.as_deref()),
            ("requester_mm_user_id", self.requester_mm_user_id.as_deref()),
            ("status", self.status.as_deref()),
            ("start_date", self.start_date.as_deref()),
            ("end_date", self.end_date.as_deref()),
            ("limit", limit.as_deref()),
            ("next_token", self.next_token.as_deref()),
        ])
    }
}

/// `?a=1&b=2` of the pairs that have a value, percent-encoded (empty when none has).
pub fn query(pairs: &[(&str, Option<&str>)]) -> String {
    let parts: Vec<String> = pairs
        .iter()
        .filter_map(|(k, v)| v.map(|v| format!("{k}={}", enc(v))))
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}

/// One path segment or query value, percent-encoded.
pub fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// Where signing keys come from.
#[derive(Debug, Clone)]
pub enum Keys {
    /// A ring that reloads itself.
    Refreshing(Arc<RefreshingRing>),
    /// A fixed ring (the CLI's `--keys` file read once).
    Fixed(Arc<KeyRing>),
}

impl Keys {
    fn signing_key(&self, clock: &dyn Clock) -> Option<Arc<KeyEntry>> {
        match self {
            Self::Refreshing(r) => r.signing_key(),
            Self::Fixed(r) => r.signing_key(clock.now()).cloned(),
        }
    }
}

/// An answer: status and JSON body (`Value::Null` when the body is not JSON).
#[derive(Debug, Clone)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// Parsed body.
    pub body: Value,
    /// Key id that signed the call.
    pub key_id: String,
}

impl Answer {
    /// True for 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The `code` of an error answer.
    pub fn code(&self) -> Option<&str> {
        self.body.get("code").and_then(Value::as_str)
    }
}

/// A text answer with its paging token.
#[derive(Debug, Clone)]
pub struct TextAnswer {
    /// HTTP status.
    pub status: u16,
    /// The body.
    pub text: String,
    /// The next page's token, if any.
    pub next_token: Option<String>,
}

/// The client.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: reqwest::Url,
    keys: Keys,
    clock: Arc<dyn Clock>,
    version: SignatureVersion,
    audience: Audience,
}

impl Client {
    /// A client of the API at `base_url` (v2, audience `backend`, 10 s timeout). It never
    /// connects to a link-local or cloud metadata address (`jit_http::outbound`).
    pub fn new(base_url: &str, keys: Keys, clock: Arc<dyn Clock>) -> Result<Self, ClientError> {
        let base = reqwest::Url::parse(base_url).map_err(|e| ClientError::Url(e.to_string()))?;
        let http = jit_http::outbound::client(false)?;
        Ok(Self {
            http,
            base,
            keys,
            clock,
            version: SignatureVersion::V2,
            audience: Audience::Backend,
        })
    }

    /// Signs with `version` (v1 to talk to the existing backend).
    pub fn with_version(mut self, version: SignatureVersion) -> Self {
        self.version = version;
        self
    }

    /// Signs for `audience`.
    pub fn with_audience(mut self, audience: Audience) -> Self {
        self.audience = audience;
        self
    }

    /// A request with its X-JIT headers over exactly what goes on the wire (the URL after the
    /// parser's normalisation, and `body`); returns it with the signing key's id.
    fn signed(
        &self,
        method: Method,
        path_and_query: &str,
        body: &[u8],
    ) -> Result<(reqwest::RequestBuilder, String), ClientError> {
        let url = self
            .base
            .join(path_and_query)
            .map_err(|e| ClientError::Url(e.to_string()))?;
        let pq = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_owned(),
        };
        let key = self
            .keys
            .signing_key(self.clock.as_ref())
            .ok_or(ClientError::NoSigningKey)?;
        let nonce = new_nonce().map_err(|e| ClientError::Random(e.to_string()))?;
        let input = SignInput {
            version: self.version,
            audience: self.audience,
            request: RequestParts {
                method: method.as_str(),
                path_and_query: &pq,
                body,
            },
            timestamp: self.clock.unix(),
            nonce: &nonce,
        };
        let mut rb = self.http.request(method.clone(), url);
        for (k, v) in sign(&key, &input) {
            rb = rb.header(k, v);
        }
        Ok((rb, key.id().as_str().to_owned()))
    }

    /// Sends a signed request. `path_and_query` is relative to the base URL's root.
    pub async fn send(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<&Value>,
        idempotency_key: Option<&str>,
    ) -> Result<Answer, ClientError> {
        let bytes = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        let (mut rb, key_id) = self.signed(method, path_and_query, &bytes)?;
        if body.is_some() {
            rb = rb
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(bytes);
        }
        if let Some(k) = idempotency_key {
            rb = rb.header("Idempotency-Key", k);
        }
        let resp = rb.send().await?;
        let status = resp.status().as_u16();
        let text = resp.bytes().await?;
        let body = serde_json::from_slice(&text).unwrap_or(Value::Null);
        Ok(Answer {
            status,
            body,
            key_id,
        })
    }

    /// Signed GET of a text answer (CSV, JSON lines), with the `X-Next-Token` header.
    pub async fn get_text(&self, path_and_query: &str) -> Result<TextAnswer, ClientError> {
        let (rb, _) = self.signed(Method::GET, path_and_query, b"")?;
        let resp = rb.send().await?;
        let status = resp.status().as_u16();
        let next_token = resp
            .headers()
            .get("x-next-token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        Ok(TextAnswer {
            status,
            text: resp.text().await?,
            next_token,
        })
    }

    /// Signed GET.
    pub async fn get(&self, path_and_query: &str) -> Result<Answer, ClientError> {
        self.send(Method::GET, path_and_query, None, None).await
    }

    /// Signed POST of a JSON body.
    pub async fn post(&self, path: &str, body: &Value) -> Result<Answer, ClientError> {
        self.send(Method::POST, path, Some(body), None).await
    }

    /// A typed call: `body` (if any) as JSON, the answer decoded as `T` on 2xx and as the
    /// API's error body otherwise.
    pub async fn call<T: DeserializeOwned, B: Serialize + ?Sized>(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<&B>,
        idempotency_key: Option<&str>,
    ) -> Result<Reply<T>, ClientError> {
        let bytes = match body {
            Some(b) => serde_json::to_vec(b).map_err(|e| ClientError::Decode(e.to_string()))?,
            None => Vec::new(),
        };
        let (mut rb, key_id) = self.signed(method, path_and_query, &bytes)?;
        if body.is_some() {
            rb = rb
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(bytes);
        }
        if let Some(k) = idempotency_key {
            rb = rb.header("Idempotency-Key", k);
        }
        let resp = rb.send().await?;
        let status = resp.status().as_u16();
        let text = resp.bytes().await?;
        let outcome = if (200..300).contains(&status) {
            Ok(serde_json::from_slice(&text).map_err(|e| ClientError::Decode(e.to_string()))?)
        } else {
            Err(
                serde_json::from_slice::<ErrorBody>(&text).unwrap_or_else(|_| ErrorBody {
                    code: ErrorCode::UnknownCode,
                    message: format!(
                        "HTTP {status}: {}",
                        String::from_utf8_lossy(text.get(..200).unwrap_or(&text))
                    ),
                }),
            )
        };
        Ok(Reply {
            status,
            key_id,
            outcome,
        })
    }

    async fn get_typed<T: DeserializeOwned>(&self, pq: &str) -> Result<Reply<T>, ClientError> {
        self.call::<T, ()>(Method::GET, pq, None, None).await
    }

    async fn post_typed<T: DeserializeOwned, B: Serialize>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<Reply<T>, ClientError> {
        self.call(Method::POST, path, Some(body), None).await
    }

    /// `POST /requests` (`idempotency_key`: the same key and body make one request).
    pub async fn create_request(
        &self,
        body: &CreateRequestBody,
        idempotency_key: Option<&str>,
    ) -> Result<Reply<RequestView>, ClientError> {
        self.call(Method::POST, "/requests", Some(body), idempotency_key)
            .await
    }

    /// `GET /requests/{id}` (an id or a unique prefix).
    pub async fn get_request(&self, id: &str) -> Result<Reply<RequestView>, ClientError> {
        self.get_typed(&format!("/requests/{}", enc(id))).await
    }

    /// `GET /requests`.
    pub async fn list_requests(&self, q: &RequestQuery) -> Result<Reply<RequestList>, ClientError> {
        self.get_typed(&format!("/requests{}", q.to_query())).await
    }

    /// `POST /requests/{id}/approve`.
    pub async fn approve(
        &self,
        id: &str,
        body: &ApproveBody,
    ) -> Result<Reply<RequestView>, ClientError> {
        self.post_typed(&format!("/requests/{}/approve", enc(id)), body)
            .await
    }

    /// `POST /requests/{id}/deny`.
    pub async fn deny(
        &self,
        id: &str,
        body: &DecisionBody,
    ) -> Result<Reply<RequestView>, ClientError> {
        self.post_typed(&format!("/requests/{}/deny", enc(id)), body)
            .await
    }

    /// `POST /requests/{id}/revoke`.
    pub async fn revoke(
        &self,
        id: &str,
        body: &DecisionBody,
    ) -> Result<Reply<RequestView>, ClientError> {
        self.post_typed(&format!("/requests/{}/revoke", enc(id)), body)
            .await
    }

    /// `POST /requests/{id}/cancel`.
    pub async fn cancel(
        &self,
        id: &str,
        body: &DecisionBody,
    ) -> Result<Reply<RequestView>, ClientError> {
        self.post_typed(&format!("/requests/{}/cancel", enc(id)), body)
            .await
    }

    /// `POST /requests/{id}/review`.
    pub async fn review(
        &self,
        id: &str,
        body: &DecisionBody,
    ) -> Result<Reply<RequestView>, ClientError> {
        self.post_typed(&format!("/requests/{}/review", enc(id)), body)
            .await
    }

    /// `POST /requests/{id}/extend`.
    pub async fn extend(
        &self,
        id: &str,
        body: &ExtendBody,
    ) -> Result<Reply<RequestView>, ClientError> {
        self.post_typed(&format!("/requests/{}/extend", enc(id)), body)
            .await
    }

    /// `POST /requests/{id}/post`.
    pub async fn set_post(
        &self,
        id: &str,
        body: &SetPostBody,
    ) -> Result<Reply<RequestView>, ClientError> {
        self.post_typed(&format!("/requests/{}/post", enc(id)), body)
            .await
    }

    /// `GET /grants/overdue`.
    pub async fn overdue(&self) -> Result<Reply<OverdueList>, ClientError> {
        self.get_typed("/grants/overdue").await
    }

    /// `GET /callbacks`.
    pub async fn callbacks(
        &self,
        status: Option<&str>,
        limit: Option<u32>,
    ) -> Result<Reply<CallbackList>, ClientError> {
        let limit = limit.map(|l| l.to_string());
        self.get_typed(&format!(
            "/callbacks{}",
            query(&[("status", status), ("limit", limit.as_deref())])
        ))
        .await
    }

    /// `POST /callbacks/{event_id}/resend`.
    pub async fn resend_callback(
        &self,
        event_id: &str,
    ) -> Result<Reply<ResendAnswer>, ClientError> {
        self.call::<ResendAnswer, ()>(
            Method::POST,
            &format!("/callbacks/{}/resend", enc(event_id)),
            None,
            None,
        )
        .await
    }

    /// `POST /config/bind`.
    pub async fn bind(&self, body: &BindBody) -> Result<Reply<AccountConfig>, ClientError> {
        self.post_typed("/config/bind", body).await
    }

    /// `POST /config/unbind`.
    pub async fn unbind(
        &self,
        body: &UnbindBody,
    ) -> Result<Reply<Vec<AccountConfig>>, ClientError> {
        self.post_typed("/config/unbind", body).await
    }

    /// `POST /config/approvers`.
    pub async fn set_approvers(
        &self,
        body: &ApproversBody,
    ) -> Result<Reply<Vec<AccountConfig>>, ClientError> {
        self.post_typed("/config/approvers", body).await
    }

    /// `POST /config/policy`.
    pub async fn set_policy(
        &self,
        body: &PolicyBody,
    ) -> Result<Reply<Vec<AccountConfig>>, ClientError> {
        self.post_typed("/config/policy", body).await
    }

    /// `GET /config/accounts?channel_id=C`.
    pub async fn accounts(
        &self,
        channel_id: &str,
    ) -> Result<Reply<Vec<AccountConfig>>, ClientError> {
        self.get_typed(&format!(
            "/config/accounts{}",
            query(&[("channel_id", Some(channel_id))])
        ))
        .await
    }

    /// `GET /audit/verify`.
    pub async fn verify_audit(&self) -> Result<Reply<AuditVerified>, ClientError> {
        self.get_typed("/audit/verify").await
    }

    /// `GET /admin/keys/usage`.
    pub async fn key_usage(&self) -> Result<Reply<KeyUsageList>, ClientError> {
        self.get_typed("/admin/keys/usage").await
    }

    /// `POST /admin/keys/callback-signing`.
    pub async fn switch_callback_key(
        &self,
        body: &jit_proto::wire::CallbackKeySwitch,
    ) -> Result<Reply<jit_proto::wire::CallbackKeySwitched>, ClientError> {
        self.post_typed("/admin/keys/callback-signing", body).await
    }

    /// `POST /admin/keys/usage`.
    pub async fn report_key_usage(
        &self,
        body: &KeyUsageReport,
    ) -> Result<Reply<KeyUsageRecorded>, ClientError> {
        self.post_typed("/admin/keys/usage", body).await
    }
}
