//! The operator CLI: a signed client of the API. Human tables by default, `--json` for scripts.
//! Break-glass revoke is one command with no hand-made signature.

use clap::{Args, Subcommand};
use jit_client::{Reply, RequestQuery};
use jit_proto::wire::{
    AccountConfig, ActorBody, ActorFields, ApproveBody, ApproversBody, BindBody, CreateRequestBody,
    DecisionBody, ExtendBody, MinutesInput, PolicyBody, RequestView, UnbindBody,
};
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
fn refused_or_json<T: serde::Serialize>(
    api: &Api,
    answer: &Reply<T>,
) -> anyhow::Result<Option<std::process::ExitCode>> {
    match &answer.outcome {
        Err(e) => {
            eprintln!("refused ({} {}): {}", answer.status, e.code, e.message);
            Ok(Some(std::process::ExitCode::from(1)))
        }
        Ok(v) if api.json => {
            println!("{}", serde_json::to_string(v)?);
            Ok(Some(std::process::ExitCode::SUCCESS))
        }
        Ok(_) => Ok(None),
    }
}

/// One `name=value` policy change into the body.
fn policy_change(b: &mut PolicyBody, change: &str) -> anyhow::Result<()> {
    let (k, v) = change
        .split_once('=')
        .ok_or_else(|| anyhow::anyhow!("`{change}` should be name=value"))?;
    let n = || -> anyhow::Result<Option<u32>> {
        Ok(Some(v.parse().map_err(|_| {
            anyhow::anyhow!("{k} needs a whole number, not `{v}`")
        })?))
    };
    let flag = || -> anyhow::Result<Option<bool>> {
        match v {
            "true" | "on" | "yes" => Ok(Some(true)),
            "false" | "off" | "no" => Ok(Some(false)),
            _ => anyhow::bail!("{k} needs true or false, not `{v}`"),
        }
    };
    match k {
        "required_approvals" => b.required_approvals = n()?,
        "allow_self_approval" => b.allow_self_approval = flag()?,
        "max_request_hours" => b.max_request_hours = n()?,
        "pending_timeout_minutes" => b.pending_timeout_minutes = n()?,
        "require_ticket" => b.require_ticket = flag()?,
        "require_ticket_or_reason" => b.require_ticket_or_reason = flag()?,
        "break_glass_enabled" => b.break_glass_enabled = flag()?,
        "break_glass_max_minutes" => b.break_glass_max_minutes = n()?,
        _ => anyhow::bail!("unknown policy field `{k}`"),
    }
    Ok(())
}

#[allow(clippy::print_stdout)]
fn print_accounts(accounts: &[AccountConfig]) {
    if accounts.is_empty() {
        println!("no accounts bound");
        return;
    }
    for a in accounts {
        println!(
            "account    {}  channel {}  permission sets {:?}",
            a.account_id, a.channel_id, a.permission_set_arns
        );
    }
    if let Some(a) = accounts.first() {
        let p = &a.policy;
        println!(
            "approvers  {:?} ({} required)",
            p.approvers, p.required_approvals
        );
        println!(
            "policy     max {} h, self-approval {}, ticket {}, ticket or reason {}, break-glass {} (max {} min), pending timeout {} min",
            p.max_request_hours,
            p.allow_self_approval,
            p.require_ticket,
            p.require_ticket_or_reason,
            p.break_glass_enabled,
            p.break_glass_max_minutes,
            p.pending_timeout_minutes
        );
    }
}

