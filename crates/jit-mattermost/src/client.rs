//! A small typed client of the Mattermost REST API v4: posts (create, update, patch,
//! ephemeral), dialogs, users, channel members, direct channels, slash commands (list, create,
//! update, new token, execute). Timeouts on every call; 429 and 5xx are retried (three tries)
//! honouring `Retry-After`, except executing a command, which is tried once.

use serde::de::{DeserializeOwned, IgnoredAny};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// A Mattermost API failure.
#[derive(Debug, thiserror::Error)]
pub enum MmError {
    /// Transport failure.
    #[error("Mattermost unreachable: {}", jit_http::outbound::describe(.0))]
    Http(#[from] reqwest::Error),
    /// An id taken from a request (a click's `user_id`, say) is not a Mattermost id, so it is
    /// never put into an API path (`me`, `a/../b`).
    #[error("not a Mattermost id: {0:?}")]
    BadId(String),
    /// An error answer.
    #[error("Mattermost answered {status}: {message}")]
    Status {
        /// HTTP status.
        status: u16,
        /// Its message.
        message: String,
    },
}

/// An id that may go into an API path: Mattermost's ids are 26 lowercase letters and digits;
/// we accept 1 to 64 ASCII letters and digits (test doubles use short ones), and never `me`,
/// which Mattermost reads as "the caller", that is, the bot.
pub fn path_id(id: &str) -> Result<&str, MmError> {
    if (1..=64).contains(&id.len())
        && id.bytes().all(|b| b.is_ascii_alphanumeric())
        && !id.eq_ignore_ascii_case("me")
    {
        Ok(id)
    } else {
        Err(MmError::BadId(id.chars().take(64).collect()))
    }
}

/// A Mattermost user, as far as the bridge needs it.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct User {
    /// Id.
    pub id: String,
    /// `@name`.
    #[serde(default)]
    pub username: String,
    /// Email.
    #[serde(default)]
    pub email: String,
    /// Space-separated roles (`system_user system_admin`).
    #[serde(default)]
    pub roles: String,
}

/// A channel membership.
#[derive(Debug, Clone, Deserialize)]
pub struct ChannelMember {
    /// Space-separated channel roles (`channel_user channel_admin`).
    #[serde(default)]
    pub roles: String,
}

/// A message attachment (the card).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Attachment {
    /// Plain-text summary.
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub fallback: String,
    /// Colour bar.
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub color: String,
    /// Title.
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub title: String,
    /// Title link.
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub title_link: String,
    /// Body text.
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub text: String,
    /// Fields.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub fields: Vec<Field>,
    /// Footer.
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub footer: String,
    /// Buttons.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub actions: Vec<Action>,
}

/// An attachment field.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Field {
    /// Label.
    pub title: String,
    /// Value (Markdown).
    pub value: String,
    /// Half width.
    pub short: bool,
}

/// A button.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Action {
    /// Stable id.
    pub id: String,
    /// Label.
    pub name: String,
    /// `button`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `good`, `danger`, …
    pub style: String,
    /// Where the click goes, with its signed context.
    pub integration: Integration,
}

/// A button's integration.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Integration {
    /// The bridge's action URL.
    pub url: String,
    /// Signed context.
    pub context: crate::replies::ActionContext,
}

/// A dialog.
#[derive(Debug, Clone, Serialize)]
pub struct Dialog {
    /// Echoed on submission.
    pub callback_id: String,
    /// At most 24 characters.
    pub title: String,
    /// Markdown intro.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub introduction_text: String,
    /// At most five elements.
    pub elements: Vec<crate::replies::DialogElement>,
    /// Submit button.
    pub submit_label: String,
    /// Signed state.
    pub state: String,
    /// Whether cancel notifies.
    pub notify_on_cancel: bool,
}

// The bodies the client sends and the answers it reads (Mattermost REST API v4).

#[derive(Serialize)]
struct Props<'a> {
    attachments: &'a [Attachment],
}

#[derive(Serialize)]
struct NewPost<'a> {
    channel_id: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    root_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    props: Option<Props<'a>>,
}

#[derive(Serialize)]
struct PostPatch<'a> {
    message: &'a str,
    props: Props<'a>,
}

#[derive(Serialize)]
struct EphemeralMessage<'a> {
    channel_id: &'a str,
    message: &'a str,
}

