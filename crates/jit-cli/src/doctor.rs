//! `jit doctor`: checks a configuration end to end, with the same rules the server and the
//! bridge apply at start, and says what to fix. Each finding has a stable code, a message and
//! (when something helps) a hint; `--json` prints the [`Report`] for machines. The exit status
//! is 1 when any check fails (warnings alone exit 0).
//!
//! It changes nothing: key rings are read, the database is opened read-only, and the only
//! calls made are `GET /healthz` to the backend and `GET /api/v4/users/me` to Mattermost
//! (through the one outbound client, which never reaches link-local or metadata addresses).

use clap::Args;
use jit_proto::Clock;
use serde::Serialize;
use std::path::{Path, PathBuf};
use time::OffsetDateTime;

/// `jit doctor`'s arguments.
#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// The server's TOML configuration, as for `jit server` (then JIT_* environment variables
    /// override it).
    #[arg(long, short, env = "JIT_CONFIG")]
    pub config: Option<PathBuf>,
    /// The bridge's TOML configuration, as for `jit mattermost`: also checks its key rings, the
    /// bot token and Mattermost's clock.
    #[arg(long, env = "JIT_MM_CONFIG")]
    pub mattermost_config: Option<PathBuf>,
    /// The running backend whose clock is compared with this machine's (default: the bridge's
    /// `backend_url`, else the server's `listen` address).
    #[arg(long, env = "JIT_API_URL")]
    pub api: Option<String>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Passed.
    Ok,
    /// Works, but probably not as intended.
    Warn,
    /// Will not work: fix it.
    Fail,
}

/// What was checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Check {
    /// The configuration files and environment.
    Config,
    /// Key rings.
    Keys,
    /// The database.
    Database,
    /// The callback URL.
    Callbacks,
    /// The access provider.
    Provider,
    /// Mattermost and the bot token.
    Mattermost,
    /// Clocks against the signature skew window.
    Clock,
}

impl Check {
    fn as_str(self) -> &'static str {
        match self {
            Self::Config => "config",
            Self::Keys => "keys",
            Self::Database => "database",
            Self::Callbacks => "callbacks",
            Self::Provider => "provider",
            Self::Mattermost => "mattermost",
            Self::Clock => "clock",
        }
    }
}