/// Runs a config command.
pub async fn run_config(api: &Api, cmd: ConfigCommand) -> anyhow::Result<std::process::ExitCode> {
    let c = api.client().await?;
    let who = || api.actor().map(ActorFields::of);
    let answer = match cmd {
        ConfigCommand::Show { channel } => c.accounts(&channel).await?,
        ConfigCommand::Bind {
            channel,
            account,
            permission_set,
        } => {
            let a = c
                .bind(&BindBody {
                    who: who()?,
                    channel_id: channel,
                    account_id: account,
                    permission_set_arn: permission_set,
                    permission_set_arns: Vec::new(),
                })
                .await?;
            Reply {
                status: a.status,
                key_id: a.key_id,
                outcome: a.outcome.map(|one| vec![one]),
            }
        }
        ConfigCommand::Unbind { channel, account } => {
            c.unbind(&UnbindBody {
                who: who()?,
                channel_id: channel,
                account_id: account,
            })
            .await?
        }
        ConfigCommand::Approvers {
            channel,
            approvers,
            required,
        } => {
            c.set_approvers(&ApproversBody {
                who: who()?,
                channel_id: channel,
                approvers,
                required_approvals: required,
            })
            .await?
        }
        ConfigCommand::Policy { channel, changes } => {
            let mut b = PolicyBody {
                who: who()?,
                channel_id: channel,
                ..PolicyBody::default()
            };
            for ch in &changes {
                policy_change(&mut b, ch)?;
            }
            c.set_policy(&b).await?
        }
    };
    if let Some(code) = refused_or_json(api, &answer)? {
        return Ok(code);
    }
    if let Ok(accounts) = &answer.outcome {
        print_accounts(accounts);
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

    fn actor(&self) -> anyhow::Result<ActorBody> {
        let id = self.actor.clone().ok_or_else(|| {
            anyhow::anyhow!("say who acts: --as <mattermost-user-id> (or JIT_ACTOR)")
        })?;
        Ok(ActorBody {
            user_id: id,
            email: self.actor_email.clone(),
            roles: Vec::new(),
        })
    }
}

#[allow(clippy::print_stdout)]
fn print_requests(items: &[RequestView]) {
    println!(
        "{:<36}  {:<9}  {:<12}  {:<28}  {:>5}  END",
        "ID", "STATUS", "ACCOUNT", "REQUESTER", "MIN"
    );
    for r in items {
        let status = serde_json::to_value(r.status)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        println!(
            "{:<36}  {:<9}  {:<12}  {:<28}  {:>5}  {}",
            r.request_id,
            status,
            r.account_id,
            r.requester_email,
            r.requested_duration_minutes,
            r.end_time.as_deref().unwrap_or("—")
        );
    }
}

/// Runs a requests command; returns the process exit code.
#[allow(clippy::print_stdout)]
pub async fn run(api: &Api, cmd: RequestsCommand) -> anyhow::Result<std::process::ExitCode> {
    let c = api.client().await?;
    let who = || api.actor().map(ActorFields::of);
    let answer = match cmd {
        RequestsCommand::List {
            channel,
            account,
            status,
            max,
        } => {
            let mut items = Vec::new();
            let mut q = RequestQuery {
                channel_id: channel,
                account_id: account,
                status,
                limit: Some(u32::try_from(max.clamp(1, 200)).unwrap_or(200)),
                ..RequestQuery::default()
            };
            loop {
                let a = c.list_requests(&q).await?;
                let page = match a.outcome {
                    Ok(p) => p,
                    Err(e) => anyhow::bail!("refused ({} {}): {}", a.status, e.code, e.message),
                };
                items.extend(page.items);
                q.next_token = page.next_token;
                if q.next_token.is_none() || items.len() >= max {
                    break;
                }
            }
            items.truncate(max);
            if api.json {
                println!("{}", serde_json::to_string(&items)?);
            } else {
                print_requests(&items);
            }
            return Ok(std::process::ExitCode::SUCCESS);
        }
        RequestsCommand::Show { id } => c.get_request(&id).await?,
        RequestsCommand::Create {
            channel,
            account,
            minutes,
            ticket,
            reason,
            permission_set,
            break_glass,
        } => {
            c.create_request(
                &CreateRequestBody {
                    who: who()?,
                    channel_id: channel,
                    account_id: account,
                    permission_set_arn: permission_set,
                    jira: ticket,
                    reason: Some(reason),
                    requested_duration_minutes: MinutesInput::from_u32(minutes),
                    break_glass: Some(break_glass),
                },
                None,
            )
            .await?
        }
        RequestsCommand::Approve { id } => c.approve(&id, &ApproveBody { who: who()? }).await?,
        RequestsCommand::Deny { id, reason } => {
            c.deny(
                &id,
                &DecisionBody {
                    who: who()?,
                    reason,
                },
            )
            .await?
        }
        RequestsCommand::Revoke { id, reason } => {
            c.revoke(
                &id,
                &DecisionBody {
                    who: who()?,
                    reason,
                },
            )
            .await?
        }
        RequestsCommand::Cancel { id } => {
            c.cancel(
                &id,
                &DecisionBody {
                    who: who()?,
                    reason: None,
                },
            )
            .await?
        }
        RequestsCommand::Extend { id, minutes } => {
            c.extend(
                &id,
                &ExtendBody {
                    who: who()?,
                    minutes: MinutesInput::from_u32(minutes),
                },
            )
            .await?
        }
    };
    if let Some(code) = refused_or_json(api, &answer)? {
        return Ok(code);
    }
    if let Ok(r) = &answer.outcome {
        print_requests(std::slice::from_ref(r));
    }
    Ok(std::process::ExitCode::SUCCESS)
}
