//! `jit keys …`: generate, and on a ring kept in a file or in AWS Secrets Manager — status,
//! rotate, retire, rollback, auto. Nothing restarts: every verifier reloads its ring by itself.

use crate::error::CliError;
use clap::{Args, Subcommand};
use jit_keys::rotation::{self, EditError};
use jit_proto::{Clock, SystemClock};
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Print a new key (32 random bytes, hex) as JSON: `{"key-YYYYMMDD": "<hex>"}`, ready to
    /// merge into a ring with `jq -s '.[0] * .[1]' ring.json -` or the runbook's step 2.
    Generate {
        /// Id prefix: `key` for the bridge-to-backend ring, `cb` for callbacks.
        #[arg(long, default_value = "key")]
        prefix: String,
        /// Use this id instead of `<prefix>-YYYYMMDD`.
        #[arg(long)]
        id: Option<String>,
        /// Write the richer form with `created_at` (verifiers read both).
        #[arg(long)]
        rich: bool,
    },
    /// Every key with its dates, which one signs, its last use at each verifier, and a verdict:
    /// whether it can be retired with this overlap, and from when.
    Status {
        #[command(flatten)]
        ring: RingArgs,
        /// Hours a key must have gone unused (as for `retire`).
        #[arg(long, default_value_t = 24)]
        overlap_hours: i64,
    },
    /// Add a new key that starts signing after the activation delay.
    Rotate {
        #[command(flatten)]
        ring: RingArgs,
        /// Seconds before the new key signs (default: two refresh intervals, 120 s).
        #[arg(long, default_value_t = 120)]
        activation_delay_secs: i64,
    },
    /// Remove a key that no longer signs and that no verifier used within the overlap.
    Retire {
        /// The key id.
        id: String,
        #[command(flatten)]
        ring: RingArgs,
        /// Hours a key must have gone unused.
        #[arg(long, default_value_t = 24)]
        overlap_hours: i64,
        /// Retire even if it was used recently (loudly).
        #[arg(long)]
        force: bool,
        /// Do not keep a backup of the removed key.
        #[arg(long)]
        no_backup: bool,
    },
    /// Put back the last retired key and make it the signing key again.
    Rollback(RingArgs),
    /// Sign callbacks with this key from now on, on the backend at `--api` (`--ring callback`).
    /// The existing plugin holds one callback secret: run this at the moment its
    /// `CallbackSigningSecret` is edited, after `rotate` added the key, and no callback is
    /// refused.
    Use {
        /// The key id (already in the callback ring).
        id: String,
        #[command(flatten)]
        ring: RingArgs,
    },
    /// For cron: rotate when the newest key is older than --max-age-days; retire keys unused for
    /// the overlap.
    Auto {
        #[command(flatten)]
        ring: RingArgs,
        /// Rotate when the newest key is older than this.
        #[arg(long, default_value_t = 90)]
        max_age_days: i64,
        /// Hours a key must have gone unused to be retired.
        #[arg(long, default_value_t = 24)]
        overlap_hours: i64,
        /// Seconds before a new key signs.
        #[arg(long, default_value_t = 120)]
        activation_delay_secs: i64,
    },
}

#[derive(Debug, Args)]
pub struct RingArgs {
    /// `backend` (bridge-to-backend calls) or `callback`.
    #[arg(long, default_value = "backend")]
    ring: String,
    /// Where the ring is kept: `file:PATH` (default `file:jit-data/keys/<ring>.json`),
    /// `aws-sm:ID` or a Secrets Manager ARN.
    #[arg(long)]
    source: Option<String>,
    /// The backend's URL, to read when each key was last used (`GET /admin/keys/usage`).
    #[arg(long, env = "JIT_API_URL")]
    api: Option<String>,
    /// AWS region (Secrets Manager sources).
    #[arg(long, env = "JIT_AWS_REGION")]
    aws_region: Option<String>,
    /// AWS endpoint override (Secrets Manager sources).
    #[arg(long, env = "JIT_AWS_ENDPOINT_URL")]
    aws_endpoint_url: Option<String>,
    /// Where retired keys are backed up (default: `retired/` beside a file ring, else
    /// `jit-data/keys/retired`).
    #[arg(long)]
    backup_dir: Option<PathBuf>,
    /// Keys to sign that call with (default: the backend ring file).
    #[arg(
        long,
        env = "JIT_CLIENT_KEYS",
        default_value = "file:jit-data/keys/backend.json"
    )]
    api_keys: String,
}