#[derive(Serialize)]
struct EphemeralPost<'a> {
    user_id: &'a str,
    post: EphemeralMessage<'a>,
}

#[derive(Serialize)]
struct OpenDialog<'a> {
    trigger_id: &'a str,
    url: &'a str,
    dialog: &'a Dialog,
}

/// What the bridge registers as its slash command, at creation and at every update: a POST to
/// the bridge's command URL, with autocomplete.
const COMMAND_METHOD: &str = "P";
const COMMAND_DISPLAY_NAME: &str = "jit";
const COMMAND_DESCRIPTION: &str = "Just-in-time privileged access";
const COMMAND_AUTOCOMPLETE_DESC: &str = "Just-in-time access";
const COMMAND_AUTOCOMPLETE_HINT: &str = "request | status | help";

/// A slash command's token: Mattermost sends it with every command and the bridge checks it.
/// A secret: `Debug` prints `***`, it is never serialised, and it is wiped when dropped.
#[derive(Clone, Default)]
pub struct CommandToken(zeroize::Zeroizing<String>);

impl CommandToken {
    /// Wraps a token.
    pub fn new(token: String) -> Self {
        Self(zeroize::Zeroizing::new(token))
    }

    /// The token itself, for the tokens file.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// True when Mattermost gave no token.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Constant-time equality (tokens are secrets, whatever compares them).
    pub fn same_as(&self, other: &str) -> bool {
        use subtle::ConstantTimeEq;
        bool::from(self.0.as_bytes().ct_eq(other.as_bytes()))
    }
}

impl std::fmt::Debug for CommandToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CommandToken(***)")
    }
}

impl<'de> Deserialize<'de> for CommandToken {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Option::<String>::deserialize(d).map(|t| Self::new(t.unwrap_or_default()))
    }
}

/// A custom slash command, as the API answers it (the spec's `Command`).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct SlashCommand {
    /// Id.
    #[serde(default)]
    pub id: String,
    /// The token Mattermost sends with the command.
    #[serde(default)]
    pub token: CommandToken,
    /// Its team.
    #[serde(default)]
    pub team_id: String,
    /// The trigger word, without the `/`.
    #[serde(default)]
    pub trigger: String,
    /// `P` (POST) or `G` (GET).
    #[serde(default)]
    pub method: String,
    /// Where Mattermost sends it.
    #[serde(default)]
    pub url: String,
    /// The user who created it.
    #[serde(default)]
    pub creator_id: String,
    /// Username shown on responses (kept as it is on update).
    #[serde(default)]
    pub username: String,
    /// Icon shown on responses (kept as it is on update).
    #[serde(default)]
    pub icon_url: String,
    /// Autocomplete on.
    #[serde(default)]
    pub auto_complete: bool,
    /// Autocomplete description.
    #[serde(default)]
    pub auto_complete_desc: String,
    /// Autocomplete hint.
    #[serde(default)]
    pub auto_complete_hint: String,
    /// Display name.
    #[serde(default)]
    pub display_name: String,
    /// Description.
    #[serde(default)]
    pub description: String,
    /// Deletion time in milliseconds; 0 when not deleted.
    #[serde(default)]
    pub delete_at: i64,
}

impl SlashCommand {
    /// True when the command already is what the bridge would register with this trigger
    /// and URL (so an update would change nothing).
    pub fn is_registered_as(&self, trigger: &str, url: &str) -> bool {
        self.trigger == trigger
            && self.url == url
            && self.method == COMMAND_METHOD
            && self.auto_complete
            && self.auto_complete_desc == COMMAND_AUTOCOMPLETE_DESC
            && self.auto_complete_hint == COMMAND_AUTOCOMPLETE_HINT
            && self.display_name == COMMAND_DISPLAY_NAME
            && self.description == COMMAND_DESCRIPTION
    }
}

/// `PUT /commands/{command_id}`: the whole command (Mattermost replaces every field it takes
/// from the body; `id` and `team_id` must be the command's own). The token is not sent.
#[derive(Serialize)]
struct CommandUpdate<'a> {
    id: &'a str,
    team_id: &'a str,
    trigger: &'a str,
    method: &'a str,
    url: &'a str,
    username: &'a str,
    icon_url: &'a str,
    auto_complete: bool,
    auto_complete_desc: &'a str,
    auto_complete_hint: &'a str,
    display_name: &'a str,
    description: &'a str,
}