macro_rules! codes {
    ($( $(#[$doc:meta])* $variant:ident = $text:literal ),+ $(,)?) => {
        /// A finding's stable code (never renamed, only added).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
        pub enum Code {
            $( $(#[$doc])* #[serde(rename = $text)] $variant, )+
        }

        impl Code {
            /// The code as printed.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Code::$variant => $text,)+
                }
            }
        }
    };
}

codes! {
    /// The check passed.
    Ok = "ok",
    /// A configuration file or variable is refused.
    ConfigInvalid = "config_invalid",
    /// A key file is readable or writable by group or others.
    KeyFileMode = "key_file_mode",
    /// A key file does not exist.
    KeyFileMissing = "key_file_missing",
    /// A key ring does not load.
    KeyRingUnreadable = "key_ring_unreadable",
    /// The backend and callback rings share a secret.
    KeyRingsShareSecret = "key_rings_share_secret",
    /// The SQLite file does not exist yet.
    DatabaseMissing = "database_missing",
    /// The database cannot be opened or read.
    DatabaseUnreachable = "database_unreachable",
    /// Migrations of this build are not applied yet.
    DatabasePendingMigrations = "database_pending_migrations",
    /// The database has migrations this build does not know.
    DatabaseNewerThanBinary = "database_newer_than_binary",
    /// No callbacks.url: events wait in the outbox.
    CallbacksUrlUnset = "callbacks_url_unset",
    /// The server would refuse the callbacks.url.
    CallbacksUrlRefused = "callbacks_url_refused",
    /// A `dangerous_*` setting is on.
    DangerousSetting = "dangerous_setting",
    /// The access provider cannot work now.
    ProviderUnusable = "provider_unusable",
    /// The dry-run provider only records what it would do.
    ProviderDryRun = "provider_dry_run",
    /// Mattermost did not answer.
    MattermostUnreachable = "mattermost_unreachable",
    /// Mattermost refused the bot token.
    MattermostTokenInvalid = "mattermost_token_invalid",
    /// Mattermost answered with another error.
    MattermostError = "mattermost_error",
    /// The bot is a system admin: more than it needs.
    MattermostBotIsAdmin = "mattermost_bot_is_admin",
    /// A clock differs by more than the signature skew window.
    ClockSkew = "clock_skew",
    /// A clock differs by more than half the window.
    ClockDrift = "clock_drift",
    /// A peer's clock could not be read.
    ClockUnchecked = "clock_unchecked",
}

/// One finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// What was checked.
    pub check: Check,
    /// How it came out.
    pub status: Status,
    /// Stable code.
    pub code: Code,
    /// What was found.
    pub message: String,
    /// What to do about it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

/// Everything `jit doctor` found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    /// No check failed.
    pub ok: bool,
    /// Checks that failed.
    pub failed: usize,
    /// Warnings.
    pub warnings: usize,
    /// Every finding, in the order checked.
    pub findings: Vec<Finding>,
}

impl Report {
    fn push(
        &mut self,
        check: Check,
        status: Status,
        code: Code,
        message: String,
        hint: Option<String>,
    ) {
        self.findings.push(Finding {
            check,
            status,
            code,
            message,
            hint,
        });
        match status {
            Status::Fail => self.failed += 1,
            Status::Warn => self.warnings += 1,
            Status::Ok => {}
        }
        self.ok = self.failed == 0;
    }

    fn ok(&mut self, check: Check, message: String) {
        self.push(check, Status::Ok, Code::Ok, message, None);
    }

    fn warn(&mut self, check: Check, code: Code, message: String, hint: Option<String>) {
        self.push(check, Status::Warn, code, message, hint);
    }

    fn fail(&mut self, check: Check, code: Code, message: String, hint: Option<String>) {
        self.push(check, Status::Fail, code, message, hint);
    }

    /// The report for people.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for f in &self.findings {
            let status = match f.status {
                Status::Ok => "ok",
                Status::Warn => "warn",
                Status::Fail => "FAIL",
            };
            let line = match f.code {
                Code::Ok => f.message.clone(),
                c => format!("{}: {}", c.as_str(), f.message),
            };
            out.push_str(&format!("{status:<4}  {:<10}  {line}\n", f.check.as_str()));
            if let Some(h) = &f.hint {
                out.push_str(&format!("{:<16}  hint: {h}\n", ""));
            }
        }
        let plural = |n: usize, one: &str, many: &str| {
            if n == 1 {
                format!("1 {one}")
            } else {
                format!("{n} {many}")
            }
        };
        out.push_str(&format!(
            "\n{}, {}\n",
            plural(self.failed, "check failed", "checks failed"),
            plural(self.warnings, "warning", "warnings")
        ));
        out
    }
}

/// Runs the checks and prints the report; exit status 1 when a check failed.
#[allow(clippy::print_stdout)]
pub async fn run(args: DoctorArgs, clock: &dyn Clock) -> anyhow::Result<std::process::ExitCode> {
    let report = diagnose(&args, clock).await;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.render());
    }
    Ok(if report.ok {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    })
}

