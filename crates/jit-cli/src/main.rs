//! `jit`: one binary for the backend server, key tools and the signed API client.

mod doctor;
mod error;
mod import;
mod keys;
mod ops;
mod sign;

use clap::{Parser, Subcommand};
use std::io::IsTerminal;
use std::path::PathBuf;

/// Just-in-time privileged access, driven from Mattermost.
#[derive(Debug, Parser)]
#[command(name = "jit", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the backend API. With no configuration: SQLite and generated keys under ./jit-data/.
    Server {
        /// TOML configuration file (then JIT_* environment variables override it).
        #[arg(long, short, env = "JIT_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Run the Mattermost bridge (slash command, buttons, dialogs, callbacks).
    Mattermost {
        /// TOML configuration file (then JIT_MM_* environment variables override it).
        #[arg(long, short, env = "JIT_MM_CONFIG")]
        config: Option<PathBuf>,
        #[command(subcommand)]
        command: Option<MattermostCommand>,
    },
    /// Key tools.
    Keys {
        #[command(subcommand)]
        command: keys::KeysCommand,
    },
    /// Sign a request for the API and print its headers or a ready curl command.
    Sign(sign::SignArgs),
    /// Access requests through the signed API (list, show, create, approve, deny, revoke,
    /// review, cancel, extend).
    Requests {
        #[command(flatten)]
        api: ops::Api,
        #[command(subcommand)]
        command: ops::RequestsCommand,
    },
    /// Channel bindings, approvers and policy through the signed API.
    Config {
        #[command(flatten)]
        api: ops::Api,
        #[command(subcommand)]
        command: ops::ConfigCommand,
    },
    /// Check a configuration end to end (key files, database, callbacks URL, provider,
    /// Mattermost token, clocks) and say what to fix; exit status 1 when a check fails.
    Doctor(doctor::DoctorArgs),
    /// Print the API's OpenAPI document (generated from the wire types; docs/openapi.json).
    Openapi,
    /// Print shell completions (bash, zsh, fish, …).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Audit trail tools.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Import the Go/Lambda backend's bindings, approvers and request history from its
    /// DynamoDB tables into a store (SQLite, PostgreSQL or DynamoDB). Safe to run again: what is
    /// already there is skipped.
    Import(import::ImportArgs),
    /// Operating the embedded database.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// Write an online, consistent copy of the SQLite database to FILE (mode 0600; the server
    /// may keep running). Restore by stopping the server and putting the copy in place of
    /// jit.db. PostgreSQL: use pg_dump.
    Backup {
        /// Where the copy goes (must not exist).
        file: std::path::PathBuf,
        /// The database to copy (default: the embedded SQLite database).
        #[arg(
            long,
            env = "JIT_DATABASE_URL",
            default_value = "sqlite://jit-data/jit.db"
        )]
        database_url: String,
    },
}

