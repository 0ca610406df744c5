//! `jit mattermost setup`: registers the bridge's slash command and checks what the bridge needs
//! from Mattermost. Safe to run again: a command with the trigger already in the team is
//! updated in place (never a second one, never "trigger word already in use"), and its token is
//! written into the bridge's slash tokens file, which a running bridge reads again within two
//! seconds ([`crate::slash_tokens`]). `--rotate-token` gives the command a new token.
//!
//! Every check prints a stable code, a message and, when it is not passed, a hint naming the
//! System Console setting to change. What can be checked, and how (only endpoints and fields of
//! the Mattermost API v4 reference):
//!
//! - **The bot token** (`GET /users/me`). Whether personal access tokens are enabled
//!   (`ServiceSettings.EnableUserAccessTokens`) cannot be read: `GET /config/client` is not in
//!   the API reference. It matters only for a token of a regular user: Mattermost exempts bot
//!   accounts' tokens from that setting, and refuses a user's token while it is off exactly as it
//!   refuses a wrong one (401). So a refused token fails `mattermost_token_invalid`, whose hint names
//!   both causes, and a valid token proves the setting does not stand in the way.
//! - **Emails** (`GET /users?in_team=…`): some other member's `email` must be present; it is
//!   blank when `PrivacySettings.ShowEmailAddress` is off and the bot may not see emails.
//! - **Slash commands** (`GET /commands?team_id=…&custom_only=true`): 501 when custom slash
//!   commands are off (`ServiceSettings.EnableCommands`), 403 when the bot may not manage them.
//! - **The bridge's URL**: Mattermost's `ServiceSettings.AllowedUntrustedInternalConnections`
//!   cannot be read either. Setup resolves `public_url`'s host from here and warns, naming the
//!   host to add to that setting, when it is a loopback, private, link-local or shared address
//!   (those Mattermost refuses to call unless listed); asks the bridge's `/healthz` from here;
//!   and with `--check-channel` has Mattermost itself run `/<trigger> help` in that channel
//!   (`POST /commands/execute`), the one check of what Mattermost can reach, which also proves
//!   the running bridge accepts the token.

use crate::client::{CommandToken, MmClient, MmError, SlashCommand};
use crate::config::BridgeConfig;
use std::net::IpAddr;
use std::time::Duration;

/// The System Console settings the checks name (also in `docs/mattermost.md`).
pub mod settings {
    /// Where bot accounts are enabled.
    pub const BOT_ACCOUNTS: &str = "System Console > Integrations > Bot Accounts > Enable Bot Account Creation (ServiceSettings.EnableBotAccountCreation)";
    /// Personal access tokens.
    pub const ACCESS_TOKENS: &str = "System Console > Integrations > Integration Management > Enable Personal Access Tokens (ServiceSettings.EnableUserAccessTokens)";
    /// Custom slash commands.
    pub const SLASH_COMMANDS: &str = "System Console > Integrations > Integration Management > Enable Custom Slash Commands (ServiceSettings.EnableCommands)";
    /// Emails shown to other users.
    pub const SHOW_EMAIL: &str = "System Console > Site Configuration > Users and Teams > Show Email Address (PrivacySettings.ShowEmailAddress)";
    /// Integrations calling internal addresses.
    pub const UNTRUSTED_INTERNAL: &str = "System Console > Environment > Developer > Allow untrusted internal connections to (ServiceSettings.AllowedUntrustedInternalConnections)";
    /// Who may manage slash commands, for every member.
    pub const MANAGE_SLASH_COMMANDS: &str = "System Console > User Management > Permissions > System Scheme > All Members > Integrations & Customizations > Manage Slash Commands";
    /// Who may manage slash commands in one team: its team admins.
    pub const TEAM_ADMIN: &str =
        "System Console > User Management > Teams > (the team) > the bot > Team Admin";
    /// A bot's role (system admins see emails however they are set; more than the bridge needs
    /// otherwise).
    pub const BOT_ROLE: &str =
        "Integrations > Bot Accounts > (the bot) > Edit > Role: System Admin";
}