/// Every check, in order.
pub async fn diagnose(args: &DoctorArgs, clock: &dyn Clock) -> Report {
    let mut r = Report {
        ok: true,
        ..Report::default()
    };
    let server =
        match jit_server::Config::load(args.config.as_deref(), &jit_server::config::ProcessEnv) {
            Ok(c) => {
                r.ok(
                    Check::Config,
                    match &args.config {
                        Some(p) => format!("server configuration {} accepted", p.display()),
                        None => {
                            "server configuration (defaults and JIT_* variables) accepted".into()
                        }
                    },
                );
                Some(c)
            }
            Err(e) => {
                r.fail(
                    Check::Config,
                    Code::ConfigInvalid,
                    format!("server configuration: {e}"),
                    Some("see docs/configuration.md for every key and variable".into()),
                );
                None
            }
        };
    let bridge = match &args.mattermost_config {
        None => None,
        Some(p) => match jit_mattermost::BridgeConfig::load(Some(p)) {
            Ok(c) => {
                r.ok(
                    Check::Config,
                    format!("bridge configuration {} accepted", p.display()),
                );
                Some(c)
            }
            Err(e) => {
                r.fail(
                    Check::Config,
                    Code::ConfigInvalid,
                    format!("bridge configuration {}: {e:#}", p.display()),
                    Some("see docs/mattermost.md for every key and variable".into()),
                );
                None
            }
        },
    };
    let mut checked_rings = Vec::new();
    if let Some(cfg) = &server {
        server_keys(&mut r, cfg, clock, &mut checked_rings).await;
        database(&mut r, cfg).await;
        callbacks(&mut r, cfg).await;
        provider(&mut r, cfg).await;
    }
    let max_skew = server.as_ref().map_or(
        jit_server::config::KeysConfig::default().max_skew_secs,
        |c| c.keys.max_skew_secs,
    );
    if let Some(b) = &bridge {
        for (label, spec) in [
            ("bridge backend_keys", &b.backend_keys),
            ("bridge callback_keys", &b.callback_keys),
        ] {
            if !checked_rings.contains(spec) {
                checked_rings.push(spec.clone());
                ring(
                    &mut r,
                    label,
                    spec,
                    false,
                    (b.aws_region.clone(), b.aws_endpoint_url.clone()),
                    clock,
                )
                .await;
            }
        }
        mattermost(&mut r, b, clock, max_skew).await;
    }
    let api = args
        .api
        .clone()
        .or_else(|| bridge.as_ref().map(|b| b.backend_url.clone()))
        .or_else(|| server.as_ref().map(|c| local_url(&c.listen)));
    if let Some(api) = api {
        backend_clock(&mut r, &api, clock, max_skew).await;
    }
    r
}

/// `http://` and the listen address, an unspecified address (`0.0.0.0`) as loopback.
fn local_url(listen: &str) -> String {
    match listen.parse::<std::net::SocketAddr>() {
        Ok(mut a) if a.ip().is_unspecified() => {
            a.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
            format!("http://{a}")
        }
        _ => format!("http://{listen}"),
    }
}

fn shown(path: &Path) -> String {
    jit_keys::absolute_if_relative(path)
        .unwrap_or_else(|| path.to_path_buf())
        .display()
        .to_string()
}

async fn server_keys(
    r: &mut Report,
    cfg: &jit_server::Config,
    clock: &dyn Clock,
    checked: &mut Vec<String>,
) {
    let (specs, embedded) = match (&cfg.keys.backend, &cfg.keys.callback) {
        (Some(b), Some(c)) => ([b.clone(), c.clone()], false),
        (None, None) => {
            let (b, c) = jit_server::embedded::key_paths(&cfg.data_dir);
            (
                [
                    format!("file:{}", b.display()),
                    format!("file:{}", c.display()),
                ],
                true,
            )
        }
        _ => {
            r.fail(
                Check::Keys,
                Code::ConfigInvalid,
                "only one of keys.backend and keys.callback is configured".into(),
                Some("configure both, or neither (the embedded default generates both)".into()),
            );
            return;
        }
    };
    let aws = (cfg.aws_region.clone(), cfg.aws_endpoint_url.clone());
    let [b, c] = specs;
    checked.push(b.clone());
    checked.push(c.clone());
    let backend = ring(r, "keys.backend", &b, embedded, aws.clone(), clock).await;
    let callback = ring(r, "keys.callback", &c, embedded, aws, clock).await;
    if let (Some(b), Some(c)) = (backend, callback)
        && let Some((x, y)) = b.shared_secret_with(&c)
    {
        r.fail(
            Check::Keys,
            Code::KeyRingsShareSecret,
            format!("key {x} of the backend ring and key {y} of the callback ring share a secret"),
            Some("give each ring its own secrets (`jit keys rotate` adds a new key)".into()),
        );
    }
}

