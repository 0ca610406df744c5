//! One error style for every command:
//!
//! ```text
//! error[CODE]: message
//! hint: what to do about it
//! ```
//!
//! `CODE` is stable (scripts may match on it): an API refusal keeps the API's own code
//! (`not_an_approver`), local failures get one of the codes below. The message is each cause
//! once, in order (an error that quotes its cause is not followed by the cause again), and
//! never raw JSON: an API error answer is shown as its code and message.

use jit_proto::wire::{ErrorBody, ErrorCode};
use std::fmt;

/// A failure as the user is shown it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CliError {
    /// Stable code (`snake_case`).
    pub code: String,
    /// What went wrong.
    pub message: String,
    /// What to do about it, when something helps.
    pub hint: Option<String>,
    /// The process exit status (1 unless a command documents another).
    pub exit: u8,
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CliError {}

impl CliError {
    /// A failure with `code` and `message`, exit status 1.
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        Self {
            code: code.to_owned(),
            message: message.into(),
            hint: None,
            exit: 1,
        }
    }

    /// With a hint.
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// With another exit status.
    pub fn exit(mut self, exit: u8) -> Self {
        self.exit = exit;
        self
    }

    /// The message prefixed with what was being done (`GET /admin/keys/usage: …`).
    pub fn within(mut self, doing: &str) -> Self {
        self.message = format!("{doing}: {}", self.message);
        self
    }

    /// An API refusal: its code and message (never the JSON it came as), and a hint for the
    /// codes where the fix is on the caller's side.
    pub fn refused(body: &ErrorBody) -> Self {
        let hint = api_hint(body.code);
        Self {
            code: body.code.as_str().to_owned(),
            message: body.message.clone(),
            hint: hint.map(str::to_owned),
            exit: 1,
        }
    }

    /// Any failure of a command: a [`CliError`] in the chain keeps its code and hint; other
    /// errors get a code from their type.
    pub fn from_anyhow(e: &anyhow::Error) -> Self {
        let message = chain_text(e);
        if let Some(c) = e.chain().find_map(|c| c.downcast_ref::<Self>()) {
            return Self {
                message,
                ..c.clone()
            };
        }
        let (code, hint) = classify(e);
        Self {
            code: code.to_owned(),
            message,
            hint,
            exit: 1,
        }
    }

    /// The text printed on stderr.
    pub fn render(&self) -> String {
        let mut out = format!("error[{}]: {}", self.code, self.message);
        if let Some(h) = &self.hint {
            out.push_str("\nhint: ");
            out.push_str(h);
        }
        out
    }
}

/// Prints `e` on stderr in the one style and returns its exit status.
pub fn print(e: &CliError) -> std::process::ExitCode {
    eprintln!("{}", e.render());
    std::process::ExitCode::from(e.exit)
}

/// A command line clap refused, in the same style (`error[usage]: …`, the tip as the hint);
/// help and version go out as clap prints them.
pub fn usage(e: &clap::Error) -> std::process::ExitCode {
    use clap::error::ErrorKind;
    let code = u8::try_from(e.exit_code()).unwrap_or(2);
    if !e.use_stderr() || e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
        let _ = e.print();
        return std::process::ExitCode::from(code);
    }
    let text = e.render().to_string();
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let mut message = lines
        .next()
        .map(|l| l.trim_start_matches("error:").trim().to_owned())
        .unwrap_or_default();
    let mut tips = Vec::new();
    let mut usage = None;
    // What a message ending in ':' lists (the missing arguments) follows on its own lines.
    let mut listed = Vec::new();
    for l in lines {
        if let Some(t) = l.strip_prefix("tip:") {
            tips.push(t.trim().to_owned());
        } else if l.starts_with("Usage:") {
            usage = Some(l.to_owned());
        } else if message.ends_with(':') && usage.is_none() && tips.is_empty() {
            listed.push(l.to_owned());
        }
    }
    if !listed.is_empty() {
        message = format!("{} {}", message, listed.join(", "));
    }
    let hint = if tips.is_empty() {
        usage.map(|u| format!("{u} (more with --help)"))
    } else {
        Some(tips.join("; "))
    };
    let mut err = CliError::new("usage", message).exit(code);
    err.hint = hint;
    print(&err)
}

