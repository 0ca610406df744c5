//! Bridge configuration: a TOML file, then `JIT_MM_*` environment variables (`_FILE` variants
//! for secrets). Unknown keys are refused; secrets print as `***`.

use serde::Deserialize;
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// `jit mattermost` settings.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BridgeConfig {
    /// Address to listen on.
    pub listen: String,
    /// HTTPS on the listener: certificate and key files, reloaded when they change.
    pub tls: jit_http::tls::TlsConfig,
    /// Proxies (addresses or CIDR blocks) whose `X-Forwarded-For` is believed for the
    /// per-source failure limit. Empty: the header is ignored.
    pub trusted_proxies: Vec<String>,
    /// How Mattermost reaches the bridge (button and dialog URLs point here).
    pub public_url: String,
    /// The Mattermost server.
    pub mattermost_url: String,
    /// The bot account's access token (secret).
    pub bot_token: String,
    /// Slash command tokens accepted (several, for rotation; secret), besides those in the
    /// slash tokens file.
    pub slash_tokens: Vec<String>,
    /// The file `jit mattermost setup` writes the command's token to, read again whenever it
    /// changes; `<data_dir>/keys/slash-tokens` when unset ([`Self::slash_tokens_path`]).
    pub slash_tokens_file: Option<PathBuf>,
    /// The backend API.
    pub backend_url: String,
    /// Bridge-to-backend ring (the bridge signs with its newest key).
    pub backend_keys: String,
    /// Pin the signing key (the runbook's "Signing Key ID"); otherwise the newest key signs.
    pub backend_signing_key_id: Option<String>,
    /// Callback ring (verifies the backend's callbacks).
    pub callback_keys: String,
    /// Key ring reload period.
    pub refresh_interval_secs: u64,
    /// AWS region, for rings in Secrets Manager.
    pub aws_region: Option<String>,
    /// AWS endpoint override, for rings in Secrets Manager.
    pub aws_endpoint_url: Option<String>,
    /// Secret that MACs button contexts and dialog state; generated into `data_dir` if empty.
    pub bridge_secret: String,
    /// Where a generated bridge secret is kept.
    pub data_dir: PathBuf,
    /// Ticket link template, e.g. `https://jira.example.com/browse/{ticket}`.
    pub ticket_url_template: Option<String>,
    /// How long a card's buttons stay valid, in seconds (dialogs expire after an hour).
    pub action_ttl_secs: i64,
    /// Seconds a request may take before it is answered 503 `timeout` (Mattermost gives up on
    /// a slash command after 30 s).
    pub request_timeout_secs: u64,
    /// Most connections open at once; more wait until one closes.
    pub max_connections: usize,
    /// Failed tokens and callback signatures a source address may send per minute before it
    /// gets 429.
    pub auth_failure_burst: u32,
}

impl std::fmt::Debug for BridgeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BridgeConfig")
            .field("listen", &self.listen)
            .field("public_url", &self.public_url)
            .field("mattermost_url", &self.mattermost_url)
            .field("bot_token", &"***")
            .field(
                "slash_tokens",
                &format!("{} × ***", self.slash_tokens.len()),
            )
            .field("slash_tokens_file", &self.slash_tokens_path())
            .field("backend_url", &self.backend_url)
            .field("backend_keys", &self.backend_keys)
            .field("callback_keys", &self.callback_keys)
            .field("bridge_secret", &"***")
            .finish_non_exhaustive()
    }
}

impl Default for BridgeConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8081".into(),
            tls: jit_http::tls::TlsConfig::default(),
            trusted_proxies: Vec::new(),
            public_url: "http://127.0.0.1:8081".into(),
            mattermost_url: "http://127.0.0.1:8065".into(),
            bot_token: String::new(),
            slash_tokens: Vec::new(),
            slash_tokens_file: None,
            backend_url: "http://127.0.0.1:8080".into(),
            backend_keys: "file:jit-data/keys/backend.json".into(),
            backend_signing_key_id: None,
            callback_keys: "file:jit-data/keys/callback.json".into(),
            refresh_interval_secs: 60,
            aws_region: None,
            aws_endpoint_url: None,
            bridge_secret: String::new(),
            data_dir: PathBuf::from("jit-data"),
            ticket_url_template: None,
            action_ttl_secs: 7 * 24 * 3600,
            request_timeout_secs: 25,
            max_connections: 1024,
            auth_failure_burst: 100,
        }
    }
}