/// Checks one ring: a file exists and is private (the rule the file source warns with), and
/// the ring loads. Returns the ring when it loaded.
async fn ring(
    r: &mut Report,
    label: &str,
    spec: &str,
    embedded: bool,
    aws: (Option<String>, Option<String>),
    clock: &dyn Clock,
) -> Option<jit_proto::KeyRing> {
    let parsed = match jit_keys::SourceSpec::parse(spec) {
        Ok(p) => p,
        Err(e) => {
            r.fail(
                Check::Keys,
                Code::KeyRingUnreadable,
                format!("{label} {spec}: {e}"),
                None,
            );
            return None;
        }
    };
    if let jit_keys::SourceSpec::File(path) = &parsed {
        if !path.exists() {
            if embedded {
                r.warn(
                    Check::Keys,
                    Code::KeyFileMissing,
                    format!("{label}: no key file at {} yet", shown(path)),
                    Some("`jit server` generates both rings (mode 0600) at its first start".into()),
                );
            } else {
                r.fail(
                    Check::Keys,
                    Code::KeyFileMissing,
                    format!("{label}: no key file at {}", shown(path)),
                    Some(
                        "check the path (a relative one is read from the directory the process \
                         starts in)"
                            .into(),
                    ),
                );
            }
            return None;
        }
        match jit_keys::unsafe_key_file_mode(path) {
            Ok(Some(mode)) => r.fail(
                Check::Keys,
                Code::KeyFileMode,
                format!(
                    "{label}: {} is readable by group or others (mode {mode:o})",
                    shown(path)
                ),
                Some(format!("chmod 600 {}", shown(path))),
            ),
            Ok(None) => {}
            Err(e) => {
                r.fail(
                    Check::Keys,
                    Code::KeyRingUnreadable,
                    format!("{label}: {}: {e}", shown(path)),
                    None,
                );
                return None;
            }
        }
    }
    let source = jit_keys::open_source(&parsed, aws.0, aws.1).await;
    match source.load().await {
        Ok(ring) => {
            let signs = ring.signing_key(clock.now()).map_or_else(
                || "none signs now".to_owned(),
                |k| format!("{} signs", k.id()),
            );
            r.ok(
                Check::Keys,
                format!("{label} {spec}: {} key(s), {signs}", ring.len()),
            );
            Some(ring)
        }
        Err(e) => {
            r.fail(
                Check::Keys,
                Code::KeyRingUnreadable,
                format!("{label}: {e}"),
                None,
            );
            None
        }
    }
}

async fn database(r: &mut Report, cfg: &jit_server::Config) {
    let url = cfg.database_url();
    let shown_url = cfg.database_url_redacted();
    if let Ok(jit_store::DatabaseUrl::Sqlite(path)) = jit_store::DatabaseUrl::parse(&url)
        && !path.exists()
    {
        r.warn(
            Check::Database,
            Code::DatabaseMissing,
            format!("no database at {} yet", shown(&path)),
            Some(
                "`jit server` creates and migrates it at its first start; if this server has \
                 data, the path is wrong (database_url, data_dir)"
                    .into(),
            ),
        );
        return;
    }
    let store = match jit_store::SqlStore::open_read_only(&url).await {
        Ok(s) => s,
        Err(e) => {
            r.fail(
                Check::Database,
                Code::DatabaseUnreachable,
                format!("{shown_url}: {e}"),
                Some(
                    "check database_url (JIT_DATABASE_URL), that the database runs, and that \
                     this host may reach it"
                        .into(),
                ),
            );
            return;
        }
    };
    match store.schema_status().await {
        Err(e) => r.fail(
            Check::Database,
            Code::DatabaseUnreachable,
            format!("{shown_url}: reading the schema version: {e}"),
            None,
        ),
        Ok(s) if !s.unknown.is_empty() => r.fail(
            Check::Database,
            Code::DatabaseNewerThanBinary,
            format!(
                "{shown_url} has migrations this build does not know ({}): a newer jit used it",
                list(&s.unknown)
            ),
            Some("run the newer jit (see docs/runbooks/ for backup and upgrade)".into()),
        ),
        Ok(s) if !s.pending.is_empty() => r.warn(
            Check::Database,
            Code::DatabasePendingMigrations,
            format!(
                "{shown_url}: migrations {} of this build are not applied yet",
                list(&s.pending)
            ),
            Some("`jit server` applies them at start; back the database up first".into()),
        ),
        Ok(_) => r.ok(
            Check::Database,
            format!("{shown_url} reachable, every migration applied"),
        ),
    }
}