/// What `setup` is asked to do.
#[derive(Debug, Clone)]
pub struct SetupOptions {
    /// The team the command belongs to.
    pub team_id: String,
    /// The trigger word (without `/`).
    pub trigger: String,
    /// Give the command a new token.
    pub rotate_token: bool,
    /// A channel the bot is a member of, where Mattermost runs `/<trigger> help` to prove it
    /// reaches the bridge.
    pub check_channel: Option<String>,
}

/// A check's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Passed.
    Ok,
    /// Could not be settled from here, or will bite later; setup still succeeds.
    Warn,
    /// The bridge will not work until this is fixed; setup fails.
    Fail,
}

/// One check: a stable code, what was found, and what to change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// Outcome.
    pub status: Status,
    /// Stable code (`emails_hidden`, `mattermost_token_invalid`, …).
    pub code: &'static str,
    /// What was found.
    pub message: String,
    /// What to change (the System Console setting, by menu path and `config.json` name).
    pub hint: Option<String>,
}

/// Everything setup found and did, in order.
#[derive(Debug, Default)]
pub struct Report {
    /// The checks.
    pub checks: Vec<Check>,
}

impl Report {
    /// True when no check failed.
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.status != Status::Fail)
    }

    /// The check with this code.
    pub fn get(&self, code: &str) -> Option<&Check> {
        self.checks.iter().find(|c| c.code == code)
    }

    /// The report as printed: one line per check, hints indented below, and a summary.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for c in &self.checks {
            let label = match c.status {
                Status::Ok => "ok",
                Status::Warn => "WARN",
                Status::Fail => "FAIL",
            };
            out.push_str(&format!("{label:<5} {:<34} {}\n", c.code, c.message));
            if let Some(h) = &c.hint {
                out.push_str(&format!("      hint: {h}\n"));
            }
        }
        let count = |s| self.checks.iter().filter(|c| c.status == s).count();
        out.push_str(&match (count(Status::Fail), count(Status::Warn)) {
            (0, 0) => "setup done: every check passed\n".to_owned(),
            (0, w) => format!("setup done, with {w} warning(s)\n"),
            (f, _) => format!("setup incomplete: {f} check(s) failed; fix them and run it again\n"),
        });
        out
    }

    fn push(&mut self, status: Status, code: &'static str, message: String, hint: Option<String>) {
        self.checks.push(Check {
            status,
            code,
            message,
            hint,
        });
    }

    fn ok(&mut self, code: &'static str, message: String) {
        self.push(Status::Ok, code, message, None);
    }

    fn warn(&mut self, code: &'static str, message: String, hint: String) {
        self.push(Status::Warn, code, message, Some(hint));
    }

    fn fail(&mut self, code: &'static str, message: String, hint: String) {
        self.push(Status::Fail, code, message, Some(hint));
    }

    /// A Mattermost failure with no more specific check: unreachable, or an error answer.
    fn mattermost_failed(&mut self, cfg: &BridgeConfig, what: &str, e: &MmError) {
        match e {
            MmError::Status { status, message } => self.fail(
                "mattermost_error",
                format!("{what}: Mattermost answered {status}: {message}"),
                "see Mattermost's log (System Console > Reporting > Server Logs) for this request"
                    .into(),
            ),
            _ => self.fail(
                "mattermost_unreachable",
                format!("{what}: {e}"),
                format!(
                    "check mattermost_url (JIT_MM_URL, now {}) and that this machine reaches it",
                    cfg.mattermost_url
                ),
            ),
        }
    }
}

/// The trigger word as Mattermost keeps it (lowercase), or why it is not one.
pub fn trigger_word(trigger: &str) -> anyhow::Result<String> {
    let t = trigger.trim().to_lowercase();
    anyhow::ensure!(
        (1..=128).contains(&t.chars().count())
            && !t.starts_with('/')
            && !t.chars().any(char::is_whitespace),
        "the trigger must be 1 to 128 characters, without spaces and without the leading /"
    );
    Ok(t)
}

