//! Configuration: one typed struct, read from a TOML file, then overridden by `JIT_*`
//! environment variables (`JIT_<NAME>_FILE` reads a value from a file, for secrets), then
//! validated. Unknown keys are refused. With nothing configured the server runs on the
//! embedded default: SQLite and generated key files under `./jit-data/`.

use serde::Deserialize;
use std::path::{Path, PathBuf};

/// Server configuration.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address to listen on.
    pub listen: String,
    /// HTTPS on the listener: certificate and key files, reloaded when they change.
    pub tls: jit_http::tls::TlsConfig,
    /// Proxies (addresses or CIDR blocks) whose `X-Forwarded-For` is believed for the
    /// per-source failure limit. Empty: the header is ignored.
    pub trusted_proxies: Vec<String>,
    /// Where the embedded default keeps its database and generated keys.
    pub data_dir: PathBuf,
    /// `sqlite://PATH` or `postgres://…`; default `sqlite://<data_dir>/jit.db`.
    pub database_url: Option<String>,
    /// Mattermost user ids or emails allowed to change bindings, approvers and policy
    /// (Mattermost system admins always may).
    pub admins: Vec<String>,
    /// Key rings.
    pub keys: KeysConfig,
    /// Replay protection: `memory` (one process) or `database` (several servers). Default:
    /// `memory` on SQLite, `database` on PostgreSQL.
    pub nonce_store: Option<String>,
    /// AWS region for Secrets Manager (and later the grant provider).
    pub aws_region: Option<String>,
    /// AWS endpoint override (VPC endpoints; moto in tests).
    pub aws_endpoint_url: Option<String>,
    /// Seconds a request may take before it is cut off with 503.
    pub request_timeout_secs: u64,
    /// Most connections served at once.
    pub max_connections: usize,
    /// Seconds between reconciler runs (it also runs at start).
    pub reconcile_interval_secs: u64,
    /// Failed signatures a source address may send per minute before it gets 429.
    pub auth_failure_burst: u32,
    /// The access provider.
    pub grants: GrantsConfig,
    /// Where callbacks go.
    pub callbacks: CallbacksConfig,
    /// The drift check.
    pub drift: DriftConfig,
    /// The existing Go plugin as the chat side (off by default).
    pub existing_plugin: ExistingPluginConfig,
}

/// The existing-plugin profile: the backend speaks to the Go plugin `com.dgwhited.jit-access`
/// 0.1.0 exactly as the old backend did (docs/migrating-from-the-go-backend.md). Off by
/// default; logged at start when on.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct ExistingPluginConfig {
    /// Turn the profile on. Callbacks are then signed v1 over the path the plugin sees with
    /// key id `backend`, only the statuses the plugin acts on are sent, config calls and
    /// revokes of another user's grant are accepted from the plugin's keys (audited with the
    /// key id), and bindings made through the plugin get the old defaults.
    pub enabled: bool,
    /// The path the plugin verifies callbacks over. Default: the callback URL's path minus a
    /// leading `/plugins/<id>` (Mattermost strips it before the plugin sees the request), so
    /// `https://mm/plugins/com.dgwhited.jit-access/webhook` is signed over `/webhook`.
    pub callback_signed_path: Option<String>,
    /// Treat keys without a `roles` marking (plain string members, as the runbook's `jq` step
    /// adds them) as the plugin's. A key marked `"roles": ["bridge"]` never vouches.
    pub unmarked_keys_are_the_plugins: bool,
}

impl Default for ExistingPluginConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            callback_signed_path: None,
            unmarked_keys_are_the_plugins: true,
        }
    }
}

/// The drift check (off by default).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct DriftConfig {
    /// Run it.
    pub enabled: bool,
    /// Seconds between runs.
    pub interval_secs: u64,
    /// Remove what it finds (otherwise report only).
    pub remove: bool,
}

impl Default for DriftConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            interval_secs: 3600,
            remove: false,
        }
    }
}

