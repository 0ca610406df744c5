//! A signed client of the backend API. Every call is signed with the newest signing key of the
//! bridge-to-backend ring (v2 with audience `backend` by default; v1 for the existing backend).

use jit_keys::RefreshingRing;
use jit_proto::Clock;
use jit_proto::keyring::{KeyEntry, KeyRing};
use jit_proto::sign::{Audience, RequestParts, SignInput, SignatureVersion, new_nonce, sign};
use reqwest::Method;
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
    #[error("HTTP: {0}")]
    Http(#[from] reqwest::Error),
    /// The OS random generator failed.
    #[error("random generator: {0}")]
    Random(String),
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
}