#[derive(Debug, Subcommand)]
enum MattermostCommand {
    /// Create the `/jit` slash command in a team, or update it in place; write its token into
    /// the bridge's slash tokens file (a running bridge accepts it within 2 s, no restart);
    /// and check what the bridge needs from Mattermost, each check with a code and the System
    /// Console setting to change. Safe to run again. Exits 1 when a check failed.
    Setup {
        /// The team's id (System Console > User Management > Teams, or the API).
        #[arg(long)]
        team_id: String,
        /// The trigger word, without the `/`.
        #[arg(long, default_value = "jit")]
        trigger: String,
        /// Give the command a new token: Mattermost stops sending the old one at once, and the
        /// file gets the new one in its place.
        #[arg(long)]
        rotate_token: bool,
        /// The id of a channel the bot is a member of: Mattermost runs `/<trigger> help` there,
        /// proving it can reach the bridge and the bridge accepts the token (only the bot sees
        /// the answer).
        #[arg(long, value_name = "CHANNEL_ID")]
        check_channel: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once per run
enum AuditCommand {
    /// Walk the audit hash chain and report the first edit, deletion or truncation. Reads the
    /// database directly and read-only, in pages (flat memory), with progress on a terminal.
    /// Verifies every event unless `--since-checkpoint` is given.
    Verify {
        /// Database to check directly (default: the embedded SQLite database): `sqlite://`,
        /// `postgres://` or `dynamodb://STATE_TABLE?nonces=NONCES_TABLE`.
        #[arg(
            long,
            env = "JIT_DATABASE_URL",
            default_value = "sqlite://jit-data/jit.db"
        )]
        database_url: String,
        /// AWS region of a `dynamodb://` store (else the SDK's chain).
        #[arg(long, env = "JIT_AWS_REGION")]
        aws_region: Option<String>,
        /// AWS endpoint override of a `dynamodb://` store.
        #[arg(long, env = "JIT_AWS_ENDPOINT_URL")]
        aws_endpoint_url: Option<String>,
        /// Check only the events after the newest checkpoint the server verified (the
        /// routine check `GET /audit/verify` makes), after confirming that checkpoint's event
        /// is unchanged.
        #[arg(long)]
        since_checkpoint: bool,
    },
    /// Stream the audit trail from the API as JSON lines or CSV, page by page (flat memory),
    /// to a file or stdout, with progress on a terminal.
    Export {
        /// The backend's URL.
        #[arg(long, env = "JIT_API_URL", default_value = "http://127.0.0.1:8080")]
        api: String,
        /// Keys to sign with.
        #[arg(
            long,
            env = "JIT_CLIENT_KEYS",
            default_value = "file:jit-data/keys/backend.json"
        )]
        keys: String,
        /// `jsonl` or `csv`.
        #[arg(long, default_value = "jsonl")]
        format: String,
        /// From (RFC 3339 or YYYY-MM-DD).
        #[arg(long)]
        since: Option<String>,
        /// Until (RFC 3339 or YYYY-MM-DD; a date includes that day).
        #[arg(long)]
        until: Option<String>,
        /// Only this request / account / channel / actor / event type.
        #[arg(long)]
        request_id: Option<String>,
        /// Account filter.
        #[arg(long)]
        account_id: Option<String>,
        /// Channel filter.
        #[arg(long)]
        channel_id: Option<String>,
        /// Actor filter (user id or email).
        #[arg(long)]
        actor: Option<String>,
        /// Event type filter, e.g. request.approved.
        #[arg(long = "type")]
        kind: Option<String>,
        /// Write here instead of stdout.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
}

