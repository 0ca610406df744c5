//! What the bridge answers, as types: to Mattermost (slash command, button and dialog replies,
//! the signed context of a button, dialog elements) and to whoever calls its endpoints by hand
//! (the API's [`ErrorBody`]). Mattermost reads `text`, `ephemeral_text`, `update`, `error` and
//! `errors`; `code` is ours, stable (one [`ErrorCode`] enum with the backend), for logs, tests
//! and scripts.

use crate::client::Attachment;
pub use jit_proto::wire::ErrorBody;
use jit_proto::wire::ErrorCode;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The answer to a slash command: an ephemeral message to the user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlashReply {
    /// Always `ephemeral`: only the user sees it.
    pub response_type: String,
    /// The message.
    pub text: String,
    /// Why it was refused, if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<ErrorCode>,
}

impl SlashReply {
    /// An ephemeral message.
    pub fn text(text: impl Into<String>) -> Self {
        Self {
            response_type: "ephemeral".into(),
            text: text.into(),
            code: None,
        }
    }

    /// An ephemeral refusal with its code.
    pub fn refusal(code: ErrorCode, text: impl Into<String>) -> Self {
        Self {
            code: Some(code),
            ..Self::text(text)
        }
    }
}

/// The new props of the clicked post.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PostUpdate {
    /// The props.
    pub props: PostProps,
}

/// A post's props: its attachments (the card).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PostProps {
    /// The card.
    pub attachments: Vec<Attachment>,
}

/// The answer to a button click.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ActionReply {
    /// A message only the clicking user sees.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ephemeral_text: Option<String>,
    /// The card, redrawn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update: Option<PostUpdate>,
    /// Why it was refused, if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<ErrorCode>,
}

impl ActionReply {
    /// A message to the clicking user.
    pub fn say(text: impl Into<String>) -> Self {
        Self {
            ephemeral_text: Some(text.into()),
            ..Self::default()
        }
    }

    /// A refusal with its code.
    pub fn refusal(code: ErrorCode, text: impl Into<String>) -> Self {
        Self {
            code: Some(code),
            ..Self::say(text)
        }
    }

    /// The card redrawn in place.
    pub fn redraw(card: Attachment) -> Self {
        Self {
            update: Some(PostUpdate {
                props: PostProps {
                    attachments: vec![card],
                },
            }),
            ..Self::default()
        }
    }
}

/// The answer to a dialog submission: nothing (the dialog closes), a general error, or errors
/// per field (the dialog stays open with them).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DialogReply {
    /// A general error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Errors by element name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub errors: BTreeMap<String, String>,
    /// Why it was refused, if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<ErrorCode>,
}

impl DialogReply {
    /// A general error.
    pub fn error(text: impl Into<String>) -> Self {
        Self {
            error: Some(text.into()),
            ..Self::default()
        }
    }

    /// A general error with its code.
    pub fn refusal(code: ErrorCode, text: impl Into<String>) -> Self {
        Self {
            code: Some(code),
            ..Self::error(text)
        }
    }

    /// An error on one element.
    pub fn field(name: &str, text: impl Into<String>) -> Self {
        Self {
            errors: BTreeMap::from([(name.to_owned(), text.into())]),
            ..Self::default()
        }
    }
}

/// The signed context of an Approve or Deny button, echoed by Mattermost on a click.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionContext {
    /// `approve` or `deny`.
    #[serde(default)]
    pub action: String,
    /// The request.
    #[serde(default)]
    pub request_id: String,
    /// The bridge's token over action and request id.
    #[serde(default)]
    pub token: String,
}

/// One option of a select element.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SelectOption {
    /// Shown.
    pub text: String,
    /// Submitted.
    pub value: String,
}

/// A dialog element.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DialogElement {
    /// Label.
    pub display_name: String,
    /// Name in the submission.
    pub name: String,
    /// `text`, `textarea`, `select`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `number` for a number field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subtype: Option<String>,
    /// May be left empty.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub optional: bool,
    /// Longest input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_length: Option<u32>,
    /// Greyed hint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placeholder: Option<String>,
    /// Initial value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    /// Help under the field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub help_text: Option<String>,
    /// A select's options.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<SelectOption>,
}