/// The access provider.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct GrantsConfig {
    /// `dry-run` (the embedded default) or `command`.
    pub provider: String,
    /// For `command`: the program and its arguments (no shell); the action is appended.
    pub command: Vec<String>,
    /// For `command`: seconds before the program is killed and the call retried.
    pub command_timeout_secs: u64,
    /// For `aws-identity-center`: the instance ARN (found with `ListInstances` when unset).
    pub instance_arn: Option<String>,
    /// For `aws-identity-center`: the Identity Store id (with `instance_arn`).
    pub identity_store_id: Option<String>,
    /// For `aws-identity-center`: the permission set of grants whose binding names none (the
    /// old backend's `PERMISSION_SET_ARN`).
    pub default_permission_set_arn: Option<String>,
    /// For `aws-identity-center`, opt-in: on an early revoke, also deny the user's sessions
    /// opened before it through the permission set's inline policy (removing the assignment
    /// leaves them running until their session duration ends).
    pub revoke_active_sessions: bool,
}

impl Default for GrantsConfig {
    fn default() -> Self {
        Self {
            provider: "dry-run".into(),
            command: Vec::new(),
            command_timeout_secs: 30,
            instance_arn: None,
            identity_store_id: None,
            default_permission_set_arn: None,
            revoke_active_sessions: false,
        }
    }
}

/// Callback delivery.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct CallbacksConfig {
    /// The bridge's (or the existing plugin's) callback URL; none: events wait in the outbox.
    pub url: Option<String>,
    /// 2 for our bridge; 1 for the existing plugin.
    pub signature_version: u8,
    /// Hours an event is retried before it becomes a dead letter.
    pub max_age_hours: u64,
    /// Allow callback URLs that resolve to link-local or cloud metadata addresses.
    pub dangerous_allow_link_local_callbacks: bool,
    /// Days delivered and dead callback rows are kept (the audit trail keeps the record for
    /// good); with no `url`, undelivered rows older than this are dropped too.
    pub retention_days: u64,
}

impl Default for CallbacksConfig {
    fn default() -> Self {
        Self {
            url: None,
            signature_version: 2,
            max_age_hours: 24,
            dangerous_allow_link_local_callbacks: false,
            retention_days: 7,
        }
    }
}

/// The two key rings and how they are checked.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct KeysConfig {
    /// Bridge-to-backend ring (verifies inbound calls): `file:PATH`, `env:VAR`,
    /// `aws-sm:ID[#STAGE,…]` or a Secrets Manager ARN.
    pub backend: Option<String>,
    /// Backend-to-bridge ring (signs callbacks).
    pub callback: Option<String>,
    /// Pin the callback signing key (otherwise the newest key signs).
    pub callback_signing_key_id: Option<String>,
    /// Full reload period.
    pub refresh_interval_secs: u64,
    /// Allowed clock skew, both directions.
    pub max_skew_secs: i64,
    /// Refuse v1 signatures.
    pub require_v2: bool,
}

impl Default for KeysConfig {
    fn default() -> Self {
        Self {
            backend: None,
            callback: None,
            callback_signing_key_id: None,
            refresh_interval_secs: 60,
            max_skew_secs: 300,
            require_v2: false,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            tls: jit_http::tls::TlsConfig::default(),
            trusted_proxies: Vec::new(),
            data_dir: PathBuf::from("jit-data"),
            database_url: None,
            admins: Vec::new(),
            keys: KeysConfig::default(),
            nonce_store: None,
            aws_region: None,
            aws_endpoint_url: None,
            request_timeout_secs: 30,
            max_connections: 1024,
            reconcile_interval_secs: 60,
            auth_failure_burst: 100,
            grants: GrantsConfig::default(),
            callbacks: CallbacksConfig::default(),
            drift: DriftConfig::default(),
            existing_plugin: ExistingPluginConfig::default(),
        }
    }
}

/// A configuration problem, reported before anything starts.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has unknown keys.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// An environment variable has a bad value.
    #[error("{var}: {message}")]
    Env {
        /// The variable.
        var: String,
        /// Why.
        message: String,
    },
    /// A value is out of range or inconsistent.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// Where environment values come from (a trait so tests need not touch the process
/// environment).
pub trait Env {
    /// The value of `name`, if set.
    fn get(&self, name: &str) -> Option<String>;
}