/// Logging for the services (`server`, `mattermost`): `info`, JSON when stderr is not a
/// terminal. One-shot commands report their failures as `error[CODE]` themselves, so they log
/// only warnings, as text, and never the TLS verifier's own error line (the error chain the
/// command prints already says why a certificate was refused).
fn init_logging(service: bool) {
    let default = if service {
        "info"
    } else {
        "warn,rustls_platform_verifier=off"
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("JIT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let json = match std::env::var("JIT_LOG_FORMAT").as_deref() {
        Ok("json") => true,
        Ok("text") => false,
        _ => service && !std::io::stderr().is_terminal(),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init();
    } else {
        builder.init();
    }
}

struct AuditExport {
    api: String,
    keys: String,
    format: String,
    since: Option<String>,
    until: Option<String>,
    request_id: Option<String>,
    account_id: Option<String>,
    channel_id: Option<String>,
    actor: Option<String>,
    kind: Option<String>,
    output: Option<PathBuf>,
}

fn enc(v: &str) -> String {
    v.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

async fn audit_export(x: AuditExport) -> anyhow::Result<()> {
    use std::io::Write;
    anyhow::ensure!(
        matches!(x.format.as_str(), "jsonl" | "csv"),
        "--format must be jsonl or csv"
    );
    let ring = sign::load_ring(&x.keys, None, None).await?;
    let client = jit_client::Client::new(
        &x.api,
        jit_client::Keys::Fixed(std::sync::Arc::new(ring)),
        std::sync::Arc::new(jit_proto::SystemClock),
    )?;
    let mut base = format!("/audit?format={}&limit=1000", x.format);
    for (k, v) in [
        ("since", &x.since),
        ("until", &x.until),
        ("request_id", &x.request_id),
        ("account_id", &x.account_id),
        ("channel_id", &x.channel_id),
        ("actor", &x.actor),
        ("type", &x.kind),
    ] {
        if let Some(v) = v {
            base.push_str(&format!("&{k}={}", enc(v)));
        }
    }
    let mut out: Box<dyn Write> = match &x.output {
        Some(p) => Box::new(std::io::BufWriter::new(std::fs::File::create(p)?)),
        None => Box::new(std::io::BufWriter::new(std::io::stdout())),
    };
    let progress = std::io::stderr().is_terminal();
    let started = std::time::Instant::now();
    let (mut next, mut rows, mut first) = (None::<String>, 0usize, true);
    loop {
        let pq = match &next {
            Some(t) => format!("{base}&next_token={t}"),
            None => base.clone(),
        };
        let page = client.get_text(&pq).await?;
        if page.status != 200 {
            return Err(match serde_json::from_str(&page.text) {
                Ok(body) => error::CliError::refused(&body),
                Err(_) => error::CliError::new("api_error", format!("answered {}", page.status)),
            }
            .within(&format!("GET {pq}"))
            .into());
        }
        let mut text = page.text.as_str();
        if x.format == "csv" && !first {
            // Every page repeats the header; keep the first.
            text = text.split_once('\n').map_or("", |(_, rest)| rest);
        }
        first = false;
        rows += text.lines().count();
        out.write_all(text.as_bytes())?;
        if progress {
            let rate = rows as f64 / started.elapsed().as_secs_f64().max(1e-3);
            eprint!("\r{rows} rows ({rate:.0}/s)");
        }
        match page.next_token {
            Some(t) => next = Some(t),
            None => break,
        }
    }
    out.flush()?;
    if progress {
        eprintln!();
    }
    Ok(())
}

async fn run_bridge(cfg: jit_mattermost::BridgeConfig) -> anyhow::Result<()> {
    use jit_proto::SystemClock;
    let listen: std::net::SocketAddr = cfg.listen.parse()?;
    tracing::info!(listen = %listen, mattermost = %cfg.mattermost_url, backend = %cfg.backend_url, "starting jit mattermost");
    let bridge = jit_mattermost::Bridge::build(cfg, std::sync::Arc::new(SystemClock)).await?;
    let (stop, rx) = tokio::sync::watch::channel(false);
    let rings = bridge.spawn_rings(rx);
    let listener = tokio::net::TcpListener::bind(listen).await?;
    bridge
        .serve(listener, async move {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    let _ = stop.send(true);
    for r in rings {
        let _ = r.await;
    }
    Ok(())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return error::usage(&e),
    };
    // The doctor reports every finding itself; log lines would only repeat them.
    if !matches!(cli.command, Command::Doctor(_)) {
        let service = matches!(
            cli.command,
            Command::Server { .. } | Command::Mattermost { command: None, .. }
        );
        init_logging(service);
    }
    match run(cli).await {
        Ok(code) => code,
        Err(e) => error::print(&error::CliError::from_anyhow(&e)),
    }
}

async fn run(cli: Cli) -> anyhow::Result<std::process::ExitCode> {
    match cli.command {
        Command::Server { config } => {
            let config =
                jit_server::Config::load(config.as_deref(), &jit_server::config::ProcessEnv)?;
            jit_server::run(config).await?;
        }
        Command::Mattermost { config, command } => {
            let cfg = jit_mattermost::BridgeConfig::load(config.as_deref())?;
            match command {
                Some(MattermostCommand::Setup {
                    team_id,
                    trigger,
                    rotate_token,
                    check_channel,
                }) => {
                    let opts = jit_mattermost::setup::SetupOptions {
                        team_id,
                        trigger,
                        rotate_token,
                        check_channel,
                    };
                    let report = jit_mattermost::setup::run(&cfg, &opts).await?;
                    print!("{}", report.render());
                    if !report.passed() {
                        return Ok(std::process::ExitCode::FAILURE);
                    }
                }
                None => run_bridge(cfg).await?,
            }
        }
        Command::Keys { command } => keys::run(command).await?,
        Command::Requests { api, command } => return ops::run(&api, command).await,
        Command::Config { api, command } => return ops::run_config(&api, command).await,
        Command::Doctor(args) => return doctor::run(args, &jit_proto::SystemClock).await,
        Command::Import(args) => return import::run(args, &jit_proto::SystemClock).await,
        Command::Openapi => {
            use std::io::Write;
            std::io::stdout().write_all(jit_server::openapi::json().as_bytes())?;
        }
        Command::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(shell, &mut Cli::command(), "jit", &mut std::io::stdout());
        }
        Command::Sign(args) => sign::run(args).await?,
        Command::Audit {
            command:
                AuditCommand::Export {
                    api,
                    keys,
                    format,
                    since,
                    until,
                    request_id,
                    account_id,
                    channel_id,
                    actor,
                    kind,
                    output,
                },
        } => {
            audit_export(AuditExport {
                api,
                keys,
                format,
                since,
                until,
                request_id,
                account_id,
                channel_id,
                actor,
                kind,
                output,
            })
            .await?;
        }
        Command::Admin {
            command: AdminCommand::Backup { file, database_url },
        } => {
            let store = jit_store::SqlStore::open_read_only(&database_url).await?;
            let bytes = store.backup_to(&file).await?;
            println!(
                "backed up to {} ({bytes} bytes); check it with: jit audit verify --database-url sqlite://{}",
                file.display(),
                file.display()
            );
        }
        Command::Audit {
            command:
                AuditCommand::Verify {
                    database_url,
                    aws_region,
                    aws_endpoint_url,
                    since_checkpoint,
                },
        } => {
            use jit_store::prelude::*;
            // Read-only: verifying must never create, migrate or change what it checks (a
            // DynamoDB store has no schema to migrate, and verifying records nothing).
            let store: std::sync::Arc<dyn Store> = if database_url.starts_with("dynamodb://") {
                let aws = jit_store::AwsOptions {
                    region: aws_region,
                    endpoint_url: aws_endpoint_url,
                    job_hook: None,
                };
                jit_store::open(&database_url, &aws).await?
            } else {
                std::sync::Arc::new(jit_store::SqlStore::open_read_only(&database_url).await?)
            };
            let opts = jit_store::VerifyOptions {
                full: !since_checkpoint,
                record_checkpoint: false,
                now_ms: 0,
            };
            let tty = std::io::stderr().is_terminal();
            let started = std::time::Instant::now();
            let progress = |p: jit_store::VerifyProgress| {
                if tty {
                    let done = p.verified_seq - p.from_seq + 1;
                    let total = (p.head_seq - p.from_seq + 1).max(1);
                    let rate = done as f64 / started.elapsed().as_secs_f64().max(1e-3);
                    eprint!(
                        "\rverified {} of {} events ({}%, {rate:.0}/s)",
                        p.verified_seq,
                        p.head_seq,
                        done * 100 / total
                    );
                }
            };
            let r = store.verify_audit_with(opts, &progress).await;
            if tty {
                eprintln!();
            }
            match r {
                Ok(rep) if rep.from_checkpoint > 0 => println!(
                    "audit chain intact: {} events ({} checked after the checkpoint at event {})",
                    rep.head_seq, rep.checked, rep.from_checkpoint
                ),
                Ok(rep) => println!("audit chain intact: {} events", rep.head_seq),
                // Reading failed: nothing is known about the chain, so it is not called broken.
                Err(jit_store::VerifyError::Store(e)) => {
                    return Err(error::CliError::new(
                        "audit_verify_failed",
                        format!("could not read the audit trail to verify it: {e}"),
                    )
                    .hint("check --database-url and that the database is reachable, then run the verification again")
                    .into());
                }
                Err(e) => {
                    return Err(error::CliError::new(
                        "audit_chain_broken",
                        format!("audit chain BROKEN: {e}"),
                    )
                    .hint("restore the database from a backup taken before the change (docs/runbooks/backup-and-upgrade.md)")
                    .exit(2)
                    .into());
                }
            }
        }
    }
    Ok(std::process::ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::Cli;
    use clap::CommandFactory;

    /// Every subcommand and every argument of `jit` says what it is for.
    #[test]
    fn every_command_and_argument_has_help() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for a in cmd.get_arguments() {
                let id = a.get_id().as_str();
                if matches!(id, "help" | "version") {
                    continue;
                }
                if a.get_help().is_none() && a.get_long_help().is_none() {
                    missing.push(format!("{path} {id}"));
                }
            }
            for sub in cmd.get_subcommands() {
                let p = format!("{path} {}", sub.get_name());
                if sub.get_name() != "help" && sub.get_about().is_none() {
                    missing.push(format!("{p} (the command)"));
                }
                walk(sub, &p, missing);
            }
        }
        let mut missing = Vec::new();
        let cmd = Cli::command();
        walk(&cmd, "jit", &mut missing);
        assert!(missing.is_empty(), "without help text: {missing:#?}");
        cmd.debug_assert();
    }
}