/// Every cause once: a cause already quoted by the text so far is left out.
fn chain_text(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for c in e.chain() {
        let text = unjson(&c.to_string());
        if text.is_empty() || out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

/// A text that ends with an API error answer (`… {"code":"x","message":"y"}`) with that
/// answer shown as `x: y`.
fn unjson(text: &str) -> String {
    let Some(at) = text.find('{') else {
        return text.to_owned();
    };
    let (before, json) = text.split_at(at);
    match serde_json::from_str::<ErrorBody>(json.trim_end()) {
        Ok(b) => format!("{before}{}: {}", b.code.as_str(), b.message),
        Err(_) => text.to_owned(),
    }
}

/// A code (and maybe a hint) from the first error in the chain whose type says what failed.
fn classify(e: &anyhow::Error) -> (&'static str, Option<String>) {
    for c in e.chain() {
        if let Some(l) = c.downcast_ref::<jit_keys::LoadError>() {
            return match l {
                jit_keys::LoadError::Io { error, .. }
                    if error.kind() == std::io::ErrorKind::NotFound =>
                {
                    (
                        "key_file_missing",
                        Some(
                            "check the path (a relative one, like the default \
                             jit-data/keys/backend.json, is read from the current directory: run \
                             where `jit server` keeps jit-data/), or pass the ring with --keys \
                             file:/absolute/path (JIT_CLIENT_KEYS)"
                                .into(),
                        ),
                    )
                }
                jit_keys::LoadError::Io { .. } => ("key_file_unreadable", None),
                jit_keys::LoadError::Env(_) => ("key_env_unset", None),
                jit_keys::LoadError::Aws { .. } => ("key_secret_unreadable", None),
                jit_keys::LoadError::Parse { .. } | jit_keys::LoadError::SharedSecret(_) => {
                    ("key_ring_invalid", None)
                }
            };
        }
        if c.downcast_ref::<jit_server::config::ConfigError>()
            .is_some()
        {
            return (
                "config_invalid",
                Some("`jit doctor --config FILE` checks a whole configuration".into()),
            );
        }
        if let Some(s) = c.downcast_ref::<jit_store::StoreError>() {
            return match s {
                jit_store::StoreError::InvalidUrl(_) => ("database_url_invalid", None),
                _ => ("database_error", None),
            };
        }
        if let Some(ce) = c.downcast_ref::<jit_client::ClientError>() {
            return match ce {
                jit_client::ClientError::Http(_) => (
                    "api_unreachable",
                    Some(
                        "is `jit server` running there? give its URL with --api (JIT_API_URL)"
                            .into(),
                    ),
                ),
                jit_client::ClientError::NoSigningKey => ("no_signing_key", None),
                jit_client::ClientError::Url(_) => ("invalid_url", None),
                _ => ("api_error", None),
            };
        }
        if c.downcast_ref::<jit_mattermost::client::MmError>()
            .is_some()
        {
            return ("mattermost_error", None);
        }
        if c.downcast_ref::<jit_proto::KeyRingError>().is_some() {
            return ("key_ring_invalid", None);
        }
        if c.downcast_ref::<std::io::Error>().is_some() {
            return ("io_error", None);
        }
    }
    ("failed", None)
}

/// What the caller can change for a refusal, where it is the caller's to change.
fn api_hint(code: ErrorCode) -> Option<&'static str> {
    use ErrorCode as C;
    Some(match code {
        C::UnknownKey | C::BadSignature | C::NoKeys => {
            "sign with a key of the server's backend ring: --keys (JIT_CLIENT_KEYS)"
        }
        C::StaleTimestamp => {
            "this machine's clock differs from the server's; `jit doctor` checks it"
        }
        C::MissingActor => "say who acts: --as <mattermost-user-id> (JIT_ACTOR)",
        C::AdminRequired => {
            "act as an admin (the server's `admins`, or a Mattermost system admin) with --as"
        }
        C::NotAnApprover => {
            "act as one of the channel's approvers with --as (`jit config show CHANNEL` lists them)"
        }
        C::SelfReviewForbidden => "another approver of the channel must review it",
        C::ChannelNotBound | C::AccountNotBound => "see `jit config show CHANNEL`",
        C::AmbiguousRequestId => "give more characters of the request id",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cause_is_printed_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file");
        let quoted = anyhow::Error::new(io).context("reading x.toml: No such file");
        let e = CliError::from_anyhow(&quoted.context("loading the configuration"));
        assert_eq!(
            e.message,
            "loading the configuration: reading x.toml: No such file"
        );
        assert_eq!(e.code, "io_error");
    }

    #[test]
    fn api_answers_are_code_and_message_never_json() {
        let e = anyhow::Error::msg(
            r#"GET /audit: 403 {"code":"admin_required","message":"only admins may read"}"#,
        );
        let e = CliError::from_anyhow(&e);
        assert_eq!(
            e.message,
            "GET /audit: 403 admin_required: only admins may read"
        );
        let r = CliError::refused(&ErrorBody {
            code: ErrorCode::NotAnApprover,
            message: "only approvers".into(),
        });
        assert_eq!(
            r.render(),
            "error[not_an_approver]: only approvers\nhint: act as one of the channel's approvers with --as (`jit config show CHANNEL` lists them)"
        );
    }

    #[test]
    fn a_cli_error_in_the_chain_keeps_its_code_and_hint() {
        let inner = CliError::new("actor_missing", "say who acts").hint("--as");
        let e = anyhow::Error::new(inner).context("approving");
        let e = CliError::from_anyhow(&e);
        assert_eq!(
            (e.code.as_str(), e.hint.as_deref()),
            ("actor_missing", Some("--as"))
        );
        assert_eq!(e.message, "approving: say who acts");
    }
}