impl RingArgs {
    fn spec(&self) -> anyhow::Result<jit_keys::SourceSpec> {
        anyhow::ensure!(
            matches!(self.ring.as_str(), "backend" | "callback"),
            "--ring must be backend or callback"
        );
        let spec = self
            .source
            .clone()
            .unwrap_or_else(|| format!("file:jit-data/keys/{}.json", self.ring));
        jit_keys::SourceSpec::parse(&spec).map_err(anyhow::Error::msg)
    }

    /// A signed client of the backend at `api`, with `--api-keys`.
    async fn client(&self, api: &str) -> anyhow::Result<jit_client::Client> {
        let ring = crate::sign::load_ring(
            &self.api_keys,
            self.aws_region.clone(),
            self.aws_endpoint_url.clone(),
        )
        .await?;
        Ok(jit_client::Client::new(
            api,
            jit_client::Keys::Fixed(Arc::new(ring)),
            Arc::new(SystemClock),
        )?)
    }

    fn prefix(&self) -> &'static str {
        if self.ring == "callback" { "cb" } else { "key" }
    }

    /// What the backend knows of this ring's key use, when `--api` is given.
    async fn usage(&self) -> anyhow::Result<Option<Usage>> {
        let Some(api) = &self.api else {
            return Ok(None);
        };
        let client = self.client(api).await?;
        let a = client.key_usage().await?;
        let list = a
            .outcome
            .map_err(|e| CliError::refused(&e).within("GET /admin/keys/usage"))?;
        let mut keys: std::collections::BTreeMap<String, Vec<(String, i64)>> = Default::default();
        for u in list.usage.into_iter().filter(|u| u.ring == self.ring) {
            keys.entry(u.key_id)
                .or_default()
                .push((u.verifier, u.last_used_unix));
        }
        let now = SystemClock.unix();
        let live = list
            .verifiers
            .iter()
            .filter(|v| {
                v.ring == self.ring && now - v.last_report_unix <= jit_keys::USAGE_LIVE_SECS
            })
            .count();
        Ok(Some(Usage { keys, live }))
    }
}

/// What the backend knows of one ring's key use.
struct Usage {
    /// `key_id → [(verifier, last recorded use, unix)]`.
    keys: std::collections::BTreeMap<String, Vec<(String, i64)>>,
    /// Verifiers of this ring that reported within `USAGE_LIVE_SECS`.
    live: usize,
}

/// Whether a key can be retired now, from what the backend knows.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Verdict {
    /// It signs.
    Signing,
    /// No fact to go on: no `--api`, or no verifier of the ring is reporting.
    Unknown(String),
    /// Used (as far as recorded) within the overlap plus the recording margin; safe from then.
    InUse { safe_from: i64 },
    /// No verifier may have used it within the overlap.
    Safe,
}

/// The verdict for `id`. A recorded use lags the truth by at most `USAGE_FLUSH_SECS` while its
/// verifier runs, so the overlap is extended by `USAGE_MARGIN_SECS`; a key with no recorded
/// use is safe only when some verifier of the ring is reporting (it records first uses at once).
fn verdict(usage: Option<&Usage>, id: &str, signs: bool, now: i64, overlap_secs: i64) -> Verdict {
    if signs {
        return Verdict::Signing;
    }
    let Some(u) = usage else {
        return Verdict::Unknown("pass --api to read key use from the backend".into());
    };
    let last = u.keys.get(id).and_then(|v| v.iter().map(|(_, t)| *t).max());
    match last {
        Some(t) if now < t + overlap_secs + jit_keys::USAGE_MARGIN_SECS => Verdict::InUse {
            safe_from: t + overlap_secs + jit_keys::USAGE_MARGIN_SECS,
        },
        _ if u.live == 0 => Verdict::Unknown(format!(
            "no verifier of this ring has reported in the last {} s, so its use cannot be known",
            jit_keys::USAGE_LIVE_SECS
        )),
        _ => Verdict::Safe,
    }
}