/// The process environment.
#[derive(Debug, Clone, Copy)]
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn get(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl Env for std::collections::HashMap<String, String> {
    fn get(&self, name: &str) -> Option<String> {
        std::collections::HashMap::get(self, name).cloned()
    }
}

/// Reads `VAR`, or the content of the file named by `VAR_FILE` (trailing newline trimmed).
fn env_value(env: &dyn Env, var: &str) -> Result<Option<String>, ConfigError> {
    if let Some(v) = env.get(var) {
        return Ok(Some(v));
    }
    let file_var = format!("{var}_FILE");
    match env.get(&file_var) {
        None => Ok(None),
        Some(path) => std::fs::read_to_string(&path)
            .map(|s| Some(s.trim_end_matches(['\n', '\r']).to_owned()))
            .map_err(|e| ConfigError::Env {
                var: file_var,
                message: format!("reading {path}: {e}"),
            }),
    }
}

fn parse_env<T: std::str::FromStr>(var: &str, v: &str) -> Result<T, ConfigError> {
    v.trim().parse().map_err(|_| ConfigError::Env {
        var: var.into(),
        message: format!("cannot parse {v:?}"),
    })
}

fn parse_bool(var: &str, v: &str) -> Result<bool, ConfigError> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(ConfigError::Env {
            var: var.into(),
            message: format!("expected true or false, got {v:?}"),
        }),
    }
}