#[derive(Deserialize)]
struct RegeneratedToken {
    #[serde(default)]
    token: CommandToken,
}

#[derive(Serialize)]
struct ExecuteCommand<'a> {
    channel_id: &'a str,
    command: &'a str,
}

/// Why Mattermost did not run a command: its HTTP status and its stable error id (for example
/// `api.command.execute_command.failed.app_error` when it could not reach the command's URL).
#[derive(Debug, thiserror::Error)]
#[error("Mattermost answered {status} ({id}): {message}")]
pub struct ExecuteError {
    /// HTTP status (0 when Mattermost itself could not be reached).
    pub status: u16,
    /// Mattermost's error id (`api.command.…`), untranslated.
    pub id: String,
    /// Its message (in the bot's language).
    pub message: String,
}

#[derive(Serialize)]
struct NewCommand<'a> {
    team_id: &'a str,
    method: &'a str,
    trigger: &'a str,
    url: &'a str,
    auto_complete: bool,
    auto_complete_desc: &'a str,
    auto_complete_hint: &'a str,
    display_name: &'a str,
    description: &'a str,
}

/// An answer with the new object's id (a post, a channel).
#[derive(Deserialize)]
struct Created {
    #[serde(default)]
    id: String,
}

/// Mattermost's error body (`message` is what we log; `id` is stable across languages).
#[derive(Deserialize)]
struct MmErrorBody {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

/// The client.
#[derive(Debug, Clone)]
pub struct MmClient {
    http: reqwest::Client,
    base: String,
    token: std::sync::Arc<zeroize::Zeroizing<String>>,
    metrics: std::sync::Arc<MmMetrics>,
}

/// Mattermost API calls by operation (method and the spec's path template) and status (the
/// HTTP status, or `error` when no answer came: refused, timed out), one per attempt.
#[derive(Debug)]
pub struct MmMetrics {
    /// `jit_mattermost_api_requests_total{operation,status}`.
    pub requests: jit_http::metrics::Counter,
    /// `jit_mattermost_api_request_duration_seconds{operation}`.
    pub duration: jit_http::metrics::Histogram,
}

impl Default for MmMetrics {
    fn default() -> Self {
        Self {
            requests: jit_http::metrics::Counter::new(
                "jit_mattermost_api_requests_total",
                "Mattermost API calls by operation and status (`error`: no answer), one per attempt.",
                &["operation", "status"],
            ),
            duration: jit_http::metrics::Histogram::new(
                "jit_mattermost_api_request_duration_seconds",
                "Mattermost API call latency.",
                &["operation"],
                jit_http::metrics::CALL_BUCKETS,
            ),
        }
    }
}

impl MmMetrics {
    /// Prometheus text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        self.requests.render(&mut out);
        self.duration.render(&mut out);
        out
    }
}

impl MmClient {
    /// A client of the server at `base_url` using the bot's access token.
    pub fn new(base_url: &str, bot_token: zeroize::Zeroizing<String>) -> Result<Self, MmError> {
        let http = jit_http::outbound::client(false)?;
        Ok(Self {
            http,
            base: base_url.trim_end_matches('/').to_owned(),
            token: std::sync::Arc::new(bot_token),
            metrics: std::sync::Arc::new(MmMetrics::default()),
        })
    }

    /// The client's call counters, for `/metrics`.
    pub fn metrics(&self) -> &MmMetrics {
        &self.metrics
    }

    /// One API call; `template` (the spec's path, `/posts/{post_id}/patch`) labels the
    /// metrics, `path` is what is sent.
    async fn call<T: DeserializeOwned, B: Serialize + ?Sized>(
        &self,
        method: reqwest::Method,
        template: &'static str,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, MmError> {
        let op = format!("{method} {template}");
        let (status, text) = self.send(method, template, path, body, 3).await?;
        if !(200..300).contains(&status) {
            let message = serde_json::from_str::<MmErrorBody>(&text)
                .ok()
                .and_then(|e| e.message)
                .unwrap_or_default();
            return Err(MmError::Status { status, message });
        }
        let text = if text.trim().is_empty() {
            "null"
        } else {
            &text
        };
        serde_json::from_str(text).map_err(|e| MmError::Status {
            status,
            message: format!("unexpected answer to {op}: {e}"),
        })
    }