/// Registers or updates the slash command, writes its token into the slash tokens file, and
/// checks what the bridge needs. Errors are for input that cannot be used at all; everything
/// Mattermost says is a check in the report.
pub async fn run(cfg: &BridgeConfig, opts: &SetupOptions) -> anyhow::Result<Report> {
    anyhow::ensure!(
        !cfg.bot_token.is_empty(),
        "bot_token is required (JIT_MM_BOT_TOKEN or JIT_MM_BOT_TOKEN_FILE)"
    );
    let team_id = crate::client::path_id(&opts.team_id)
        .map_err(|_| anyhow::anyhow!("--team-id is not a Mattermost id"))?;
    let trigger = trigger_word(&opts.trigger)?;
    if let Some(c) = &opts.check_channel {
        crate::client::path_id(c)
            .map_err(|_| anyhow::anyhow!("--check-channel is not a Mattermost id"))?;
    }
    let public = reqwest::Url::parse(&cfg.public_url)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
        .ok_or_else(|| anyhow::anyhow!("public_url {:?} is not an http(s) URL", cfg.public_url))?;
    jit_http::outbound::check_url(&cfg.mattermost_url)
        .await
        .map_err(|e| anyhow::anyhow!("mattermost_url: {e}"))?;
    let mm = MmClient::new(
        &cfg.mattermost_url,
        zeroize::Zeroizing::new(cfg.bot_token.clone()),
    )?;
    let url = format!(
        "{}/mattermost/command",
        cfg.public_url.trim_end_matches('/')
    );
    let mut report = Report::default();

    // 1. The bot token.
    let me = match mm.me().await {
        Ok(me) => {
            report.ok(
                "bot_token_valid",
                format!(
                    "Mattermost at {} accepts the bot token (it is @{})",
                    cfg.mattermost_url, me.username
                ),
            );
            me
        }
        Err(MmError::Status { status: 401, .. }) => {
            report.fail(
                "mattermost_token_invalid",
                "Mattermost refused the bot token (401)".into(),
                format!(
                    "give the bridge a valid token of its bot account (Integrations > Bot \
                     Accounts > Create New Token) as bot_token (JIT_MM_BOT_TOKEN or \
                     JIT_MM_BOT_TOKEN_FILE); bot accounts need {}. A regular user's token works \
                     only while {} is true: Mattermost refuses it otherwise, exactly as a wrong \
                     token",
                    settings::BOT_ACCOUNTS,
                    settings::ACCESS_TOKENS
                ),
            );
            return Ok(report);
        }
        Err(e) => {
            report.mattermost_failed(cfg, "looking up the bot (GET /users/me)", &e);
            return Ok(report);
        }
    };

    // 2. Emails: the backend records requesters by email.
    match mm.team_members(team_id, 60).await {
        Ok(users) => {
            let others: Vec<_> = users.iter().filter(|u| u.id != me.id).collect();
            if others.is_empty() {
                report.warn(
                    "emails_unchecked",
                    format!(
                        "team {team_id} has no member but the bot, so whether the bot sees \
                         emails is unknown"
                    ),
                    format!(
                        "add people to the team and run setup again; the bot must see emails \
                         ({} true)",
                        settings::SHOW_EMAIL
                    ),
                );
            } else if others.iter().any(|u| !u.email.is_empty()) {
                report.ok(
                    "emails_visible",
                    "the bot sees users' email addresses".into(),
                );
            } else {
                report.fail(
                    "emails_hidden",
                    format!(
                        "the bot sees no email address among {} member(s) of team {team_id}: \
                         requests would be refused (the backend records requesters by email)",
                        others.len()
                    ),
                    format!(
                        "set {} to true; or, to keep emails hidden from users, make the bot a \
                         system admin ({}), which gives it more than it needs otherwise",
                        settings::SHOW_EMAIL,
                        settings::BOT_ROLE
                    ),
                );
            }
        }
        Err(MmError::Status { status: 403, .. }) => report.fail(
            "bot_not_in_team",
            format!("the bot may not list the members of team {team_id} (403)"),
            "add the bot to the team (team menu > Add Members, or System Console > User \
             Management > Teams > the team > Add Members), and to every channel it serves"
                .into(),
        ),
        Err(e) => report.mattermost_failed(cfg, "listing the team's members (GET /users)", &e),
    }

    // 3. The command: find it, create or update it, rotate its token if asked.
    let existing = match mm.list_commands(team_id).await {
        Ok(list) => list,
        Err(e) => {
            commands_failed(
                &mut report,
                cfg,
                team_id,
                "listing the team's slash commands",
                &e,
            );
            return Ok(report);
        }
    };
    let mut mine = existing
        .into_iter()
        .filter(|c| c.delete_at == 0 && c.trigger.eq_ignore_ascii_case(&trigger));
    let found = mine.next();
    let extra = mine.count();
    if extra > 0 {
        report.warn(
            "duplicate_commands",
            format!(
                "{} more command(s) use /{trigger} in team {team_id}; setup keeps one",
                extra
            ),
            "delete the others in Integrations > Slash Commands".into(),
        );
    }
    let (command, old_token) = match found {
        None => match mm.create_command(team_id, &trigger, &url).await {
            Ok(c) => {
                report.ok(
                    "command_created",
                    format!("created /{trigger} in team {team_id}, posting to {url}"),
                );
                (c, None)
            }
            Err(MmError::Status {
                status: 400,
                message,
            }) => {
                report.fail(
                    "trigger_in_use",
                    format!("Mattermost refused /{trigger} in team {team_id}: {message}"),
                    format!(
                        "something that is not a custom slash command (a plugin's or a built-in \
                         command) already uses /{trigger} in this team: choose another trigger \
                         with --trigger, or remove the other"
                    ),
                );
                return Ok(report);
            }
            Err(e) => {
                commands_failed(&mut report, cfg, team_id, "creating the command", &e);
                return Ok(report);
            }
        },
        Some(c) if c.is_registered_as(&trigger, &url) => {
            report.ok(
                "command_current",
                format!(
                    "/{trigger} (command {}) in team {team_id} already posts to {url}",
                    c.id
                ),
            );
            let token = c.token.clone();
            (c, Some(token))
        }
        Some(c) => match mm.update_command(&c, &trigger, &url).await {
            Ok(updated) => {
                report.ok(
                    "command_updated",
                    format!(
                        "updated /{trigger} (command {}) in team {team_id}: it posts to {url} (was {})",
                        c.id, c.url
                    ),
                );
                let token = if updated.token.is_empty() {
                    c.token.clone()
                } else {
                    updated.token.clone()
                };
                (
                    SlashCommand {
                        token: token.clone(),
                        ..updated
                    },
                    Some(token),
                )
            }
            Err(e) => {
                commands_failed(&mut report, cfg, team_id, "updating the command", &e);
                return Ok(report);
            }
        },
    };
    let mut token = command.token.clone();
    if opts.rotate_token {
        match mm.regen_command_token(&command.id).await {
            Ok(t) if !t.is_empty() => {
                report.ok(
                    "token_rotated",
                    format!("/{trigger} has a new token; Mattermost no longer sends the old one"),
                );
                token = t;
            }
            Ok(_) => {
                report.fail(
                    "token_unknown",
                    "Mattermost answered the new token request without a token".into(),
                    "run setup again with --rotate-token".into(),
                );
                return Ok(report);
            }
            Err(e) => {
                commands_failed(
                    &mut report,
                    cfg,
                    team_id,
                    "giving the command a new token",
                    &e,
                );
                return Ok(report);
            }
        }
    }
    if token.is_empty() {
        report.fail(
            "token_unknown",
            format!("Mattermost did not show /{trigger}'s token"),
            "run setup again with --rotate-token to give the command a token setup can write"
                .into(),
        );
        return Ok(report);
    }

    // 4. The token into the bridge's slash tokens file.
    write_token(
        &mut report,
        cfg,
        team_id,
        &trigger,
        old_token.as_ref(),
        &token,
    );
    if opts.rotate_token
        && let Some(old) = &old_token
        && cfg.slash_tokens.iter().any(|t| old.same_as(t))
    {
        report.warn(
            "old_token_in_config",
            "the command's old token is still listed in slash_tokens, so the bridge still accepts it".into(),
            "remove it from slash_tokens (JIT_MM_SLASH_TOKENS) and restart the bridge".into(),
        );
    }

    // 5. Whether Mattermost can reach the bridge.
    check_bridge_url(&mut report, &public, &cfg.public_url).await;
    check_bridge_answers(&mut report, &cfg.public_url).await;
    if let Some(channel) = &opts.check_channel {
        check_through_mattermost(&mut report, cfg, &mm, channel, &trigger, &public).await;
    }
    Ok(report)
}