fn env(name: &str) -> anyhow::Result<Option<String>> {
    if let Ok(v) = std::env::var(name) {
        return Ok(Some(v));
    }
    match std::env::var(format!("{name}_FILE")) {
        Ok(p) => Ok(Some(
            std::fs::read_to_string(&p)
                .map(|s| s.trim_end().to_owned())
                .map_err(|e| anyhow::anyhow!("{name}_FILE {p}: {e}"))?,
        )),
        Err(_) => Ok(None),
    }
}

impl BridgeConfig {
    /// File (optional), then environment, then validation.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Self> {
        let mut c: Self = match file {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .map_err(|e| anyhow::anyhow!("reading {}: {e}", p.display()))?;
                jit_http::config_file::parse(p, &text).map_err(anyhow::Error::msg)?
            }
            None => Self::default(),
        };
        let set = |field: &mut String, name: &str| -> anyhow::Result<()> {
            if let Some(v) = env(name)? {
                *field = v;
            }
            Ok(())
        };
        set(&mut c.listen, "JIT_MM_LISTEN")?;
        set(&mut c.public_url, "JIT_MM_PUBLIC_URL")?;
        set(&mut c.mattermost_url, "JIT_MM_URL")?;
        set(&mut c.bot_token, "JIT_MM_BOT_TOKEN")?;
        set(&mut c.backend_url, "JIT_MM_BACKEND_URL")?;
        set(&mut c.backend_keys, "JIT_MM_BACKEND_KEYS")?;
        set(&mut c.callback_keys, "JIT_MM_CALLBACK_KEYS")?;
        set(&mut c.bridge_secret, "JIT_MM_BRIDGE_SECRET")?;
        // `JIT_MM_SLASH_TOKENS_FILE` names the slash tokens file, which the bridge reads again
        // when it changes (and which accepts the comma-separated list it used to hold).
        if let Ok(v) = std::env::var("JIT_MM_SLASH_TOKENS") {
            c.slash_tokens = v
                .split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect();
        }
        if let Ok(v) = std::env::var("JIT_MM_SLASH_TOKENS_FILE") {
            c.slash_tokens_file = (!v.is_empty()).then(|| PathBuf::from(v));
        }
        if let Some(v) = env("JIT_MM_BACKEND_SIGNING_KEY_ID")? {
            c.backend_signing_key_id = Some(v).filter(|s| !s.is_empty());
        }
        if let Some(v) = env("JIT_MM_AWS_REGION")? {
            c.aws_region = Some(v).filter(|s| !s.is_empty());
        }
        if let Some(v) = env("JIT_MM_AWS_ENDPOINT_URL")? {
            c.aws_endpoint_url = Some(v).filter(|s| !s.is_empty());
        }
        if let Some(v) = env("JIT_MM_TLS_CERT_FILE")? {
            c.tls.cert_file = (!v.is_empty()).then(|| PathBuf::from(v));
        }
        if let Some(v) = env("JIT_MM_TLS_KEY_FILE")? {
            c.tls.key_file = (!v.is_empty()).then(|| PathBuf::from(v));
        }
        if let Some(v) = env("JIT_MM_TRUSTED_PROXIES")? {
            c.trusted_proxies = v
                .split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect();
        }
        if let Some(v) = env("JIT_MM_DATA_DIR")? {
            c.data_dir = PathBuf::from(v);
        }
        fn num<T: std::str::FromStr>(name: &str, v: &str) -> anyhow::Result<T> {
            v.trim()
                .parse()
                .map_err(|_| anyhow::anyhow!("{name} must be a whole number, got {v:?}"))
        }
        if let Some(v) = env("JIT_MM_REQUEST_TIMEOUT_SECS")? {
            c.request_timeout_secs = num("JIT_MM_REQUEST_TIMEOUT_SECS", &v)?;
        }
        if let Some(v) = env("JIT_MM_MAX_CONNECTIONS")? {
            c.max_connections = num("JIT_MM_MAX_CONNECTIONS", &v)?;
        }
        if let Some(v) = env("JIT_MM_AUTH_FAILURE_BURST")? {
            c.auth_failure_burst = num("JIT_MM_AUTH_FAILURE_BURST", &v)?;
        }
        c.validate()?;
        Ok(c)
    }

    /// Refuses what cannot work.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.listen.parse::<std::net::SocketAddr>().is_ok(),
            "listen must be IP:PORT"
        );
        self.tls.paths().map_err(anyhow::Error::msg)?;
        jit_http::TrustedProxies::parse(&self.trusted_proxies).map_err(anyhow::Error::msg)?;
        anyhow::ensure!(
            !self.bot_token.is_empty(),
            "bot_token is required (JIT_MM_BOT_TOKEN or JIT_MM_BOT_TOKEN_FILE)"
        );
        // No token is required here: `jit mattermost setup` writes the command's token into
        // the slash tokens file, which a running bridge picks up.
        // Mattermost's tokens are 26 characters; a short one is guessable, or a typo.
        anyhow::ensure!(
            self.slash_tokens
                .iter()
                .all(|t| t.len() >= crate::slash_tokens::MIN_TOKEN_LEN),
            "slash command tokens must be at least 16 characters (Mattermost's are 26)"
        );
        for u in [&self.public_url, &self.mattermost_url, &self.backend_url] {
            anyhow::ensure!(
                u.starts_with("http://") || u.starts_with("https://"),
                "{u:?} is not an http(s) URL"
            );
        }
        // The bridge secret keys the action tokens on card buttons; a short one is guessable.
        anyhow::ensure!(
            self.bridge_secret.is_empty() || self.bridge_secret.chars().count() >= 32,
            "bridge_secret must be at least 32 characters (a generated one is 43); \
             leave it unset to have one generated and kept in the data directory"
        );
        anyhow::ensure!(
            (60..=30 * 24 * 3600).contains(&self.action_ttl_secs),
            "action_ttl_secs must be 60 s to 30 days"
        );
        anyhow::ensure!(
            (1..=300).contains(&self.request_timeout_secs),
            "request_timeout_secs must be 1 to 300"
        );
        anyhow::ensure!(
            self.max_connections >= 1,
            "max_connections must be at least 1"
        );
        anyhow::ensure!(
            self.auth_failure_burst >= 1,
            "auth_failure_burst must be at least 1"
        );
        Ok(())
    }

    /// The slash tokens file: `slash_tokens_file`, or `<data_dir>/keys/slash-tokens`.
    pub fn slash_tokens_path(&self) -> PathBuf {
        self.slash_tokens_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join("keys/slash-tokens"))
    }

    /// The bridge secret, generating and keeping one (mode 0600) when none is configured.
    pub fn bridge_secret(&self) -> anyhow::Result<Zeroizing<Vec<u8>>> {
        if !self.bridge_secret.is_empty() {
            return Ok(Zeroizing::new(self.bridge_secret.as_bytes().to_vec()));
        }
        let path = self.data_dir.join("keys/bridge-secret");
        if let Ok(s) = std::fs::read_to_string(&path) {
            let s = Zeroizing::new(s);
            anyhow::ensure!(
                s.trim().len() >= 32,
                "{} is shorter than 32 characters; delete it to generate a new one",
                path.display()
            );
            return Ok(Zeroizing::new(s.trim().as_bytes().to_vec()));
        }
        let secret = jit_proto::keyring::Secret::generate()
            .map_err(|e| anyhow::anyhow!("random generator: {e}"))?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        std::io::Write::write_all(&mut opts.open(&path)?, secret.expose())?;
        Ok(Zeroizing::new(secret.expose().to_vec()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> BridgeConfig {
        BridgeConfig {
            bot_token: "bot".into(),
            slash_tokens: vec!["abcdefghijklmnopqrstuvwxyz".into()],
            ..BridgeConfig::default()
        }
    }

    #[test]
    fn every_commented_setting_in_the_packaged_config_is_real_and_at_its_default() {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/debian/mattermost.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        // As shipped: only the data directory and the rings in it differ from the defaults.
        let shipped: BridgeConfig = jit_http::config_file::parse(&path, &text).unwrap();
        let expected = BridgeConfig {
            data_dir: PathBuf::from("/var/lib/jit"),
            backend_keys: "file:/var/lib/jit/keys/backend.json".into(),
            callback_keys: "file:/var/lib/jit/keys/callback.json".into(),
            ..BridgeConfig::default()
        };
        assert_eq!(format!("{shipped:?}"), format!("{expected:?}"));
        assert_eq!(shipped.action_ttl_secs, expected.action_ttl_secs);
        // Uncommented, every `# key = value` line is a real key at its default (settings with
        // no default show an example, reset here).
        let uncommented = jit_http::config_file::uncomment_settings(&text);
        let mut c: BridgeConfig = jit_http::config_file::parse(&path, &uncommented).unwrap();
        c.slash_tokens_file = None;
        c.backend_signing_key_id = None;
        c.aws_region = None;
        c.aws_endpoint_url = None;
        c.ticket_url_template = None;
        c.tls = jit_http::tls::TlsConfig::default();
        let d = BridgeConfig::default();
        let expected = BridgeConfig {
            data_dir: PathBuf::from("/var/lib/jit"),
            backend_keys: "file:/var/lib/jit/keys/backend.json".into(),
            callback_keys: "file:/var/lib/jit/keys/callback.json".into(),
            ..BridgeConfig::default()
        };
        assert_eq!(format!("{c:?}"), format!("{expected:?}"));
        for (a, b) in [
            (c.action_ttl_secs, d.action_ttl_secs),
            (
                c.refresh_interval_secs as i64,
                d.refresh_interval_secs as i64,
            ),
            (c.request_timeout_secs as i64, d.request_timeout_secs as i64),
            (c.max_connections as i64, d.max_connections as i64),
            (
                i64::from(c.auth_failure_burst),
                i64::from(d.auth_failure_burst),
            ),
        ] {
            assert_eq!(a, b);
        }
        assert_eq!(
            (
                c.bot_token.as_str(),
                c.bridge_secret.as_str(),
                c.public_url.as_str()
            ),
            ("", "", d.public_url.as_str())
        );
        assert_eq!((c.slash_tokens.len(), c.trusted_proxies.len()), (0, 0));
        assert_eq!(
            (c.mattermost_url, c.backend_url),
            (d.mattermost_url, d.backend_url)
        );
    }

    #[test]
    fn short_slash_tokens_and_bad_limits_are_refused() {
        assert!(valid().validate().is_ok());
        let short = BridgeConfig {
            slash_tokens: vec!["abcdefghijklmnopqrstuvwxyz".into(), "placeholder".into()],
            ..valid()
        };
        let e = short.validate().unwrap_err().to_string();
        assert!(e.contains("at least 16 characters"), "{e}");
        let weak = BridgeConfig {
            bridge_secret: "abc".into(),
            ..valid()
        };
        let e = weak.validate().unwrap_err().to_string();
        assert!(e.contains("at least 32 characters"), "{e}");
        assert!(!e.contains("abc"), "{e}");
        let strong = BridgeConfig {
            bridge_secret: "x".repeat(32),
            ..valid()
        };
        assert!(strong.validate().is_ok());
        for bad in [
            BridgeConfig {
                request_timeout_secs: 0,
                ..valid()
            },
            BridgeConfig {
                max_connections: 0,
                ..valid()
            },
            BridgeConfig {
                auth_failure_burst: 0,
                ..valid()
            },
        ] {
            assert!(bad.validate().is_err());
        }
    }
}