fn unix_text(t: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|d| {
            d.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| t.to_string())
}

/// Where the edited ring lives.
enum Where {
    File(PathBuf),
    SecretsManager {
        client: aws_sdk_secretsmanager::Client,
        id: String,
        version: Option<String>,
    },
}

/// The ring document, read with a fingerprint (file content, or the secret's `AWSCURRENT`
/// version) to detect someone else's edit before writing.
struct RingDoc {
    at: Where,
    original: zeroize::Zeroizing<String>,
    doc: Map<String, Value>,
}

async fn sm_current(
    client: &aws_sdk_secretsmanager::Client,
    id: &str,
) -> anyhow::Result<(zeroize::Zeroizing<String>, Option<String>)> {
    let out = client
        .get_secret_value()
        .secret_id(id)
        .version_stage("AWSCURRENT")
        .send()
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "GetSecretValue {id}: {}",
                aws_sdk_secretsmanager::error::DisplayErrorContext(&e)
            )
        })?;
    let text = zeroize::Zeroizing::new(out.secret_string().unwrap_or_default().to_owned());
    Ok((text, out.version_id().map(str::to_owned)))
}

impl RingDoc {
    async fn read(args: &RingArgs) -> anyhow::Result<Self> {
        match args.spec()? {
            jit_keys::SourceSpec::File(path) => {
                let original =
                    zeroize::Zeroizing::new(std::fs::read_to_string(&path).map_err(|e| {
                        // A relative default names the directory the command runs in: say
                        // which file that was.
                        let shown = jit_keys::absolute_if_relative(&path).unwrap_or(path.clone());
                        let code = if e.kind() == std::io::ErrorKind::NotFound {
                            "key_file_missing"
                        } else {
                            "key_file_unreadable"
                        };
                        CliError::new(code, format!("reading {}: {e}", shown.display())).hint(
                            "give the ring with --source file:/absolute/path (the default is \
                             jit-data/keys/<ring>.json in the current directory)",
                        )
                    })?);
                let doc = rotation::parse_doc(&original)?;
                Ok(Self {
                    at: Where::File(path),
                    original,
                    doc,
                })
            }
            jit_keys::SourceSpec::SecretsManager { secret_id, .. } => {
                let sdk = jit_keys::aws_sdk_config(
                    args.aws_region.clone(),
                    args.aws_endpoint_url.clone(),
                )
                .await;
                let client = aws_sdk_secretsmanager::Client::new(&sdk);
                let (original, version) = sm_current(&client, &secret_id).await?;
                let doc = rotation::parse_doc(&original)?;
                Ok(Self {
                    at: Where::SecretsManager {
                        client,
                        id: secret_id,
                        version,
                    },
                    original,
                    doc,
                })
            }
            jit_keys::SourceSpec::Env(v) => {
                anyhow::bail!("env:{v} is read-only; edit the ring where it comes from")
            }
        }
    }

