//! The operator CLI: a signed client of the API. Human tables by default, `--json` for scripts.
//! Break-glass revoke is one command with no hand-made signature.

use clap::{Args, Subcommand};
use serde_json::{Value, json};
use std::sync::Arc;

#[derive(Debug, Args)]
pub struct Api {
    /// The backend's URL.
    #[arg(
        long,
        env = "JIT_API_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    api: String,
    /// Keys to sign with (`file:`, `env:`, `aws-sm:`).
    #[arg(
        long,
        env = "JIT_CLIENT_KEYS",
        default_value = "file:jit-data/keys/backend.json",
        global = true
    )]
    keys: String,
    /// Act as this Mattermost user id (recorded in the audit trail; the backend authorises it).
    #[arg(long = "as", env = "JIT_ACTOR", global = true)]
    actor: Option<String>,
    /// The actor's email.
    #[arg(long, env = "JIT_ACTOR_EMAIL", global = true)]
    actor_email: Option<String>,
    /// Print the API's JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Debug, Subcommand)]
pub enum RequestsCommand {
    /// Requests, newest first (all pages up to --max).
    List {
        #[arg(long)]
        channel: Option<String>,
        #[arg(long)]
        account: Option<String>,
        /// One or more statuses, comma-separated.
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value_t = 50)]
        max: usize,
    },
    /// One request.
    Show { id: String },
    /// Ask for access.
    Create {
        #[arg(long)]
        channel: String,
        #[arg(long)]
        account: String,
        #[arg(long)]
        minutes: u32,
        #[arg(long)]
        ticket: Option<String>,
        #[arg(long)]
        reason: String,
        #[arg(long)]
        permission_set: Option<String>,
        /// Break-glass: self-granted, reviewed later (when the channel allows it).
        #[arg(long)]
        break_glass: bool,
    },
    /// Approve.
    Approve { id: String },
    /// Deny.
    Deny {
        id: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// End access now (break-glass revoke from a terminal).
    Revoke {
        id: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Withdraw a pending request.
    Cancel { id: String },
    /// Lengthen a grant.
    Extend { id: String, minutes: u32 },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// A channel's bound accounts and policy.
    Show { channel: String },
    /// Bind an account (and optionally a permission set) to a channel.
    Bind {
        channel: String,
        account: String,
        #[arg(long)]
        permission_set: Option<String>,
    },
    /// Unbind an account from a channel.
    Unbind { channel: String, account: String },
    /// Set a channel's approvers (Mattermost user ids) and how many must approve.
    Approvers {
        channel: String,
        #[arg(required = true)]
        approvers: Vec<String>,
        #[arg(long)]
        required: Option<u32>,
    },
    /// Change policy fields: `max_request_hours=4 allow_self_approval=false pending_timeout_minutes=480
    /// require_ticket=true break_glass_enabled=false break_glass_max_minutes=60 required_approvals=1`.
    Policy {
        channel: String,
        #[arg(required = true)]
        changes: Vec<String>,
    },
}

/// Prints a refusal (exit 1) or, with `--json`, the answer (exit 0); `None` when the caller
/// prints its table.
#[allow(clippy::print_stdout)]
fn refused_or_json(api: &Api, answer: &jit_client::Answer) -> Option<std::process::ExitCode> {
    if !answer.is_success() {
        let why = answer
            .body
            .get("message")
            .and_then(Value::as_str)
            .or(answer.code())
            .unwrap_or("");
        eprintln!("refused ({}): {why}", answer.status);
        return Some(std::process::ExitCode::from(1));
    }
    if api.json {
        println!("{}", answer.body);
        return Some(std::process::ExitCode::SUCCESS);
    }
    None
}

/// Runs a config command.
#[allow(clippy::print_stdout)]
pub async fn run_config(api: &Api, cmd: ConfigCommand) -> anyhow::Result<std::process::ExitCode> {
    let c = api.client().await?;
    let answer = match cmd {
        ConfigCommand::Show { channel } => {
            c.get(&format!("/config/accounts?channel_id={}", enc(&channel)))
                .await?
        }
        ConfigCommand::Bind {
            channel,
            account,
            permission_set,
        } => {
            let mut b =
                json!({"actor": api.actor()?, "channel_id": channel, "account_id": account});
            if let (Some(p), Value::Object(m)) = (permission_set, &mut b) {
                m.insert("permission_set_arn".into(), json!(p));
            }
            c.post("/config/bind", &b).await?
        }
        ConfigCommand::Unbind { channel, account } => {
            c.post(
                "/config/unbind",
                &json!({"actor": api.actor()?, "channel_id": channel, "account_id": account}),
            )
            .await?
        }
        ConfigCommand::Approvers {
            channel,
            approvers,
            required,
        } => {
            let mut b =
                json!({"actor": api.actor()?, "channel_id": channel, "approvers": approvers});
            if let (Some(n), Value::Object(m)) = (required, &mut b) {
                m.insert("required_approvals".into(), json!(n));
            }
            c.post("/config/approvers", &b).await?
        }
        ConfigCommand::Policy { channel, changes } => {
            let mut b = json!({"actor": api.actor()?, "channel_id": channel});
            for ch in changes {
                let (k, v) = ch
                    .split_once('=')
                    .ok_or_else(|| anyhow::anyhow!("`{ch}` should be name=value"))?;
                let v: Value = serde_json::from_str(v).unwrap_or_else(|_| json!(v));
                if let Value::Object(m) = &mut b {
                    m.insert(k.to_owned(), v);
                }
            }
            c.post("/config/policy", &b).await?
        }
    };
    if let Some(code) = refused_or_json(api, &answer) {
        return Ok(code);
    } else {
        let b = &answer.body;
        println!("channel    {}", s(b, "channel_id"));
        for x in b
            .get("bindings")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
        {
            println!(
                "account    {}  {}",
                s(&x, "account_id"),
                x.get("permission_set_arns").cloned().unwrap_or(Value::Null)
            );
        }
        println!(
            "approvers  {}",
            b.get("approvers").cloned().unwrap_or(Value::Null)
        );
        println!(
            "policy     {}",
            b.get("policy").cloned().unwrap_or(Value::Null)
        );
    }
    Ok(std::process::ExitCode::SUCCESS)
}

impl Api {
    async fn client(&self) -> anyhow::Result<jit_client::Client> {
        let ring = crate::sign::load_ring(&self.keys, None, None).await?;
        Ok(jit_client::Client::new(
            &self.api,
            jit_client::Keys::Fixed(Arc::new(ring)),
            Arc::new(jit_proto::SystemClock),
        )?)
    }

    fn actor(&self) -> anyhow::Result<Value> {
        let id = self.actor.clone().ok_or_else(|| {
            anyhow::anyhow!("say who acts: --as <mattermost-user-id> (or JIT_ACTOR)")
        })?;
        let mut a = json!({"user_id": id});
        if let Some(e) = &self.actor_email
            && let Value::Object(m) = &mut a
        {
            m.insert("email".into(), json!(e));
        }
        Ok(a)
    }
}

fn enc(v: &str) -> String {
    v.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~,".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or("")
}

#[allow(clippy::print_stdout)]
fn print_requests(items: &[Value]) {
    println!(
        "{:<36}  {:<9}  {:<12}  {:<28}  {:>5}  END",
        "ID", "STATUS", "ACCOUNT", "REQUESTER", "MIN"
    );
    for r in items {
        println!(
            "{:<36}  {:<9}  {:<12}  {:<28}  {:>5}  {}",
            s(r, "request_id"),
            s(r, "status"),
            s(r, "account_id"),
            s(r, "requester_email"),
            r.get("requested_duration_minutes")
                .and_then(Value::as_u64)
                .unwrap_or(0),
            r.get("end_time").and_then(Value::as_str).unwrap_or("—")
        );
    }
}

/// Runs a requests command; returns the process exit code.
#[allow(clippy::print_stdout)]
pub async fn run(api: &Api, cmd: RequestsCommand) -> anyhow::Result<std::process::ExitCode> {
    let c = api.client().await?;
    let answer = match cmd {
        RequestsCommand::List {
            channel,
            account,
            status,
            max,
        } => {
            let mut items = Vec::new();
            let mut next: Option<String> = None;
            loop {
                let mut pq = format!("/requests?limit={}", max.clamp(1, 200));
                for (k, v) in [
                    ("channel_id", &channel),
                    ("account_id", &account),
                    ("status", &status),
                ] {
                    if let Some(v) = v {
                        pq.push_str(&format!("&{k}={}", enc(v)));
                    }
                }
                if let Some(t) = &next {
                    pq.push_str(&format!("&next_token={}", enc(t)));
                }
                let a = c.get(&pq).await?;
                anyhow::ensure!(a.is_success(), "{} {}", a.status, a.body);
                items.extend(
                    a.body
                        .get("requests")
                        .and_then(Value::as_array)
                        .cloned()
                        .unwrap_or_default(),
                );
                next = a
                    .body
                    .get("next_token")
                    .and_then(Value::as_str)
                    .map(str::to_owned);
                if next.is_none() || items.len() >= max {
                    break;
                }
            }
            items.truncate(max);
            if api.json {
                println!("{}", Value::Array(items));
            } else {
                print_requests(&items);
            }
            return Ok(std::process::ExitCode::SUCCESS);
        }
        RequestsCommand::Show { id } => c.get(&format!("/requests/{}", enc(&id))).await?,
        RequestsCommand::Create {
            channel,
            account,
            minutes,
            ticket,
            reason,
            permission_set,
            break_glass,
        } => {
            let mut body = json!({"actor": api.actor()?, "channel_id": channel, "account_id": account,
                "requested_duration_minutes": minutes, "reason": reason, "break_glass": break_glass});
            if let Value::Object(m) = &mut body {
                if let Some(t) = ticket {
                    m.insert("jira".into(), json!(t));
                }
                if let Some(p) = permission_set {
                    m.insert("permission_set_arn".into(), json!(p));
                }
            }
            c.post("/requests", &body).await?
        }
        RequestsCommand::Approve { id } => {
            c.post(
                &format!("/requests/{}/approve", enc(&id)),
                &json!({"actor": api.actor()?}),
            )
            .await?
        }
        RequestsCommand::Deny { id, reason } => {
            c.post(
                &format!("/requests/{}/deny", enc(&id)),
                &json!({"actor": api.actor()?, "reason": reason}),
            )
            .await?
        }
        RequestsCommand::Revoke { id, reason } => {
            c.post(
                &format!("/requests/{}/revoke", enc(&id)),
                &json!({"actor": api.actor()?, "reason": reason}),
            )
            .await?
        }
        RequestsCommand::Cancel { id } => {
            c.post(
                &format!("/requests/{}/cancel", enc(&id)),
                &json!({"actor": api.actor()?}),
            )
            .await?
        }
        RequestsCommand::Extend { id, minutes } => {
            c.post(
                &format!("/requests/{}/extend", enc(&id)),
                &json!({"actor": api.actor()?, "minutes": minutes}),
            )
            .await?
        }
    };
    if let Some(code) = refused_or_json(api, &answer) {
        return Ok(code);
    } else {
        print_requests(std::slice::from_ref(&answer.body));
    }
    Ok(std::process::ExitCode::SUCCESS)
}