/// Failures of the slash command calls: turned off, not allowed, or anything else.
fn commands_failed(
    report: &mut Report,
    cfg: &BridgeConfig,
    team_id: &str,
    what: &str,
    e: &MmError,
) {
    match e {
        MmError::Status { status: 501, .. } => report.fail(
            "slash_commands_disabled",
            format!("{what}: Mattermost has custom slash commands turned off (501)"),
            format!("set {} to true", settings::SLASH_COMMANDS),
        ),
        MmError::Status { status: 403, .. } => report.fail(
            "cannot_manage_slash_commands",
            format!("{what}: the bot may not manage slash commands in team {team_id} (403)"),
            format!(
                "the bot must be a member of the team and may manage its slash commands: make \
                 it a team admin ({}), or grant {}; to update a command someone else created it \
                 also needs Manage Others' Slash Commands, or delete that command \
                 (Integrations > Slash Commands) and run setup again",
                settings::TEAM_ADMIN,
                settings::MANAGE_SLASH_COMMANDS
            ),
        ),
        e => report.mattermost_failed(cfg, what, e),
    }
}

fn write_token(
    report: &mut Report,
    cfg: &BridgeConfig,
    team_id: &str,
    trigger: &str,
    old: Option<&CommandToken>,
    token: &CommandToken,
) {
    use crate::slash_tokens::{label, with_command_token, write_file};
    let path = cfg.slash_tokens_path();
    let current = match std::fs::read_to_string(&path) {
        Ok(t) => zeroize::Zeroizing::new(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => zeroize::Zeroizing::default(),
        Err(e) => {
            report.fail(
                "token_file_unwritable",
                format!("reading {}: {e}", path.display()),
                "run setup as the user the bridge runs as, or set slash_tokens_file \
                 (JIT_MM_SLASH_TOKENS_FILE) to a file both can use"
                    .into(),
            );
            return;
        }
    };
    let next = zeroize::Zeroizing::new(with_command_token(
        &current,
        &label(team_id, trigger),
        old.map(CommandToken::expose),
        token.expose(),
    ));
    if *next == *current {
        report.ok(
            "token_file_current",
            format!("{} already holds the command's token", path.display()),
        );
        return;
    }
    match write_file(&path, &next) {
        Ok(()) => report.ok(
            "token_file_written",
            format!(
                "wrote the command's token to {} (mode 0600); a running bridge that reads it \
                 accepts the token within 2 s, no restart",
                path.display()
            ),
        ),
        Err(e) => report.fail(
            "token_file_unwritable",
            format!("writing {}: {e}", path.display()),
            "run setup as the user the bridge runs as, or set slash_tokens_file \
             (JIT_MM_SLASH_TOKENS_FILE) to a file both can use"
                .into(),
        ),
    }
}

/// Why Mattermost refuses to call `ip` unless it is listed in
/// `AllowedUntrustedInternalConnections`: the address ranges it treats as internal.
pub fn internal_kind(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            if v4.is_loopback() {
                Some("loopback")
            } else if v4.is_private() {
                Some("private")
            } else if v4.is_link_local() {
                Some("link-local")
            } else if o[0] == 100 && (o[1] & 0xc0) == 64 {
                Some("shared (100.64.0.0/10)")
            } else if v4.is_unspecified() {
                Some("unspecified")
            } else {
                None
            }
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return internal_kind(IpAddr::V4(v4));
            }
            let s0 = v6.segments().first().copied().unwrap_or(0);
            if v6.is_loopback() {
                Some("loopback")
            } else if v6.is_unspecified() {
                Some("unspecified")
            } else if (s0 & 0xfe00) == 0xfc00 {
                Some("unique local (fc00::/7)")
            } else if (s0 & 0xffc0) == 0xfe80 {
                Some("link-local")
            } else {
                None
            }
        }
    }
}

