//! The operator CLI: a signed client of the API. Human tables by default, `--json` for scripts.
//! Break-glass revoke is one command with no hand-made signature.

use crate::error::CliError;
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
        /// Only this channel's requests (Mattermost channel id).
        #[arg(long)]
        channel: Option<String>,
        /// Only requests for this AWS account id.
        #[arg(long)]
        account: Option<String>,
        /// One or more statuses, comma-separated.
        #[arg(long)]
        status: Option<String>,
        /// Only break-glass requests still waiting for an approver's review.
        #[arg(long)]
        review_pending: bool,
        /// At most this many requests.
        #[arg(long, default_value_t = 50)]
        max: usize,
    },
    /// One request.
    Show {
        /// The request id (or its first 8 or more characters).
        id: String,
    },
    /// Ask for access.
    Create {
        /// The Mattermost channel whose binding and approvers apply.
        #[arg(long)]
        channel: String,
        /// The AWS account id (12 digits).
        #[arg(long)]
        account: String,
        /// How long the access lasts once granted.
        #[arg(long)]
        minutes: u32,
        /// The ticket (when the channel's policy asks for one).
        #[arg(long)]
        ticket: Option<String>,
        /// Why the access is needed (kept in the audit trail).
        #[arg(long)]
        reason: String,
        /// The permission set ARN (when the account has several bound).
        #[arg(long)]
        permission_set: Option<String>,
        /// Break-glass: self-granted, reviewed later (when the channel allows it).
        #[arg(long)]
        break_glass: bool,
    },
    /// Approve.
    Approve {
        /// The request id (or its first 8 or more characters).
        id: String,
    },
    /// Deny.
    Deny {
        /// The request id (or its first 8 or more characters).
        id: String,
        /// Why (shown to the requester and kept in the audit trail).
        #[arg(long)]
        reason: Option<String>,
    },
    /// End access now (break-glass revoke from a terminal).
    Revoke {
        /// The request id (or its first 8 or more characters).
        id: String,
        /// Why (kept in the audit trail).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Record an approver's review of a break-glass grant (`--as` an approver of the channel
    /// other than the requester); the request stops being review pending.
    Review {
        /// The request id (or its first 8 or more characters).
        id: String,
        /// What the review found (kept in the audit trail).
        #[arg(long)]
        note: Option<String>,
    },
    /// Withdraw a pending request.
    Cancel {
        /// The request id (or its first 8 or more characters).
        id: String,
    },
    /// Lengthen a grant.
    Extend {
        /// The request id (or its first 8 or more characters).
        id: String,
        /// Minutes to add (within the channel's maximum).
        minutes: u32,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// A channel's bound accounts and policy.
    Show {
        /// The Mattermost channel id.
        channel: String,
    },
    /// Bind an account (and optionally a permission set) to a channel.
    Bind {
        /// The Mattermost channel id.
        channel: String,
        /// The AWS account id (12 digits).
        account: String,
        /// The permission set ARN granted for this account.
        #[arg(long)]
        permission_set: Option<String>,
    },
    /// Unbind an account from a channel.
    Unbind {
        /// The Mattermost channel id.
        channel: String,
        /// The AWS account id.
        account: String,
    },
    /// Set a channel's approvers (Mattermost user ids) and how many must approve.
    Approvers {
        /// The Mattermost channel id.
        channel: String,
        /// The approvers' Mattermost user ids.
        #[arg(required = true)]
        approvers: Vec<String>,
        /// How many of them must approve (N of N-of-M).
        #[arg(long)]
        required: Option<u32>,
    },
    /// Change policy settings, the same words as `/jit policy` in chat: `max-hours=4
    /// self-approval=off pending-timeout=480 require-ticket=on ticket-or-reason=off
    /// break-glass=on break-glass-max=60 required=2`. The API's field names
    /// (`max_request_hours=4`, …) are accepted too.
    Policy {
        /// The Mattermost channel id.
        channel: String,
        /// `name=value` settings.
        #[arg(required = true)]
        changes: Vec<String>,
    },
}

/// A refusal is an error (its code and message; exit 1); with `--json` the answer is printed
/// (exit 0); `None` when the caller prints its table.
#[allow(clippy::print_stdout)]
fn refused_or_json<T: serde::Serialize>(
    api: &Api,
    answer: &Reply<T>,
) -> anyhow::Result<Option<std::process::ExitCode>> {
    match &answer.outcome {
        Err(e) => Err(CliError::refused(e).into()),
        Ok(v) if api.json => {
            println!("{}", serde_json::to_string(v)?);
            Ok(Some(std::process::ExitCode::SUCCESS))
        }
        Ok(_) => Ok(None),
    }
}

/// One `name=value` policy change into the body, in the vocabulary chat uses
/// ([`jit_proto::wire::POLICY_SETTINGS`]; the API's field names are aliases).
fn policy_change(b: &mut PolicyBody, change: &str) -> anyhow::Result<()> {
    b.apply_setting(change).map_err(|e| {
        CliError::new("invalid_policy_setting", e.0).hint(
            "settings are name=value, e.g. max-hours=4 self-approval=off break-glass=on \
             (docs/mattermost.md lists them all)",
        )
    })?;
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
        // What a revoke leaves running: open sessions keep their credentials this long.
        for d in a.role_session_durations.iter().flatten() {
            println!(
                "  sessions {}  last {} (a revoke does not end open sessions)",
                d.permission_set_arn, d.session_duration
            );
        }
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
            CliError::new("actor_missing", "this command needs to know who acts")
                .hint("--as <mattermost-user-id> (or JIT_ACTOR); it is recorded in the audit trail")
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
            review_pending,
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
                let page = a.outcome.map_err(|e| CliError::refused(&e))?;
                items.extend(
                    page.items
                        .into_iter()
                        .filter(|r| !review_pending || r.review_pending),
                );
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
        RequestsCommand::Review { id, note } => {
            c.review(
                &id,
                &DecisionBody {
                    who: who()?,
                    reason: note,
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
