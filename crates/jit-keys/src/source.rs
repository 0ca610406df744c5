//! Key sources. Each returns a freshly parsed ring or an error; none keeps state the caller
//! must trust except the file source's change marker.

use jit_proto::keyring::{KeyRing, KeyRingError, parse_secret_string};
use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

/// A boxed future returned by [`KeySource::load`].
pub type SourceFuture<'a> = Pin<Box<dyn Future<Output = Result<KeyRing, LoadError>> + Send + 'a>>;

/// Why a key ring could not be loaded. Never contains secret material.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The text was read but is not a valid ring.
    #[error("{source_name}: {error}")]
    Parse {
        source_name: String,
        error: KeyRingError,
    },
    /// The file could not be read.
    #[error("{source_name}: {error}")]
    Io {
        source_name: String,
        error: std::io::Error,
    },
    /// The environment variable is unset or not UTF-8.
    #[error("{0}: environment variable is not set or not valid UTF-8")]
    Env(String),
    /// AWS answered with an error or could not be reached.
    #[error("{source_name}: {message}")]
    Aws {
        source_name: String,
        message: String,
    },
    /// The ring would share a secret with the other ring.
    #[error("{0}")]
    SharedSecret(String),
}

/// Where a ring is loaded from.
pub trait KeySource: Send + Sync + fmt::Debug {
    /// A name for logs: the path, variable name or secret id (never the content).
    fn describe(&self) -> String;

    /// Loads the whole ring.
    fn load(&self) -> SourceFuture<'_>;

    /// True when a cheap check says the content may have changed since the last load (only
    /// files can tell; other sources answer false and rely on the periodic refresh).
    fn changed(&self) -> bool {
        false
    }
}

/// A source specification as it appears in configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceSpec {
    /// `file:PATH` (or a bare path).
    File(PathBuf),
    /// `env:VAR`.
    Env(String),
    /// `aws-sm:SECRET_ID_OR_ARN`, with extra verify-only stages.
    SecretsManager {
        secret_id: String,
        extra_stages: Vec<String>,
    },
}

impl SourceSpec {
    /// Parses `file:PATH`, `env:VAR`, `aws-sm:ID[#STAGE,STAGE]`, `arn:aws:secretsmanager:…`, or a
    /// bare path.
    pub fn parse(s: &str) -> Result<Self, String> {
        let split_stages = |rest: &str| -> (String, Vec<String>) {
            match rest.split_once('#') {
                Some((id, stages)) => (
                    id.to_owned(),
                    stages
                        .split(',')
                        .filter(|x| !x.is_empty())
                        .map(str::to_owned)
                        .collect(),
                ),
                None => (rest.to_owned(), Vec::new()),
            }
        };
        if let Some(p) = s.strip_prefix("file:") {
            return Ok(Self::File(PathBuf::from(p)));
        }
        if let Some(v) = s.strip_prefix("env:") {
            if v.is_empty() {
                return Err("env: needs a variable name".into());
            }
            return Ok(Self::Env(v.to_owned()));
        }
        if let Some(rest) = s.strip_prefix("aws-sm:") {
            let (secret_id, extra_stages) = split_stages(rest);
            if secret_id.is_empty() {
                return Err("aws-sm: needs a secret id or ARN".into());
            }
            return Ok(Self::SecretsManager {
                secret_id,
                extra_stages,
            });
        }
        if s.starts_with("arn:aws:secretsmanager:") {
            let (secret_id, extra_stages) = split_stages(s);
            return Ok(Self::SecretsManager {
                secret_id,
                extra_stages,
            });
        }
        if s.is_empty() {
            return Err("empty key source".into());
        }
        Ok(Self::File(PathBuf::from(s)))
    }
}

impl fmt::Display for SourceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(p) => write!(f, "file:{}", p.display()),
            Self::Env(v) => write!(f, "env:{v}"),
            Self::SecretsManager {
                secret_id,
                extra_stages,
            } if extra_stages.is_empty() => {
                write!(f, "aws-sm:{secret_id}")
            }
            Self::SecretsManager {
                secret_id,
                extra_stages,
            } => {
                write!(f, "aws-sm:{secret_id}#{}", extra_stages.join(","))
            }
        }
    }
}

/// A JSON (or plain) key file, reloaded when its modification time, size or inode changes.
#[derive(Debug)]
pub struct FileSource {
    path: PathBuf,
    marker: Mutex<Option<FileMarker>>,
    /// The unsafe mode last warned about (warned once per mode, not at every reload).
    mode_warned: Mutex<Option<u32>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct FileMarker {
    modified: Option<SystemTime>,
    len: u64,
    ino: u64,
}

fn marker(path: &Path) -> Option<FileMarker> {
    let m = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    let ino = std::os::unix::fs::MetadataExt::ino(&m);
    #[cfg(not(unix))]
    let ino = 0;
    Some(FileMarker {
        modified: m.modified().ok(),
        len: m.len(),
        ino,
    })
}

impl FileSource {
    /// A source reading `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            marker: Mutex::new(None),
            mode_warned: Mutex::new(None),
        }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// [`KeySource::describe`], and for a relative path also the absolute path it names, so
    /// a missing default (`file:jit-data/keys/backend.json`) says where it was looked for.
    fn describe_where(&self) -> String {
        match absolute_if_relative(&self.path) {
            Some(abs) => format!("{} (looked at {})", self.describe(), abs.display()),
            None => self.describe(),
        }
    }
}