async fn check_bridge_url(report: &mut Report, public: &reqwest::Url, public_url: &str) {
    let host = public
        .host_str()
        .unwrap_or_default()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = public.port_or_known_default().unwrap_or(80);
    let addrs: Vec<IpAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![ip],
        Err(_) => {
            let lookup = tokio::time::timeout(
                Duration::from_secs(5),
                tokio::net::lookup_host((host.as_str(), port)),
            )
            .await;
            match lookup {
                Ok(Ok(a)) => a.map(|s| s.ip()).collect(),
                _ => {
                    report.warn(
                        "bridge_url_unresolved",
                        format!("{host} (public_url {public_url}) does not resolve from here"),
                        format!(
                            "make sure Mattermost resolves and reaches it; if it names an internal \
                             address there, add {host} to {}; run setup with --check-channel to \
                             have Mattermost call the bridge",
                            settings::UNTRUSTED_INTERNAL
                        ),
                    );
                    return;
                }
            }
        }
    };
    match addrs
        .iter()
        .find_map(|ip| internal_kind(*ip).map(|k| (ip, k)))
    {
        Some((ip, kind)) => {
            let loopback = if kind == "loopback" {
                " (a loopback address reaches the bridge only when Mattermost runs on the same machine)"
            } else {
                ""
            };
            report.warn(
                "bridge_url_internal",
                format!(
                    "public_url {public_url} names {host}, a {kind} address ({ip}){loopback}: \
                     Mattermost calls it (slash command, buttons, dialogs) only if it is allowed"
                ),
                format!(
                    "add {host} to {} (space-separated; setup cannot read that setting); run \
                     setup with --check-channel to have Mattermost call the bridge",
                    settings::UNTRUSTED_INTERNAL
                ),
            );
        }
        None => report.ok(
            "bridge_url_public",
            format!(
                "public_url {public_url} names a public address: Mattermost needs no \
                 untrusted-internal-connection entry for it"
            ),
        ),
    }
}