    /// Writes the edited ring unless someone else changed it since it was read: a file
    /// atomically (0600); a secret as a new version (`put-secret-value` with a client request
    /// token), which becomes `AWSCURRENT` and moves the previous one to `AWSPREVIOUS`.
    async fn write(&self) -> anyhow::Result<()> {
        let text = rotation::render_doc(&self.doc)?;
        match &self.at {
            Where::File(path) => {
                let now = std::fs::read_to_string(path).unwrap_or_default();
                if now.as_str() != self.original.as_str() {
                    return Err(CliError::new(
                        "concurrent_edit",
                        format!(
                            "{} was changed by someone else while this command ran; nothing written",
                            path.display()
                        ),
                    )
                    .hint("run it again")
                    .into());
                }
                jit_server::embedded::write_private(path, &text)?;
            }
            Where::SecretsManager {
                client,
                id,
                version,
            } => {
                let (_, now) = sm_current(client, id).await?;
                if &now != version {
                    return Err(CliError::new(
                        "concurrent_edit",
                        format!(
                            "{id} got a new version from someone else while this command ran; nothing written"
                        ),
                    )
                    .hint("run it again")
                    .into());
                }
                let token = jit_proto::sign::new_nonce()
                    .map_err(|e| anyhow::anyhow!("random generator: {e}"))?;
                client
                    .put_secret_value()
                    .secret_id(id)
                    .secret_string(text.as_str())
                    .client_request_token(token)
                    .send()
                    .await
                    .map_err(|e| {
                        anyhow::anyhow!(
                            "PutSecretValue {id}: {}",
                            aws_sdk_secretsmanager::error::DisplayErrorContext(&e)
                        )
                    })?;
            }
        }
        Ok(())
    }

    /// Where retired keys are backed up (0600 files).
    fn backup_dir(&self, chosen: Option<&PathBuf>) -> PathBuf {
        if let Some(d) = chosen {
            return d.clone();
        }
        match &self.at {
            Where::File(path) => path
                .parent()
                .unwrap_or_else(|| Path::new("."))
                .join("retired"),
            Where::SecretsManager { .. } => PathBuf::from("jit-data/keys/retired"),
        }
    }
}

fn fmt_time(v: Option<&Value>) -> String {
    v.and_then(Value::as_str).unwrap_or("—").to_owned()
}