/// The absolute path a relative `path` names from the current directory; `None` when `path`
/// is already absolute (or the current directory is unknown).
pub fn absolute_if_relative(path: &Path) -> Option<PathBuf> {
    if path.is_absolute() {
        return None;
    }
    std::path::absolute(path).ok()
}

/// The mode of a key file when it lets its group or others read or write it (`Some(0o644)`),
/// `None` when it is private. The one rule for key-file modes: the file source warns with it
/// on load and `jit doctor` reports it. Always `None` off Unix.
pub fn unsafe_key_file_mode(path: &Path) -> std::io::Result<Option<u32>> {
    let m = std::fs::metadata(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = m.permissions().mode() & 0o777;
        Ok((mode & 0o077 != 0).then_some(mode))
    }
    #[cfg(not(unix))]
    {
        let _ = m;
        Ok(None)
    }
}

impl KeySource for FileSource {
    fn describe(&self) -> String {
        format!("file:{}", self.path.display())
    }

    fn load(&self) -> SourceFuture<'_> {
        Box::pin(async move {
            let before = marker(&self.path);
            // Whatever this load finds, the file as it is now has been seen: a broken file is
            // reloaded (and reported) again when it changes, not at every poll.
            if let Ok(mut m) = self.marker.lock() {
                *m = before.clone();
            }
            let text = tokio::fs::read_to_string(&self.path)
                .await
                .map(zeroize::Zeroizing::new)
                .map_err(|error| LoadError::Io {
                    source_name: self.describe_where(),
                    error,
                })?;
            if let Ok(unsafe_mode) = unsafe_key_file_mode(&self.path) {
                let new = self
                    .mode_warned
                    .lock()
                    .map(|mut w| std::mem::replace(&mut *w, unsafe_mode) != unsafe_mode)
                    .unwrap_or(true);
                if let Some(mode) = unsafe_mode
                    && new
                {
                    tracing::warn!(
                        source = %self.describe(),
                        mode = format!("{mode:o}"),
                        "key file is readable by group or others; chmod 600 it"
                    );
                }
            }
            let ring = KeyRing::parse(&text).map_err(|error| LoadError::Parse {
                source_name: self.describe(),
                error,
            })?;
            Ok(ring)
        })
    }

    fn changed(&self) -> bool {
        let now = marker(&self.path);
        self.marker.lock().map(|m| *m != now).unwrap_or(true)
    }
}

/// A ring from an environment variable, read once at construction (environment variables do
/// not change under a running process).
pub struct EnvSource {
    var: String,
    text: Option<zeroize::Zeroizing<String>>,
}

impl EnvSource {
    /// Reads `var` now.
    pub fn new(var: impl Into<String>) -> Self {
        let var = var.into();
        let text = std::env::var(&var).ok().map(zeroize::Zeroizing::new);
        Self { var, text }
    }
}

impl fmt::Debug for EnvSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EnvSource")
            .field("var", &self.var)
            .finish_non_exhaustive()
    }
}

impl KeySource for EnvSource {
    fn describe(&self) -> String {
        format!("env:{}", self.var)
    }

    fn load(&self) -> SourceFuture<'_> {
        let r = match &self.text {
            None => Err(LoadError::Env(self.describe())),
            Some(t) => KeyRing::parse(t).map_err(|error| LoadError::Parse {
                source_name: self.describe(),
                error,
            }),
        };
        Box::pin(std::future::ready(r))
    }
}

/// Builds the AWS SDK configuration: the default credential chain and region, an optional
/// endpoint override (moto in tests, VPC endpoints in production), and short timeouts so a
/// dead endpoint costs one failed refresh, not a hung process.
pub async fn aws_sdk_config(
    region: Option<String>,
    endpoint_url: Option<String>,
) -> aws_config::SdkConfig {
    let timeouts = aws_config::timeout::TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(3))
        .operation_attempt_timeout(Duration::from_secs(5))
        .operation_timeout(Duration::from_secs(15))
        .build();
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .timeout_config(timeouts)
        .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(2));
    if let Some(r) = region {
        loader = loader.region(aws_config::Region::new(r));
    }
    if let Some(e) = endpoint_url {
        loader = loader.endpoint_url(e);
    }
    loader.load().await
}