fn list(v: &[i64]) -> String {
    v.iter().map(i64::to_string).collect::<Vec<_>>().join(", ")
}

async fn callbacks(r: &mut Report, cfg: &jit_server::Config) {
    let allow = cfg.callbacks.dangerous_allow_link_local_callbacks;
    if allow {
        r.warn(
            Check::Callbacks,
            Code::DangerousSetting,
            "callbacks.dangerous_allow_link_local_callbacks is on: callbacks may reach \
             link-local and cloud metadata addresses"
                .into(),
            Some("turn it off unless the bridge really is on such an address".into()),
        );
    }
    let Some(u) = &cfg.callbacks.url else {
        r.warn(
            Check::Callbacks,
            Code::CallbacksUrlUnset,
            format!(
                "no callbacks.url: callback events wait in the outbox (for {} days at most)",
                cfg.callbacks.retention_days
            ),
            Some(
                "set callbacks.url (JIT_CALLBACKS_URL) to the bridge's https://…/jit/webhook"
                    .into(),
            ),
        );
        return;
    };
    // The server's own check at start: the same parse, the same address guard.
    let checked = match reqwest::Url::parse(u) {
        Ok(url) => jit_server::callbacks::check_url(&url, allow)
            .await
            .map_err(|e| e.to_string()),
        Err(e) => Err(format!("callbacks.url {u:?}: {e}")),
    };
    match checked {
        Ok(()) => r.ok(Check::Callbacks, format!("callbacks.url {u} accepted")),
        Err(e) => r.fail(
            Check::Callbacks,
            Code::CallbacksUrlRefused,
            e,
            Some(
                "callbacks go to the bridge's URL; link-local and cloud metadata addresses are \
                 refused"
                    .into(),
            ),
        ),
    }
}

async fn provider(r: &mut Report, cfg: &jit_server::Config) {
    let p = match jit_server::serve::build_provider(cfg).await {
        Ok(p) => p,
        Err(e) => {
            r.fail(
                Check::Provider,
                Code::ProviderUnusable,
                format!("{e:#}"),
                None,
            );
            return;
        }
    };
    match p.check().await {
        Err(e) => r.fail(
            Check::Provider,
            Code::ProviderUnusable,
            format!("the {} provider cannot work now: {e}", p.name()),
            Some(match cfg.grants.provider.as_str() {
                "aws-identity-center" => "check the AWS credentials and region, and \
                                          grants.instance_arn / identity_store_id"
                    .into(),
                _ => "check the [grants] settings".into(),
            }),
        ),
        Ok(()) if p.name() == "dry-run" => r.warn(
            Check::Provider,
            Code::ProviderDryRun,
            "grants.provider is dry-run: access is recorded, never granted".into(),
            Some("set grants.provider to aws-identity-center or command for real grants".into()),
        ),
        Ok(()) => r.ok(
            Check::Provider,
            format!("the {} provider is usable", p.name()),
        ),
    }
}