impl Config {
    /// Loads the file (if given), applies environment overrides, validates.
    pub fn load(file: Option<&Path>, env: &dyn Env) -> Result<Self, ConfigError> {
        let mut c = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.into(),
                    source,
                })?;
                jit_http::config_file::parse(path, &text).map_err(|message| ConfigError::Parse {
                    path: path.into(),
                    message,
                })?
            }
            None => Self::default(),
        };
        c.apply_env(env)?;
        c.validate()?;
        Ok(c)
    }

    fn apply_env(&mut self, env: &dyn Env) -> Result<(), ConfigError> {
        macro_rules! text {
            ($var:literal, $field:expr) => {
                if let Some(v) = env_value(env, $var)? {
                    $field = v;
                }
            };
        }
        macro_rules! opt {
            ($var:literal, $field:expr) => {
                if let Some(v) = env_value(env, $var)? {
                    $field = if v.is_empty() { None } else { Some(v) };
                }
            };
        }
        text!("JIT_LISTEN", self.listen);
        if let Some(v) = env_value(env, "JIT_TLS_CERT_FILE")? {
            self.tls.cert_file = (!v.is_empty()).then(|| PathBuf::from(v));
        }
        if let Some(v) = env_value(env, "JIT_TLS_KEY_FILE")? {
            self.tls.key_file = (!v.is_empty()).then(|| PathBuf::from(v));
        }
        if let Some(v) = env_value(env, "JIT_TRUSTED_PROXIES")? {
            self.trusted_proxies = v
                .split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect();
        }
        if let Some(v) = env_value(env, "JIT_DATA_DIR")? {
            self.data_dir = PathBuf::from(v);
        }
        opt!("JIT_DATABASE_URL", self.database_url);
        if let Some(v) = env_value(env, "JIT_ADMINS")? {
            self.admins = v
                .split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect();
        }
        opt!("JIT_KEYS_BACKEND", self.keys.backend);
        opt!("JIT_KEYS_CALLBACK", self.keys.callback);
        opt!(
            "JIT_KEYS_CALLBACK_SIGNING_KEY_ID",
            self.keys.callback_signing_key_id
        );
        if let Some(v) = env_value(env, "JIT_KEYS_REFRESH_INTERVAL_SECS")? {
            self.keys.refresh_interval_secs = parse_env("JIT_KEYS_REFRESH_INTERVAL_SECS", &v)?;
        }
        if let Some(v) = env_value(env, "JIT_KEYS_MAX_SKEW_SECS")? {
            self.keys.max_skew_secs = parse_env("JIT_KEYS_MAX_SKEW_SECS", &v)?;
        }
        if let Some(v) = env_value(env, "JIT_KEYS_REQUIRE_V2")? {
            self.keys.require_v2 = parse_bool("JIT_KEYS_REQUIRE_V2", &v)?;
        }
        opt!("JIT_NONCE_STORE", self.nonce_store);
        opt!("JIT_AWS_REGION", self.aws_region);
        opt!("JIT_AWS_ENDPOINT_URL", self.aws_endpoint_url);
        if let Some(v) = env_value(env, "JIT_REQUEST_TIMEOUT_SECS")? {
            self.request_timeout_secs = parse_env("JIT_REQUEST_TIMEOUT_SECS", &v)?;
        }
        if let Some(v) = env_value(env, "JIT_AUTH_FAILURE_BURST")? {
            self.auth_failure_burst = parse_env("JIT_AUTH_FAILURE_BURST", &v)?;
        }
        if let Some(v) = env_value(env, "JIT_RECONCILE_INTERVAL_SECS")? {
            self.reconcile_interval_secs = parse_env("JIT_RECONCILE_INTERVAL_SECS", &v)?;
        }
        text!("JIT_GRANTS_PROVIDER", self.grants.provider);
        if let Some(v) = env_value(env, "JIT_GRANTS_COMMAND_TIMEOUT_SECS")? {
            self.grants.command_timeout_secs = parse_env("JIT_GRANTS_COMMAND_TIMEOUT_SECS", &v)?;
        }
        if let Some(v) = env_value(env, "JIT_GRANTS_COMMAND")? {
            self.grants.command = v.split_whitespace().map(str::to_owned).collect();
        }
        opt!("JIT_GRANTS_INSTANCE_ARN", self.grants.instance_arn);
        opt!(
            "JIT_GRANTS_IDENTITY_STORE_ID",
            self.grants.identity_store_id
        );
        opt!(
            "JIT_GRANTS_DEFAULT_PERMISSION_SET_ARN",
            self.grants.default_permission_set_arn
        );
        if let Some(v) = env_value(env, "JIT_GRANTS_REVOKE_ACTIVE_SESSIONS")? {
            self.grants.revoke_active_sessions =
                parse_bool("JIT_GRANTS_REVOKE_ACTIVE_SESSIONS", &v)?;
        }
        opt!("JIT_CALLBACKS_URL", self.callbacks.url);
        if let Some(v) = env_value(env, "JIT_DRIFT_ENABLED")? {
            self.drift.enabled = parse_bool("JIT_DRIFT_ENABLED", &v)?;
        }
        if let Some(v) = env_value(env, "JIT_DRIFT_REMOVE")? {
            self.drift.remove = parse_bool("JIT_DRIFT_REMOVE", &v)?;
        }
        if let Some(v) = env_value(env, "JIT_CALLBACKS_RETENTION_DAYS")? {
            self.callbacks.retention_days = parse_env("JIT_CALLBACKS_RETENTION_DAYS", &v)?;
        }
        if let Some(v) = env_value(env, "JIT_CALLBACKS_SIGNATURE_VERSION")? {
            self.callbacks.signature_version = parse_env("JIT_CALLBACKS_SIGNATURE_VERSION", &v)?;
        }
        if let Some(v) = env_value(env, "JIT_DANGEROUS_ALLOW_LINK_LOCAL_CALLBACKS")? {
            self.callbacks.dangerous_allow_link_local_callbacks =
                parse_bool("JIT_DANGEROUS_ALLOW_LINK_LOCAL_CALLBACKS", &v)?;
        }
        if let Some(v) = env_value(env, "JIT_EXISTING_PLUGIN_ENABLED")? {
            self.existing_plugin.enabled = parse_bool("JIT_EXISTING_PLUGIN_ENABLED", &v)?;
        }
        opt!(
            "JIT_EXISTING_PLUGIN_CALLBACK_SIGNED_PATH",
            self.existing_plugin.callback_signed_path
        );
        if let Some(v) = env_value(env, "JIT_MAX_CONNECTIONS")? {
            self.max_connections = parse_env("JIT_MAX_CONNECTIONS", &v)?;
        }
        Ok(())
    }

    /// Refuses values that cannot work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if self.listen.parse::<std::net::SocketAddr>().is_err() {
            return bad(format!("listen must be IP:PORT, got {:?}", self.listen));
        }
        self.tls.paths().map_err(ConfigError::Invalid)?;
        jit_http::TrustedProxies::parse(&self.trusted_proxies).map_err(ConfigError::Invalid)?;
        if !(1..=86_400).contains(&self.keys.refresh_interval_secs) {
            return bad("keys.refresh_interval_secs must be 1 to 86400".into());
        }
        if !(1..=3600).contains(&self.keys.max_skew_secs) {
            return bad("keys.max_skew_secs must be 1 to 3600".into());
        }
        if !(1..=600).contains(&self.request_timeout_secs) {
            return bad("request_timeout_secs must be 1 to 600".into());
        }
        if self.max_connections == 0 {
            return bad("max_connections must be at least 1".into());
        }
        if !(1..=3600).contains(&self.reconcile_interval_secs) {
            return bad("reconcile_interval_secs must be 1 to 3600".into());
        }
        match self.grants.provider.as_str() {
            "dry-run" | "aws-identity-center" => {}
            "command" if !self.grants.command.is_empty() => {}
            "command" => {
                return bad(
                    "grants.command must name the program when grants.provider = \"command\""
                        .into(),
                );
            }
            other => {
                return bad(format!(
                    "grants.provider must be dry-run, command or aws-identity-center, got {other:?}"
                ));
            }
        }
        if let Some(p) = &self.existing_plugin.callback_signed_path
            && !p.starts_with('/')
        {
            return bad(format!(
                "existing_plugin.callback_signed_path must start with /, got {p:?}"
            ));
        }
        if self.grants.revoke_active_sessions && self.grants.provider != "aws-identity-center" {
            return bad(format!(
                "grants.revoke_active_sessions needs grants.provider = \"aws-identity-center\" \
                 (the {:?} provider has no sessions to revoke)",
                self.grants.provider
            ));
        }
        if let Some(arn) = &self.grants.default_permission_set_arn
            && jit_core::types::PermissionSetArn::parse(arn).is_err()
        {
            return bad(format!(
                "grants.default_permission_set_arn is not a permission set ARN: {arn:?}"
            ));
        }
        if let Some(url) = &self.database_url {
            jit_store::DatabaseUrl::parse(url)
                .map_err(|e| ConfigError::Invalid(format!("database_url: {e}")))?;
        }
        if !(1..=3650).contains(&self.callbacks.retention_days) {
            return bad("callbacks.retention_days must be 1 to 3650".into());
        }
        if !matches!(self.callbacks.signature_version, 1 | 2) {
            return bad("callbacks.signature_version must be 1 or 2".into());
        }
        if let Some(u) = &self.callbacks.url
            && !(u.starts_with("http://") || u.starts_with("https://"))
        {
            return bad(format!("callbacks.url must be an http(s) URL, got {u:?}"));
        }
        match self.nonce_store.as_deref() {
            None | Some("memory") | Some("database") => {}
            Some(other) => {
                return bad(format!(
                    "nonce_store must be memory or database, got {other:?}"
                ));
            }
        }
        for (name, v) in [
            ("keys.backend", &self.keys.backend),
            ("keys.callback", &self.keys.callback),
        ] {
            if let Some(v) = v {
                jit_keys::SourceSpec::parse(v)
                    .map_err(|e| ConfigError::Invalid(format!("{name}: {e}")))?;
            }
        }
        Ok(())
    }

    /// The database URL in use.
    pub fn database_url(&self) -> String {
        self.database_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", self.data_dir.join("jit.db").display()))
    }

    /// The database URL with any password replaced by `***`, for logs.
    pub fn database_url_redacted(&self) -> String {
        redact_url(&self.database_url())
    }

    /// Whether the nonce store is the database.
    pub fn durable_nonces(&self) -> bool {
        match self.nonce_store.as_deref() {
            Some("database") => true,
            Some(_) => false,
            // Several processes share these databases: a nonce seen by one is a replay at all.
            None => !self.database_url().starts_with("sqlite:"),
        }
    }
}