/// The source a spec names. The AWS SDK (and with it the credential and region chains, which
/// may ask the instance metadata service) is built only for a Secrets Manager source, so a
/// process with file or environment rings never touches AWS.
pub async fn open_source(
    spec: &SourceSpec,
    aws_region: Option<String>,
    aws_endpoint_url: Option<String>,
) -> std::sync::Arc<dyn KeySource> {
    match spec {
        SourceSpec::File(p) => std::sync::Arc::new(FileSource::new(p.clone())),
        SourceSpec::Env(v) => std::sync::Arc::new(EnvSource::new(v.clone())),
        SourceSpec::SecretsManager {
            secret_id,
            extra_stages,
        } => {
            let sdk = aws_sdk_config(aws_region, aws_endpoint_url).await;
            std::sync::Arc::new(SecretsManagerSource::new(
                &sdk,
                secret_id.clone(),
                extra_stages.clone(),
            ))
        }
    }
}

/// A ring in AWS Secrets Manager. The `AWSCURRENT` stage is always asked for explicitly (moto,
/// and real AWS right after a stage move, can answer a stage-less read with a stale version);
/// extra stages such as `AWSPENDING` or `AWSPREVIOUS` add keys that verify but never sign.
#[derive(Debug, Clone)]
pub struct SecretsManagerSource {
    client: aws_sdk_secretsmanager::Client,
    secret_id: String,
    extra_stages: Vec<String>,
}

impl SecretsManagerSource {
    /// A source for `secret_id` (name or ARN).
    pub fn new(
        config: &aws_config::SdkConfig,
        secret_id: impl Into<String>,
        extra_stages: Vec<String>,
    ) -> Self {
        Self {
            client: aws_sdk_secretsmanager::Client::new(config),
            secret_id: secret_id.into(),
            extra_stages,
        }
    }

    async fn stage(&self, stage: &str) -> Result<Option<zeroize::Zeroizing<String>>, LoadError> {
        let out = self
            .client
            .get_secret_value()
            .secret_id(&self.secret_id)
            .version_stage(stage)
            .send()
            .await;
        match out {
            Ok(o) => Ok(o.secret_string.map(zeroize::Zeroizing::new)),
            Err(e) => {
                let not_found = e
                    .as_service_error()
                    .is_some_and(|se| se.is_resource_not_found_exception());
                if not_found && stage != "AWSCURRENT" {
                    return Ok(None);
                }
                Err(LoadError::Aws {
                    source_name: self.describe(),
                    message: format!("GetSecretValue({stage}) failed: {}", error_chain(&e)),
                })
            }
        }
    }
}

/// The error and its sources on one line (the SDK's `Display` alone says "service error").
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

impl KeySource for SecretsManagerSource {
    fn describe(&self) -> String {
        format!("aws-sm:{}", self.secret_id)
    }

    fn load(&self) -> SourceFuture<'_> {
        Box::pin(async move {
            let current = self
                .stage("AWSCURRENT")
                .await?
                .ok_or_else(|| LoadError::Aws {
                    source_name: self.describe(),
                    message: "AWSCURRENT has no SecretString (binary secrets are not supported)"
                        .into(),
                })?;
            let mut ring = KeyRing::parse(&current).map_err(|error| LoadError::Parse {
                source_name: self.describe(),
                error,
            })?;
            for stage in &self.extra_stages {
                if let Some(text) = self.stage(stage).await? {
                    let entries = parse_secret_string(&text).map_err(|error| LoadError::Parse {
                        source_name: format!("{}#{stage}", self.describe()),
                        error,
                    })?;
                    ring.add_verify_only(entries);
                }
            }
            Ok(ring)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_specs() {
        assert_eq!(
            SourceSpec::parse("keys.json"),
            Ok(SourceSpec::File("keys.json".into()))
        );
        assert_eq!(
            SourceSpec::parse("file:/a b"),
            Ok(SourceSpec::File("/a b".into()))
        );
        assert_eq!(
            SourceSpec::parse("env:JIT_KEYS"),
            Ok(SourceSpec::Env("JIT_KEYS".into()))
        );
        assert_eq!(
            SourceSpec::parse("aws-sm:jit-signing-key#AWSPENDING,AWSPREVIOUS"),
            Ok(SourceSpec::SecretsManager {
                secret_id: "jit-signing-key".into(),
                extra_stages: vec!["AWSPENDING".into(), "AWSPREVIOUS".into()]
            })
        );
        let arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:jit-signing-key";
        assert_eq!(
            SourceSpec::parse(arn),
            Ok(SourceSpec::SecretsManager {
                secret_id: arn.into(),
                extra_stages: vec![]
            })
        );
        assert!(SourceSpec::parse("env:").is_err());
        assert!(SourceSpec::parse("").is_err());
        for s in ["file:k.json", "env:X", "aws-sm:x#AWSPENDING"] {
            assert_eq!(SourceSpec::parse(s).unwrap().to_string(), s);
        }
    }
}