async fn mattermost(
    r: &mut Report,
    b: &jit_mattermost::BridgeConfig,
    clock: &dyn Clock,
    max_skew: i64,
) {
    let http = match jit_http::outbound::client(false) {
        Ok(h) => h,
        Err(e) => {
            r.fail(
                Check::Mattermost,
                Code::MattermostUnreachable,
                jit_http::outbound::describe(&e),
                None,
            );
            return;
        }
    };
    let base = b.mattermost_url.trim_end_matches('/');
    let sent = http
        .get(format!("{base}/api/v4/users/me"))
        .bearer_auth(&b.bot_token)
        .send()
        .await;
    let resp = match sent {
        Ok(resp) => resp,
        Err(e) => {
            r.fail(
                Check::Mattermost,
                Code::MattermostUnreachable,
                format!("{base}: {}", jit_http::outbound::describe(&e)),
                Some("check mattermost_url (JIT_MM_URL)".into()),
            );
            return;
        }
    };
    let now = clock.now();
    let status = resp.status().as_u16();
    let date = date_header(&resp);
    let text = resp.text().await.unwrap_or_default();
    let said = || {
        serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v.get("message")?.as_str().map(str::to_owned))
            .unwrap_or_default()
    };
    match status {
        200..=299 => match serde_json::from_str::<jit_mattermost::client::User>(&text) {
            Ok(u) if u.roles.split_whitespace().any(|x| x == "system_admin") => r.warn(
                Check::Mattermost,
                Code::MattermostBotIsAdmin,
                format!(
                    "the bot token is valid, and @{} is a system admin: more than the bridge needs",
                    u.username
                ),
                Some(
                    "use a bot account with the system_user role (and, for `jit mattermost \
                     setup`, the permission to manage slash commands)"
                        .into(),
                ),
            ),
            Ok(u) => r.ok(
                Check::Mattermost,
                format!("bot token valid: @{} (roles {})", u.username, u.roles),
            ),
            Err(e) => r.fail(
                Check::Mattermost,
                Code::MattermostError,
                format!("{base}/api/v4/users/me answered something that is not a user: {e}"),
                Some("is mattermost_url a Mattermost server?".into()),
            ),
        },
        401 | 403 => r.fail(
            Check::Mattermost,
            Code::MattermostTokenInvalid,
            format!("Mattermost refused the bot token ({status}: {})", said()),
            Some(
                "make a new access token for the bot (System Console > Integrations > Bot \
                 Accounts) and set bot_token (JIT_MM_BOT_TOKEN or JIT_MM_BOT_TOKEN_FILE)"
                    .into(),
            ),
        ),
        _ => r.fail(
            Check::Mattermost,
            Code::MattermostError,
            format!("{base}/api/v4/users/me answered {status}: {}", said()),
            None,
        ),
    }
    skew(
        r,
        &format!("Mattermost at {base}"),
        now,
        date.as_deref(),
        max_skew,
    );
}

async fn backend_clock(r: &mut Report, api: &str, clock: &dyn Clock, max_skew: i64) {
    let peer = format!("the backend at {}", api.trim_end_matches('/'));
    let http = match jit_http::outbound::client(false) {
        Ok(h) => h,
        Err(e) => {
            r.warn(
                Check::Clock,
                Code::ClockUnchecked,
                jit_http::outbound::describe(&e),
                None,
            );
            return;
        }
    };
    match http
        .get(format!("{}/healthz", api.trim_end_matches('/')))
        .send()
        .await
    {
        Ok(resp) => {
            let now = clock.now();
            skew(r, &peer, now, date_header(&resp).as_deref(), max_skew);
        }
        Err(e) => r.warn(
            Check::Clock,
            Code::ClockUnchecked,
            format!(
                "{peer} did not answer ({}); clocks not compared",
                jit_http::outbound::describe(&e)
            ),
            Some("run it with `jit server`, or point --api (JIT_API_URL) at it".into()),
        ),
    }
}