    /// Sends a call, up to `tries` times while Mattermost answers 429 or 5xx; returns the last
    /// answer's status and body.
    async fn send<B: Serialize + ?Sized>(
        &self,
        method: reqwest::Method,
        template: &'static str,
        path: &str,
        body: Option<&B>,
        tries: u32,
    ) -> Result<(u16, String), MmError> {
        let url = format!("{}/api/v4{path}", self.base);
        let op = format!("{method} {template}");
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut rb = self
                .http
                .request(method.clone(), &url)
                .bearer_auth(self.token.as_str());
            if let Some(b) = body {
                rb = rb.json(b);
            }
            let start = std::time::Instant::now();
            let sent = rb.send().await;
            let status_label = sent
                .as_ref()
                .map_or_else(|_| "error".to_owned(), |r| r.status().as_u16().to_string());
            self.metrics.requests.inc(&[&op, &status_label]);
            self.metrics
                .duration
                .observe(&[&op], start.elapsed().as_secs_f64());
            let resp = sent?;
            let status = resp.status().as_u16();
            if (status == 429 || status >= 500) && attempt < tries {
                let wait = resp
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok())
                    .map_or(
                        Duration::from_millis(200 * u64::from(attempt)),
                        Duration::from_secs,
                    )
                    .min(Duration::from_secs(10));
                tracing::warn!(
                    status,
                    path,
                    retry_in_ms = wait.as_millis() as u64,
                    "Mattermost asked to retry"
                );
                tokio::time::sleep(wait).await;
                continue;
            }
            return Ok((status, resp.text().await?));
        }
    }

    /// `POST /posts`: returns the new post's id.
    pub async fn create_post(
        &self,
        channel_id: &str,
        message: &str,
        root_id: Option<&str>,
        attachments: &[Attachment],
    ) -> Result<String, MmError> {
        let body = NewPost {
            channel_id,
            message,
            root_id,
            props: (!attachments.is_empty()).then_some(Props { attachments }),
        };
        let created: Created = self
            .call(reqwest::Method::POST, "/posts", "/posts", Some(&body))
            .await?;
        Ok(created.id)
    }

    /// `PUT /posts/{id}/patch`: replaces the card's message and attachments.
    pub async fn patch_post(
        &self,
        post_id: &str,
        message: &str,
        attachments: &[Attachment],
    ) -> Result<(), MmError> {
        let post_id = path_id(post_id)?;
        let body = PostPatch {
            message,
            props: Props { attachments },
        };
        self.call::<IgnoredAny, _>(
            reqwest::Method::PUT,
            "/posts/{post_id}/patch",
            &format!("/posts/{post_id}/patch"),
            Some(&body),
        )
        .await
        .map(|_| ())
    }

    /// `POST /posts/ephemeral`: a message only `user_id` sees.
    pub async fn ephemeral(
        &self,
        user_id: &str,
        channel_id: &str,
        message: &str,
    ) -> Result<(), MmError> {
        let body = EphemeralPost {
            user_id,
            post: EphemeralMessage {
                channel_id,
                message,
            },
        };
        self.call::<IgnoredAny, _>(
            reqwest::Method::POST,
            "/posts/ephemeral",
            "/posts/ephemeral",
            Some(&body),
        )
        .await
        .map(|_| ())
    }

    /// `POST /actions/dialogs/open`.
    pub async fn open_dialog(
        &self,
        trigger_id: &str,
        url: &str,
        dialog: &Dialog,
    ) -> Result<(), MmError> {
        let body = OpenDialog {
            trigger_id,
            url,
            dialog,
        };
        self.call::<IgnoredAny, _>(
            reqwest::Method::POST,
            "/actions/dialogs/open",
            "/actions/dialogs/open",
            Some(&body),
        )
        .await
        .map(|_| ())
    }

    /// `GET /users/{id}`.
    pub async fn user(&self, user_id: &str) -> Result<User, MmError> {
        let user_id = path_id(user_id)?;
        self.call::<User, ()>(
            reqwest::Method::GET,
            "/users/{user_id}",
            &format!("/users/{user_id}"),
            None,
        )
        .await
    }

    /// `GET /users/me`: the bot itself.
    pub async fn me(&self) -> Result<User, MmError> {
        self.call::<User, ()>(reqwest::Method::GET, "/users/{user_id}", "/users/me", None)
            .await
    }

    /// `POST /users/usernames`.
    pub async fn users_by_usernames(&self, names: &[String]) -> Result<Vec<User>, MmError> {
        self.call(
            reqwest::Method::POST,
            "/users/usernames",
            "/users/usernames",
            Some(names),
        )
        .await
    }

    /// `GET /channels/{channel}/members/{user}`.
    pub async fn channel_member(
        &self,
        channel_id: &str,
        user_id: &str,
    ) -> Result<ChannelMember, MmError> {
        let (channel_id, user_id) = (path_id(channel_id)?, path_id(user_id)?);
        self.call::<ChannelMember, ()>(
            reqwest::Method::GET,
            "/channels/{channel_id}/members/{user_id}",
            &format!("/channels/{channel_id}/members/{user_id}"),
            None,
        )
        .await
    }

    /// `POST /channels/direct`: the direct channel between the bot and a user.
    pub async fn direct_channel(&self, bot_id: &str, user_id: &str) -> Result<String, MmError> {
        let created: Created = self
            .call(
                reqwest::Method::POST,
                "/channels/direct",
                "/channels/direct",
                Some(&[bot_id, user_id]),
            )
            .await?;
        Ok(created.id)
    }

    /// `POST /commands`: registers the bridge's slash command in a team; returns it, with
    /// its token. Mattermost refuses a trigger already used in the team (400).
    pub async fn create_command(
        &self,
        team_id: &str,
        trigger: &str,
        url: &str,
    ) -> Result<SlashCommand, MmError> {
        let body = NewCommand {
            team_id,
            method: COMMAND_METHOD,
            trigger,
            url,
            auto_complete: true,
            auto_complete_desc: COMMAND_AUTOCOMPLETE_DESC,
            auto_complete_hint: COMMAND_AUTOCOMPLETE_HINT,
            display_name: COMMAND_DISPLAY_NAME,
            description: COMMAND_DESCRIPTION,
        };
        self.call(reqwest::Method::POST, "/commands", "/commands", Some(&body))
            .await
    }

    /// `GET /commands?team_id=…&custom_only=true`: the team's custom slash commands, with
    /// their tokens (the caller needs `manage_slash_commands`; 501 when custom slash commands
    /// are disabled).
    pub async fn list_commands(&self, team_id: &str) -> Result<Vec<SlashCommand>, MmError> {
        let team_id = path_id(team_id)?;
        self.call::<Vec<SlashCommand>, ()>(
            reqwest::Method::GET,
            "/commands",
            &format!("/commands?team_id={team_id}&custom_only=true"),
            None,
        )
        .await
    }

    /// `PUT /commands/{command_id}`: makes `existing` the bridge's command with this trigger and
    /// URL, keeping its id, team, token, username and icon.
    pub async fn update_command(
        &self,
        existing: &SlashCommand,
        trigger: &str,
        url: &str,
    ) -> Result<SlashCommand, MmError> {
        let id = path_id(&existing.id)?;
        let body = CommandUpdate {
            id,
            team_id: &existing.team_id,
            trigger,
            method: COMMAND_METHOD,
            url,
            username: &existing.username,
            icon_url: &existing.icon_url,
            auto_complete: true,
            auto_complete_desc: COMMAND_AUTOCOMPLETE_DESC,
            auto_complete_hint: COMMAND_AUTOCOMPLETE_HINT,
            display_name: COMMAND_DISPLAY_NAME,
            description: COMMAND_DESCRIPTION,
        };
        self.call(
            reqwest::Method::PUT,
            "/commands/{command_id}",
            &format!("/commands/{id}"),
            Some(&body),
        )
        .await
    }

    /// `PUT /commands/{command_id}/regen_token`: a new token for the command; the old one
    /// stops working at once.
    pub async fn regen_command_token(&self, command_id: &str) -> Result<CommandToken, MmError> {
        let id = path_id(command_id)?;
        let r: RegeneratedToken = self
            .call::<RegeneratedToken, ()>(
                reqwest::Method::PUT,
                "/commands/{command_id}/regen_token",
                &format!("/commands/{id}/regen_token"),
                None,
            )
            .await?;
        Ok(r.token)
    }

    /// `POST /commands/execute`: runs `command` (`/jit help`) as the bot in a channel, so
    /// Mattermost calls the command's URL as it would for a user. Tried once: every try is a
    /// call to the integration.
    pub async fn execute_command(
        &self,
        channel_id: &str,
        command: &str,
    ) -> Result<(), ExecuteError> {
        let body = ExecuteCommand {
            channel_id,
            command,
        };
        let (status, text) = self
            .send(
                reqwest::Method::POST,
                "/commands/execute",
                "/commands/execute",
                Some(&body),
                1,
            )
            .await
            .map_err(|e| ExecuteError {
                status: 0,
                id: String::new(),
                message: e.to_string(),
            })?;
        if (200..300).contains(&status) {
            return Ok(());
        }
        let e = serde_json::from_str::<MmErrorBody>(&text).ok();
        Err(ExecuteError {
            status,
            id: e.as_ref().and_then(|e| e.id.clone()).unwrap_or_default(),
            message: e.and_then(|e| e.message).unwrap_or_default(),
        })
    }

    /// `GET /users?in_team=…&per_page=…`: a page of the team's members, as the bot sees them
    /// (emails blank where Mattermost hides them from the bot).
    pub async fn team_members(&self, team_id: &str, per_page: u32) -> Result<Vec<User>, MmError> {
        let team_id = path_id(team_id)?;
        self.call::<Vec<User>, ()>(
            reqwest::Method::GET,
            "/users",
            &format!("/users?in_team={team_id}&per_page={per_page}"),
            None,
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A server that answers 429 (then 503) before it answers 201, counting the calls.
    async fn flaky() -> (String, Arc<AtomicUsize>) {
        let n = Arc::new(AtomicUsize::new(0));
        let seen = n.clone();
        let app = axum::Router::new().fallback(move || {
            let seen = seen.clone();
            async move {
                use axum::response::IntoResponse;
                match seen.fetch_add(1, Ordering::SeqCst) {
                    0 => (
                        axum::http::StatusCode::TOO_MANY_REQUESTS,
                        [("retry-after", "0")],
                        "{}",
                    )
                        .into_response(),
                    1 => (axum::http::StatusCode::SERVICE_UNAVAILABLE, "{}").into_response(),
                    _ => (
                        axum::http::StatusCode::CREATED,
                        axum::Json(serde_json::json!({"id": "post1"})),
                    )
                        .into_response(),
                }
            }
        });
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
        (url, n)
    }

    #[tokio::test]
    async fn rate_limits_and_server_errors_are_retried() {
        let (url, n) = flaky().await;
        let c = MmClient::new(&url, zeroize::Zeroizing::new("t".into())).unwrap();
        assert_eq!(
            c.create_post("ch1", "hi", None, &[]).await.unwrap(),
            "post1"
        );
        assert_eq!(n.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn errors_carry_the_status_and_message() {
        let app = axum::Router::new().fallback(|| async {
            (
                axum::http::StatusCode::FORBIDDEN,
                axum::Json(serde_json::json!({"message": "no permission"})),
            )
        });
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
        let c = MmClient::new(&url, zeroize::Zeroizing::new("t".into())).unwrap();
        match c.user("u1").await {
            Err(MmError::Status {
                status: 403,
                message,
            }) => assert_eq!(message, "no permission"),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn ids_from_requests_never_reach_an_api_path_unparsed() {
        let (url, n) = flaky().await;
        let c = MmClient::new(&url, zeroize::Zeroizing::new("t".into())).unwrap();
        for bad in [
            "me",
            "ME",
            "a/../b",
            "u1/../../teams",
            "",
            "u1?x=1",
            "u%2F1",
        ] {
            assert!(matches!(c.user(bad).await, Err(MmError::BadId(_))), "{bad}");
            assert!(matches!(
                c.channel_member("ch1", bad).await,
                Err(MmError::BadId(_))
            ));
            assert!(matches!(
                c.patch_post(bad, "m", &[]).await,
                Err(MmError::BadId(_))
            ));
        }
        assert_eq!(n.load(Ordering::SeqCst), 0, "nothing was sent");
        assert!(path_id("k8w3r9x1q5t7y2u4i6o0p3a5s7").is_ok());
    }
}