#[allow(clippy::print_stdout)]
pub async fn run(cmd: KeysCommand) -> anyhow::Result<()> {
    let now = SystemClock.now();
    match cmd {
        KeysCommand::Generate { prefix, id, rich } => {
            let d = now.date();
            let id = id.unwrap_or_else(|| {
                format!(
                    "{prefix}-{:04}{:02}{:02}",
                    d.year(),
                    u8::from(d.month()),
                    d.day()
                )
            });
            let id = jit_proto::keyring::KeyId::parse(&id)?;
            let secret = jit_proto::keyring::Secret::generate()
                .map_err(|e| anyhow::anyhow!("random generator: {e}"))?;
            let entry = jit_proto::keyring::KeyEntry::new(id, secret, rich.then_some(now), None)?;
            let ring = jit_proto::keyring::KeyRing::from_entries(vec![entry])?;
            println!("{}", ring.to_secret_string()?.as_str());
        }
        KeysCommand::Status {
            ring: args,
            overlap_hours,
        } => {
            let f = RingDoc::read(&args).await?;
            let signing = rotation::signing_id(&f.doc, now)?;
            let usage = args.usage().await?;
            let t = now.unix_timestamp();
            if let Some(u) = &usage {
                println!(
                    "{} verifier(s) of the {} ring reporting; overlap {overlap_hours} h (+{} s recording margin)",
                    u.live,
                    args.ring,
                    jit_keys::USAGE_MARGIN_SECS
                );
            }
            println!(
                "{:<22} {:<26} {:<26} {:<7} {:<40} VERDICT",
                "ID", "CREATED", "NOT BEFORE", "SIGNS", "LAST USE"
            );
            for (id, v) in &f.doc {
                let (created, nb) = match v {
                    Value::Object(o) => {
                        (fmt_time(o.get("created_at")), fmt_time(o.get("not_before")))
                    }
                    _ => ("—".into(), "—".into()),
                };
                let signs = signing.as_deref() == Some(id.as_str());
                let last = match &usage {
                    None => "unknown (pass --api)".to_owned(),
                    Some(u) => match u.keys.get(id) {
                        None => "none recorded".to_owned(),
                        Some(uses) => uses
                            .iter()
                            .map(|(v, at)| format!("{v} {}s ago", t - at))
                            .collect::<Vec<_>>()
                            .join(", "),
                    },
                };
                let verdict = match verdict(usage.as_ref(), id, signs, t, overlap_hours * 3600) {
                    Verdict::Signing => "signing key".to_owned(),
                    Verdict::Unknown(why) => format!("unknown: {why}"),
                    Verdict::InUse { safe_from } => {
                        format!("in use; safe to retire from {}", unix_text(safe_from))
                    }
                    Verdict::Safe => "safe to retire".to_owned(),
                };
                println!(
                    "{id:<22} {created:<26} {nb:<26} {:<7} {last:<40} {verdict}",
                    if signs { "yes" } else { "" }
                );
            }
        }
        KeysCommand::Rotate {
            ring,
            activation_delay_secs,
        } => {
            let mut f = RingDoc::read(&ring).await?;
            let id = rotation::rotate(
                &mut f.doc,
                ring.prefix(),
                now,
                now + time::Duration::seconds(activation_delay_secs),
            )?;
            f.write().await?;
            println!(
                "added {id}; it signs from {} on (every verifier reloads within its refresh interval)",
                now + time::Duration::seconds(activation_delay_secs)
            );
        }
        KeysCommand::Retire {
            id,
            ring,
            overlap_hours,
            force,
            no_backup,
        } => {
            let mut f = RingDoc::read(&ring).await?;
            let usage = ring.usage().await?;
            let t = now.unix_timestamp();
            let signs = rotation::signing_id(&f.doc, now)?.as_deref() == Some(id.as_str());
            if force {
                eprintln!(
                    "WARNING: --force retires {id} without checking that no verifier still uses it"
                );
            } else {
                match verdict(usage.as_ref(), &id, signs, t, overlap_hours * 3600) {
                    Verdict::Unknown(why) => {
                        return Err(CliError::new(
                            "key_use_unknown",
                            format!("cannot tell whether {id} is still in use: {why}"),
                        )
                        .hint("or --force to retire it anyway")
                        .into());
                    }
                    Verdict::InUse { safe_from } => {
                        let (verifier, at) = usage
                            .as_ref()
                            .and_then(|u| u.keys.get(&id))
                            .and_then(|v| v.iter().max_by_key(|(_, at)| *at).cloned())
                            .unwrap_or_default();
                        return Err(CliError::new(
                            "key_in_use",
                            format!(
                                "{id} is still in use: {verifier} used it {} s ago, within the {overlap_hours} h overlap \
                                 (+{} s recording margin); it can be retired from {}",
                                t - at,
                                jit_keys::USAGE_MARGIN_SECS,
                                unix_text(safe_from)
                            ),
                        )
                        .hint("wait until then, or --force to retire it anyway (loudly)")
                        .into());
                    }
                    Verdict::Signing | Verdict::Safe => {}
                }
            }
            let uses = usage
                .as_ref()
                .and_then(|u| u.keys.get(&id).cloned())
                .unwrap_or_default();
            let removed = rotation::retire(
                &mut f.doc,
                &id,
                now,
                &uses,
                overlap_hours * 3600 + jit_keys::USAGE_MARGIN_SECS,
                force,
            )?;
            if !no_backup {
                let dir = f.backup_dir(ring.backup_dir.as_ref());
                let mut m = Map::new();
                m.insert(id.clone(), removed);
                let file = dir.join(format!(
                    "{}-{}-{}.json",
                    ring.ring,
                    id,
                    now.unix_timestamp()
                ));
                jit_server::embedded::write_private(
                    &file,
                    &serde_json::to_string_pretty(&Value::Object(m))?,
                )?;
                println!("backup of {id}: {} (mode 0600)", file.display());
            }
            f.write().await?;
            println!("retired {id}");
        }
        KeysCommand::Use { id, ring } => {
            anyhow::ensure!(
                ring.ring == "callback",
                "`jit keys use` switches the callback signing key: give --ring callback"
            );
            let api = ring
                .api
                .as_deref()
                .ok_or_else(|| anyhow::anyhow!("give the backend's URL with --api"))?;
            let client = ring.client(api).await?;
            let a = client
                .switch_callback_key(&jit_proto::wire::CallbackKeySwitch { key_id: id })
                .await?;
            match a.outcome {
                Ok(s) => println!(
                    "callbacks are signed with {} from now on (before: {})",
                    s.key_id,
                    s.previous.as_deref().unwrap_or("the ring's signing key")
                ),
                Err(e) => return Err(CliError::refused(&e).into()),
            }
        }
        KeysCommand::Rollback(ring) => {
            let mut f = RingDoc::read(&ring).await?;
            let dir = f.backup_dir(ring.backup_dir.as_ref());
            let prefix = format!("{}-", ring.ring);
            let newest = std::fs::read_dir(&dir)
                .map_err(|e| anyhow::anyhow!("no backups in {}: {e}", dir.display()))?
                .filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
                .max_by_key(|e| e.metadata().and_then(|m| m.modified()).ok())
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "no backup of a retired {} key in {}",
                        ring.ring,
                        dir.display()
                    )
                })?;
            let backup: Map<String, Value> =
                serde_json::from_str(&std::fs::read_to_string(newest.path())?)?;
            let (id, entry) = backup
                .iter()
                .next()
                .ok_or_else(|| anyhow::anyhow!("empty backup"))?;
            rotation::rollback(&mut f.doc, id, entry, now)?;
            f.write().await?;
            std::fs::remove_file(newest.path())?;
            println!("restored {id}; it is the signing key again");
        }
        KeysCommand::Auto {
            ring,
            max_age_days,
            overlap_hours,
            activation_delay_secs,
        } => {
            let mut f = RingDoc::read(&ring).await?;
            let mut changed = false;
            let old = rotation::newest_created(&f.doc)
                .is_none_or(|t| now - t > time::Duration::days(max_age_days));
            if old {
                let id = rotation::rotate(
                    &mut f.doc,
                    ring.prefix(),
                    now,
                    now + time::Duration::seconds(activation_delay_secs),
                )?;
                println!("rotated: added {id}");
                changed = true;
            }
            match ring.usage().await? {
                None => println!("not retiring anything: pass --api so key use is known"),
                Some(usage) => {
                    let ids: Vec<String> = f.doc.keys().cloned().collect();
                    let signing = rotation::signing_id(&f.doc, now)?;
                    for id in ids {
                        let uses = usage.keys.get(&id).cloned().unwrap_or_default();
                        // Only keys some verifier saw, and not within the overlap.
                        if uses.is_empty()
                            || verdict(
                                Some(&usage),
                                &id,
                                signing.as_deref() == Some(id.as_str()),
                                now.unix_timestamp(),
                                overlap_hours * 3600,
                            ) != Verdict::Safe
                        {
                            continue;
                        }
                        match rotation::retire(
                            &mut f.doc,
                            &id,
                            now,
                            &uses,
                            overlap_hours * 3600 + jit_keys::USAGE_MARGIN_SECS,
                            false,
                        ) {
                            Ok(_) => {
                                println!("retired {id} (unused for {overlap_hours} h)");
                                changed = true;
                            }
                            Err(
                                EditError::SigningKey(_)
                                | EditError::InUse { .. }
                                | EditError::LastKey(_),
                            ) => {}
                            Err(e) => return Err(e.into()),
                        }
                    }
                }
            }
            if changed {
                f.write().await?;
            } else {
                println!("nothing to do");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_verdict_is_unknown_without_facts_and_gives_the_time_retiring_becomes_safe() {
        let now = 1_000_000;
        let day = 86_400;
        let usage = |live, uses: &[(&str, i64)]| Usage {
            keys: uses
                .iter()
                .map(|(k, t)| ((*k).to_owned(), vec![("backend:1".to_owned(), *t)]))
                .collect(),
            live,
        };
        assert!(matches!(
            verdict(None, "k", false, now, day),
            Verdict::Unknown(_)
        ));
        assert_eq!(verdict(None, "k", true, now, day), Verdict::Signing);
        // Used 2 s ago: in use, even with no overlap (the recording margin).
        let u = usage(1, &[("k", now - 2)]);
        assert_eq!(
            verdict(Some(&u), "k", false, now, 0),
            Verdict::InUse {
                safe_from: now - 2 + jit_keys::USAGE_MARGIN_SECS
            }
        );
        assert_eq!(
            verdict(Some(&u), "k", false, now, day),
            Verdict::InUse {
                safe_from: now - 2 + day + jit_keys::USAGE_MARGIN_SECS
            }
        );
        // Never recorded: safe only while some verifier reports (first uses are recorded at
        // once); with none reporting, nobody can know.
        assert_eq!(
            verdict(Some(&usage(1, &[])), "k", false, now, day),
            Verdict::Safe
        );
        assert!(matches!(
            verdict(Some(&usage(0, &[])), "k", false, now, day),
            Verdict::Unknown(_)
        ));
        let old = usage(1, &[("k", now - 2 * day)]);
        assert_eq!(verdict(Some(&old), "k", false, now, day), Verdict::Safe);
    }

    fn args(source: String, endpoint: Option<String>) -> RingArgs {
        RingArgs {
            ring: "backend".into(),
            source: Some(source),
            api: None,
            aws_region: Some("us-east-1".into()),
            aws_endpoint_url: endpoint,
            backup_dir: None,
            api_keys: String::new(),
        }
    }

    #[tokio::test]
    async fn a_concurrent_edit_of_the_file_stops_the_command() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ring.json");
        std::fs::write(&path, r#"{"key-v1":"0123456789abcdef0123456789abcdef"}"#).unwrap();
        let mut f = RingDoc::read(&args(format!("file:{}", path.display()), None))
            .await
            .unwrap();
        rotation::rotate(&mut f.doc, "key", SystemClock.now(), SystemClock.now()).unwrap();
        // Someone else edits the ring meanwhile (the runbook's jq step, say).
        std::fs::write(&path, r#"{"key-v1":"0123456789abcdef0123456789abcdef","key-x":"fedcba9876543210fedcba9876543210"}"#).unwrap();
        let e = f.write().await.unwrap_err().to_string();
        assert!(e.contains("changed by someone else"), "{e}");
        assert!(
            std::fs::read_to_string(&path).unwrap().contains("key-x"),
            "their edit is kept"
        );
    }

    #[tokio::test]
    async fn a_concurrent_new_version_of_the_secret_stops_the_command() {
        let moto = jit_testkit::Moto::start().unwrap();
        let sm = aws_sdk_secretsmanager::Client::new(&moto.sdk_config().await);
        sm.create_secret()
            .name("ring")
            .secret_string(r#"{"key-v1":"0123456789abcdef0123456789abcdef"}"#)
            .send()
            .await
            .unwrap();
        // The command's client reads credentials from the environment chain; give it static ones.
        let client = aws_sdk_secretsmanager::Client::new(&moto.sdk_config().await);
        let (original, version) = sm_current(&client, "ring").await.unwrap();
        let mut f = RingDoc {
            at: Where::SecretsManager {
                client,
                id: "ring".into(),
                version,
            },
            doc: rotation::parse_doc(&original).unwrap(),
            original,
        };
        rotation::rotate(&mut f.doc, "key", SystemClock.now(), SystemClock.now()).unwrap();
        sm.put_secret_value()
            .secret_id("ring")
            .secret_string(r#"{"key-y":"fedcba9876543210fedcba9876543210"}"#)
            .send()
            .await
            .unwrap();
        let e = f.write().await.unwrap_err().to_string();
        assert!(e.contains("new version from someone else"), "{e}");
        let now = sm
            .get_secret_value()
            .secret_id("ring")
            .version_stage("AWSCURRENT")
            .send()
            .await
            .unwrap();
        assert!(
            now.secret_string().unwrap().contains("key-y"),
            "their version stays current"
        );
    }
}