fn date_header(resp: &reqwest::Response) -> Option<String> {
    resp.headers()
        .get(reqwest::header::DATE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// An HTTP `Date` header (IMF-fixdate, `Sun, 06 Nov 1994 08:49:37 GMT`).
fn parse_http_date(v: &str) -> Option<OffsetDateTime> {
    let f = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    time::PrimitiveDateTime::parse(v.trim(), &f)
        .ok()
        .map(time::PrimitiveDateTime::assume_utc)
}

/// Compares `local` with a peer's `Date` against the signature window: beyond it signed
/// calls between the two are refused (`stale_timestamp`); beyond half of it, they soon will be.
fn skew(r: &mut Report, peer: &str, local: OffsetDateTime, date: Option<&str>, max_skew: i64) {
    let Some(remote) = date.and_then(parse_http_date) else {
        r.warn(
            Check::Clock,
            Code::ClockUnchecked,
            format!("{peer} sent no readable Date header; clocks not compared"),
            None,
        );
        return;
    };
    // `Date` has whole seconds: a second of difference is the header's resolution.
    let diff = (remote - local).whole_seconds();
    let ahead = if diff >= 0 { "ahead of" } else { "behind" };
    let hint = || {
        Some(
            "synchronise both clocks with NTP (chrony, systemd-timesyncd); keys.max_skew_secs is \
             the window"
                .to_owned(),
        )
    };
    if diff.abs() > max_skew {
        r.fail(
            Check::Clock,
            Code::ClockSkew,
            format!(
                "{peer} is {} s {ahead} this machine, beyond the {max_skew} s signature window: \
                 signed calls between them are refused",
                diff.abs()
            ),
            hint(),
        );
    } else if diff.abs() > max_skew / 2 {
        r.warn(
            Check::Clock,
            Code::ClockDrift,
            format!(
                "{peer} is {} s {ahead} this machine, more than half the {max_skew} s window",
                diff.abs()
            ),
            hint(),
        );
    } else {
        r.ok(
            Check::Clock,
            format!("{peer} is within {} s of this machine", diff.abs().max(1)),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(unix: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(unix).unwrap()
    }

    #[test]
    fn http_dates_parse() {
        assert_eq!(
            parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(at(784_111_777))
        );
        assert_eq!(parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT"), None);
    }

    #[test]
    fn skew_against_the_window() {
        let date = "Sun, 06 Nov 1994 08:49:37 GMT";
        let cases = [
            (784_111_777, Code::Ok),
            (784_111_777 - 100, Code::Ok),
            (784_111_777 + 200, Code::ClockDrift),
            (784_111_777 - 301, Code::ClockSkew),
            (784_111_777 + 3600, Code::ClockSkew),
        ];
        for (local, code) in cases {
            let mut r = Report::default();
            skew(&mut r, "peer", at(local), Some(date), 300);
            assert_eq!(r.findings[0].code, code, "local {local}");
        }
        let mut r = Report::default();
        skew(&mut r, "peer", at(0), None, 300);
        assert_eq!(r.findings[0].code, Code::ClockUnchecked);
        assert_eq!(r.failed, 0);
    }

    #[test]
    fn the_report_serialises_with_stable_codes() {
        let mut r = Report::default();
        r.fail(
            Check::Keys,
            Code::KeyFileMode,
            "x is readable".into(),
            Some("chmod 600 x".into()),
        );
        r.ok(Check::Database, "fine".into());
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["ok"], false);
        assert_eq!(v["findings"][0]["code"], "key_file_mode");
        assert_eq!(v["findings"][0]["check"], "keys");
        assert_eq!(v["findings"][0]["status"], "fail");
        assert_eq!(v["findings"][1].get("hint"), None);
        assert!(
            r.render()
                .contains("FAIL  keys        key_file_mode: x is readable")
        );
        assert_eq!(local_url("0.0.0.0:8080"), "http://127.0.0.1:8080");
    }
}