/// The URL with every credential replaced by `***`, for logs: the password of
/// `scheme://user:password@host/…`, and the value of any query parameter whose name holds
/// `password`, `secret` or `token` (`?password=…`, `&sslpassword=…`).
pub fn redact_url(url: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let mut out = match base.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((creds, host)) => match creds.split_once(':') {
                Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
                None => base.to_owned(),
            },
            None => base.to_owned(),
        },
        None => base.to_owned(),
    };
    if let Some(q) = query {
        out.push('?');
        let parts: Vec<String> = q
            .split('&')
            .map(|kv| match kv.split_once('=') {
                Some((k, _)) if is_credential_name(k) => format!("{k}=***"),
                _ => kv.to_owned(),
            })
            .collect();
        out.push_str(&parts.join("&"));
    }
    out
}

fn is_credential_name(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    ["password", "passwd", "secret", "token"]
        .iter()
        .any(|w| n.contains(w))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    /// The packaged `/etc/jit/server.toml` (deploy/debian/server.toml).
    fn packaged() -> (PathBuf, String) {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/debian/server.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        (path, text)
    }

    #[test]
    fn the_packaged_config_loads_as_shipped_with_only_data_dir_changed() {
        let (path, _) = packaged();
        let c = Config::load(Some(&path), &env(&[])).unwrap();
        let expected = Config {
            data_dir: PathBuf::from("/var/lib/jit"),
            ..Config::default()
        };
        assert_eq!(c, expected);
    }

    #[test]
    fn every_commented_setting_in_the_packaged_config_is_real_and_at_its_default() {
        let (path, text) = packaged();
        // `# key = value` lines are settings; everything else is prose.
        use jit_http::config_file::commented_setting as setting;
        let uncommented = jit_http::config_file::uncomment_settings(&text);
        let mut c: Config = jit_http::config_file::parse(&path, &uncommented).unwrap();
        // Settings with no default are shown with an example value; the rest must be the
        // default, so the file never lies about what an unset key means.
        c.data_dir = Config::default().data_dir;
        c.database_url = None;
        c.nonce_store = None;
        c.aws_region = None;
        c.aws_endpoint_url = None;
        c.tls = jit_http::tls::TlsConfig::default();
        c.keys.backend = None;
        c.keys.callback = None;
        c.keys.callback_signing_key_id = None;
        c.grants.instance_arn = None;
        c.grants.identity_store_id = None;
        c.grants.default_permission_set_arn = None;
        c.callbacks.url = None;
        c.existing_plugin.callback_signed_path = None;
        assert_eq!(c, Config::default());
        // And every documented key of the file is one of its lines.
        for key in [
            "listen",
            "database_url",
            "admins",
            "nonce_store",
            "aws_region",
            "aws_endpoint_url",
            "request_timeout_secs",
            "max_connections",
            "reconcile_interval_secs",
            "auth_failure_burst",
            "trusted_proxies",
            "cert_file",
            "key_file",
            "backend",
            "callback",
            "callback_signing_key_id",
            "refresh_interval_secs",
            "max_skew_secs",
            "require_v2",
            "provider",
            "command",
            "command_timeout_secs",
            "instance_arn",
            "identity_store_id",
            "default_permission_set_arn",
            "url",
            "signature_version",
            "max_age_hours",
            "retention_days",
            "dangerous_allow_link_local_callbacks",
            "enabled",
            "interval_secs",
            "remove",
            "callback_signed_path",
            "revoke_active_sessions",
            "unmarked_keys_are_the_plugins",
        ] {
            assert!(
                text.lines()
                    .any(|l| setting(l).is_some_and(|s| s.starts_with(&format!("{key} = ")))),
                "{key} is missing from the packaged config"
            );
        }
    }

    #[test]
    fn defaults_are_the_embedded_setup() {
        let c = Config::load(None, &env(&[])).unwrap();
        assert_eq!(c.database_url(), "sqlite://jit-data/jit.db");
        assert!(!c.durable_nonces());
        assert_eq!(c.keys.refresh_interval_secs, 60);
    }

    #[test]
    fn file_then_env_with_file_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("jit.toml");
        std::fs::write(
            &f,
            "listen = \"127.0.0.1:9000\"\nadmins = [\"a@x.com\"]\n[keys]\nrequire_v2 = true\n",
        )
        .unwrap();
        let secret = dir.path().join("db-url");
        std::fs::write(&secret, "postgres://jit:s3cret@db/jit\n").unwrap();
        let c = Config::load(
            Some(&f),
            &env(&[
                ("JIT_LISTEN", "0.0.0.0:8443"),
                ("JIT_DATABASE_URL_FILE", secret.to_str().unwrap()),
            ]),
        )
        .unwrap();
        assert_eq!(c.listen, "0.0.0.0:8443");
        assert_eq!(c.admins, vec!["a@x.com"]);
        assert!(c.keys.require_v2);
        assert!(c.durable_nonces());
        assert_eq!(c.database_url_redacted(), "postgres://jit:***@db/jit");
        assert!(!format!("{:?}", c.database_url_redacted()).contains("s3cret"));
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("jit.toml");
        std::fs::write(&f, "listne = \"x\"\n").unwrap();
        let e = Config::load(Some(&f), &env(&[])).unwrap_err().to_string();
        assert!(e.contains("unknown field"), "{e}");
        assert!(Config::load(None, &env(&[("JIT_LISTEN", "nope")])).is_err());
        assert!(Config::load(None, &env(&[("JIT_KEYS_REQUIRE_V2", "maybe")])).is_err());
        assert!(Config::load(None, &env(&[("JIT_NONCE_STORE", "redis")])).is_err());
        assert!(Config::load(None, &env(&[("JIT_KEYS_BACKEND", "env:")])).is_err());
    }

    #[test]
    fn revoking_active_sessions_is_opt_in_and_only_for_identity_center() {
        assert!(
            !Config::load(None, &env(&[]))
                .unwrap()
                .grants
                .revoke_active_sessions
        );
        let on = Config::load(
            None,
            &env(&[
                ("JIT_GRANTS_PROVIDER", "aws-identity-center"),
                ("JIT_GRANTS_REVOKE_ACTIVE_SESSIONS", "true"),
            ]),
        )
        .unwrap();
        assert!(on.grants.revoke_active_sessions);
        // A setting that would silently do nothing is refused.
        let e = Config::load(None, &env(&[("JIT_GRANTS_REVOKE_ACTIVE_SESSIONS", "true")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("grants.revoke_active_sessions"), "{e}");
    }

    #[test]
    fn a_database_url_of_another_scheme_is_refused() {
        for url in [
            "postgres//host/jit",
            "mysql://u:pw@h/db",
            "./jit.db",
            "sqlite:x.db",
        ] {
            let e = Config::load(None, &env(&[("JIT_DATABASE_URL", url)]))
                .unwrap_err()
                .to_string();
            assert!(e.contains("database_url"), "{url}: {e}");
            assert!(
                e.contains("sqlite://, postgres://, postgresql:// or dynamodb://"),
                "{url}: {e}"
            );
            assert!(!e.contains("pw"), "{e}");
        }
        for url in [
            "sqlite:///var/lib/jit/jit.db",
            "postgresql://h/db",
            "postgres://h/db",
        ] {
            assert!(
                Config::load(None, &env(&[("JIT_DATABASE_URL", url)])).is_ok(),
                "{url}"
            );
        }
    }

    #[test]
    fn every_credential_form_in_a_url_is_masked() {
        for (url, want) in [
            ("postgres://jit:s3cret@db/jit", "postgres://jit:***@db/jit"),
            (
                "postgres://db/jit?user=jit&password=s3cret",
                "postgres://db/jit?user=jit&password=***",
            ),
            (
                "postgresql://jit@db/jit?sslmode=require&sslpassword=s3cret",
                "postgresql://jit@db/jit?sslmode=require&sslpassword=***",
            ),
            (
                "postgres://u:p%40ss:s3cret@db/jit",
                "postgres://u:***@db/jit",
            ),
            ("postgres://jit:s3c@ret@db/jit", "postgres://jit:***@db/jit"),
            ("sqlite://jit-data/jit.db", "sqlite://jit-data/jit.db"),
        ] {
            assert_eq!(redact_url(url), want);
            assert!(!redact_url(url).contains("s3c"), "{url}");
        }
    }

    #[test]
    fn a_toml_syntax_error_names_the_line_and_never_the_value() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("jit.toml");
        std::fs::write(
            &f,
            "listen = \"127.0.0.1:9000\"\ndatabase_url = \"postgres://jit:s3cret@db\n",
        )
        .unwrap();
        let e = Config::load(Some(&f), &env(&[])).unwrap_err().to_string();
        assert!(!e.contains("s3cret"), "{e}");
        assert!(e.contains("line 2"), "{e}");
    }
}
