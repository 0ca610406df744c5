//! `Idempotency-Key` on POSTs: the first answer is stored with the change it answers (same
//! transaction), and a retry with the same key and body gets that answer again instead of a
//! second change. The same key with a different body is refused (422).

use crate::error::ApiError;
use axum::body::Bytes;
use axum::http::{HeaderMap, Method, Uri};
use jit_proto::wire::ErrorCode;
use jit_store::IdemRecord;
#[allow(unused_imports)]
use jit_store::prelude::*;
use sha2::{Digest, Sha256};

/// The header name.
pub const HEADER: &str = "idempotency-key";

/// What a write needs to be idempotent.
#[derive(Debug, Clone)]
pub struct Idem {
    /// Method and path.
    pub scope: String,
    /// The client's key, if it sent one.
    pub key: Option<String>,
    /// SHA-256 of the body.
    pub body_hash: String,
}

impl Idem {
    /// Reads the header; refuses a malformed key.
    pub fn from_request(
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        body: &Bytes,
    ) -> Result<Self, ApiError> {
        let mut values = headers.get_all(HEADER).iter();
        let key = match (values.next(), values.next()) {
            (None, _) => None,
            (Some(v), None) => {
                let k = v.to_str().unwrap_or_default();
                if k.is_empty() || k.len() > 128 || !k.bytes().all(|b| b.is_ascii_graphic()) {
                    return Err(ApiError::bad(
                        ErrorCode::InvalidIdempotencyKey,
                        "Idempotency-Key must be 1-128 visible ASCII characters",
                    ));
                }
                Some(k.to_owned())
            }
            (Some(_), Some(_)) => {
                return Err(ApiError::bad(
                    ErrorCode::InvalidIdempotencyKey,
                    "send Idempotency-Key once",
                ));
            }
        };
        Ok(Self {
            scope: format!("{} {}", method, uri.path()),
            key,
            body_hash: hex::encode(Sha256::digest(body)),
        })
    }

    /// The record to store with a change, answering `status` with `response`.
    pub fn record(&self, status: u16, response: &serde_json::Value) -> Option<IdemRecord> {
        self.key.as_ref().map(|k| IdemRecord {
            scope: self.scope.clone(),
            key: k.clone(),
            request_hash: self.body_hash.clone(),
            status,
            response: response.to_string(),
        })
    }
}