async fn check_bridge_answers(report: &mut Report, public_url: &str) {
    let health = format!("{}/healthz", public_url.trim_end_matches('/'));
    let answer = match jit_http::outbound::client(false) {
        Ok(http) => http
            .get(&health)
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .map_err(|e| jit_http::outbound::describe(&e)),
        Err(e) => Err(jit_http::outbound::describe(&e)),
    };
    match answer {
        Ok(r) if r.status().is_success() => report.ok(
            "bridge_answers",
            format!("a bridge answers at {health} from here"),
        ),
        Ok(r) => report.warn(
            "bridge_not_answering",
            format!("{health} answered {} from here", r.status().as_u16()),
            "make sure public_url (JIT_MM_PUBLIC_URL) is the bridge's address".into(),
        ),
        Err(e) => report.warn(
            "bridge_not_answering",
            format!("no bridge answers at {health} from here ({e})"),
            "start the bridge (`jit mattermost`) with the same configuration; if it runs where \
             this machine cannot reach it, run setup with --check-channel to have Mattermost \
             call it"
                .into(),
        ),
    }
}

async fn check_through_mattermost(
    report: &mut Report,
    cfg: &BridgeConfig,
    mm: &MmClient,
    channel: &str,
    trigger: &str,
    public: &reqwest::Url,
) {
    let host = public.host_str().unwrap_or_default().to_owned();
    let url = format!(
        "{}/mattermost/command",
        cfg.public_url.trim_end_matches('/')
    );
    let path = cfg.slash_tokens_path();
    match mm
        .execute_command(channel, &format!("/{trigger} help"))
        .await
    {
        Ok(()) => {
            // What could not be settled from here is settled: Mattermost reached the bridge.
            for c in &mut report.checks {
                if matches!(c.code, "bridge_url_internal" | "bridge_url_unresolved") {
                    *c = Check {
                        status: Status::Ok,
                        code: "bridge_url_allowed",
                        message: format!(
                            "Mattermost may call {host} (it is allowed, or not internal to \
                             Mattermost)"
                        ),
                        hint: None,
                    };
                }
            }
            report.ok(
                "mattermost_reaches_bridge",
                format!(
                    "Mattermost ran /{trigger} help in channel {channel}: it reaches the bridge \
                     at {url}, and the bridge accepts the command's token"
                ),
            );
        }
        Err(e) if e.id == "api.command.execute_command.failed.app_error" => report.fail(
            "bridge_unreachable_from_mattermost",
            format!("Mattermost could not call {url}: {}", e.message),
            format!(
                "if {host} is a loopback, private or internal address, add {host} to {}; \
                 otherwise check that Mattermost resolves {host} and that no firewall stands \
                 between them, and that public_url (JIT_MM_PUBLIC_URL) is the bridge's address",
                settings::UNTRUSTED_INTERNAL
            ),
        ),
        Err(e) if e.id == "api.command.execute_command.failed_resp.app_error" => report.fail(
            "bridge_refused_command",
            format!(
                "Mattermost reached {url}, which refused the command: {}",
                e.message
            ),
            format!(
                "a 401 means the bridge there does not accept the token: it must read {} \
                 (slash_tokens_file, JIT_MM_SLASH_TOKENS_FILE, or the same data_dir); otherwise \
                 see the bridge's log",
                path.display()
            ),
        ),
        Err(e) if matches!(e.status, 400 | 403 | 404) => report.fail(
            "check_channel_unusable",
            format!(
                "Mattermost would not run /{trigger} in channel {channel} ({}): {}",
                e.status, e.message
            ),
            "give --check-channel the id of a channel of the team that the bot is a member of \
             (the bot must be in every channel it serves)"
                .into(),
        ),
        Err(e) if e.status == 0 => report.fail(
            "mattermost_unreachable",
            format!("running /{trigger} help: {}", e.message),
            format!(
                "check mattermost_url (JIT_MM_URL, now {}) and that this machine reaches it",
                cfg.mattermost_url
            ),
        ),
        Err(e) => report.fail(
            "mattermost_error",
            format!("running /{trigger} help: {e}"),
            "see Mattermost's log (System Console > Reporting > Server Logs) for this request"
                .into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_addresses_are_the_ones_mattermost_refuses() {
        for (ip, kind) in [
            ("127.0.0.1", Some("loopback")),
            ("10.1.2.3", Some("private")),
            ("172.16.0.1", Some("private")),
            ("192.168.1.1", Some("private")),
            ("169.254.1.1", Some("link-local")),
            ("100.64.0.1", Some("shared (100.64.0.0/10)")),
            ("::1", Some("loopback")),
            ("fd12::1", Some("unique local (fc00::/7)")),
            ("fe80::1", Some("link-local")),
            ("::ffff:10.0.0.1", Some("private")),
            ("8.8.8.8", None),
            ("100.128.0.1", None),
            ("2001:db8::1", None),
        ] {
            assert_eq!(internal_kind(ip.parse().unwrap()), kind, "{ip}");
        }
    }

    #[test]
    fn triggers_are_mattermost_trigger_words() {
        assert_eq!(trigger_word("JIT").unwrap(), "jit");
        for bad in ["", "/jit", "j it", &"x".repeat(129)] {
            assert!(trigger_word(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_report_prints_codes_and_hints_and_fails_on_a_failed_check() {
        let mut r = Report::default();
        r.ok("bot_token_valid", "fine".into());
        r.warn("bridge_url_internal", "internal".into(), "add it".into());
        assert!(r.passed());
        r.fail("emails_hidden", "hidden".into(), "show them".into());
        assert!(!r.passed());
        let text = r.render();
        assert!(text.contains("FAIL  emails_hidden"), "{text}");
        assert!(text.contains("      hint: show them"), "{text}");
        assert!(text.contains("1 check(s) failed"), "{text}");
        assert_eq!(
            r.get("bridge_url_internal").map(|c| c.status),
            Some(Status::Warn)
        );
    }
}
