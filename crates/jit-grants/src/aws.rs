//! AWS IAM Identity Center: an account assignment of a permission set to a user, through the
//! AWS SDK for Rust. The user is found in the Identity Store by `userName`, then by
//! `emails.value` (answers cached). Creation and deletion are asynchronous in AWS: their status
//! is polled with backoff up to a deadline. "Already exists" and "already gone" are success; an
//! assignment the user held before the grant is reported as pre-existing so the lifecycle never
//! removes it.
//!
//! Opt-in ([`IdentityCenterProvider::with_active_session_revocation`]): after an early revoke,
//! the user's open sessions are denied through the permission set's inline policy, which is then
//! provisioned to the account (see [`crate::sessions`]).

use crate::{AccessProvider, Assigned, ProviderError, SessionDuration, Target, sessions};
use async_trait::async_trait;
use aws_sdk_identitystore::types::{AlternateIdentifier, UniqueAttribute};
use aws_sdk_ssoadmin::types::{PrincipalType, ProvisionTargetType, StatusValues, TargetType};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long a permission set's session duration is kept: it is configuration, read on every
/// `GET /config/accounts` and early revoke, and changes rarely.
const DURATION_TTL: Duration = Duration::from_secs(300);

/// An asynchronous Identity Center operation whose status is polled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Creation,
    Deletion,
    Provisioning,
}

impl Op {
    fn what(self) -> &'static str {
        match self {
            Op::Creation => "assignment creation",
            Op::Deletion => "assignment deletion",
            Op::Provisioning => "permission set provisioning",
        }
    }
}

/// How status is polled.
#[derive(Debug, Clone, Copy)]
pub struct Polling {
    /// First wait.
    pub initial: Duration,
    /// Longest wait between polls.
    pub max: Duration,
    /// Give up (and retry the whole call later) after this long.
    pub deadline: Duration,
}

impl Default for Polling {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(250),
            max: Duration::from_secs(5),
            deadline: Duration::from_secs(120),
        }
    }
}

/// The IAM Identity Center provider.
#[derive(Debug)]
pub struct IdentityCenterProvider {
    sso: aws_sdk_ssoadmin::Client,
    ids: aws_sdk_identitystore::Client,
    instance: Mutex<Option<(String, String)>>,
    users: Mutex<HashMap<String, String>>,
    /// Identity Store user id → user name (the role session name Identity Center gives).
    user_names: Mutex<HashMap<String, String>>,
    /// Permission set → (when read, its `SessionDuration`).
    durations: Mutex<HashMap<String, (tokio::time::Instant, Option<String>)>>,
    /// One inline-policy edit at a time per permission set in this process.
    policy_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    polling: Polling,
    default_permission_set: Option<String>,
    revoke_active_sessions: bool,
}

fn sdk_err<E: std::error::Error + 'static>(what: &str, e: &E) -> String {
    let mut s = format!("{what}: {e}");
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(&format!(": {c}"));
        cur = c.source();
    }
    s
}

/// Throttling, server errors and transport failures are worth retrying; the rest needs a human.
fn classify<E, R>(what: &str, e: &aws_sdk_ssoadmin::error::SdkError<E, R>) -> ProviderError
where
    E: std::error::Error + aws_sdk_ssoadmin::error::ProvideErrorMetadata + 'static,
    R: std::fmt::Debug + 'static,
{
    let msg = sdk_err(what, e);
    match e {
        aws_sdk_ssoadmin::error::SdkError::ServiceError(se) => match se.err().code() {
            Some(
                "ThrottlingException" | "InternalServerException" | "ServiceQuotaExceededException",
            ) => ProviderError::Retry(msg),
            _ => ProviderError::Permanent(msg),
        },
        _ => ProviderError::Retry(msg),
    }
}

impl IdentityCenterProvider {
    /// A provider. `instance_arn` and `identity_store_id` are found with `ListInstances` when
    /// not given.
    pub fn new(
        config: &aws_config::SdkConfig,
        instance: Option<(String, String)>,
        polling: Polling,
    ) -> Self {
        Self {
            sso: aws_sdk_ssoadmin::Client::new(config),
            ids: aws_sdk_identitystore::Client::new(config),
            instance: Mutex::new(instance),
            users: Mutex::new(HashMap::new()),
            user_names: Mutex::new(HashMap::new()),
            durations: Mutex::new(HashMap::new()),
            policy_locks: Mutex::new(HashMap::new()),
            polling,
            default_permission_set: None,
            revoke_active_sessions: false,
        }
    }

    /// Opt-in (`grants.revoke_active_sessions`): on an early revoke, also deny the user's
    /// sessions opened before it through the permission set's inline policy and provision it to
    /// the account ([`AccessProvider::revoke_active_sessions`]). Off, the inline policy is never
    /// read or written.
    pub fn with_active_session_revocation(mut self, on: bool) -> Self {
        self.revoke_active_sessions = on;
        self
    }

    /// The permission set of grants whose binding names none (the old backend's single
    /// `PERMISSION_SET_ARN`; bindings made through the existing plugin name none).
    pub fn with_default_permission_set(mut self, arn: Option<String>) -> Self {
        self.default_permission_set = arn;
        self
    }

    async fn instance(&self) -> Result<(String, String), ProviderError> {
        if let Some(i) = self.instance.lock().ok().and_then(|g| g.clone()) {
            return Ok(i);
        }
        let out = self.list_instances().await?;
        self.keep_first(&out)
    }

    async fn list_instances(
        &self,
    ) -> Result<aws_sdk_ssoadmin::operation::list_instances::ListInstancesOutput, ProviderError>
    {
        self.sso
            .list_instances()
            .send()
            .await
            .map_err(|e| classify("ListInstances", &e))
    }

    /// The first instance of a `ListInstances` answer, kept for later calls.
    fn keep_first(
        &self,
        out: &aws_sdk_ssoadmin::operation::list_instances::ListInstancesOutput,
    ) -> Result<(String, String), ProviderError> {
        let first = out.instances().first().ok_or_else(|| {
            ProviderError::Permanent(
                "no IAM Identity Center instance in this account and region".into(),
            )
        })?;
        let pair = (
            first.instance_arn().unwrap_or_default().to_owned(),
            first.identity_store_id().unwrap_or_default().to_owned(),
        );
        if let Ok(mut g) = self.instance.lock() {
            *g = Some(pair.clone());
        }
        Ok(pair)
    }

    /// The Identity Store user id for an email: by `userName`, then by `emails.value`.
    pub async fn user_id(&self, email: &str) -> Result<String, ProviderError> {
        if let Some(id) = self.users.lock().ok().and_then(|m| m.get(email).cloned()) {
            return Ok(id);
        }
        let (_, store) = self.instance().await?;
        for path in ["userName", "emails.value"] {
            let attr = UniqueAttribute::builder()
                .attribute_path(path)
                .attribute_value(aws_smithy_types::Document::String(email.to_owned()))
                .build()
                .map_err(|e| ProviderError::Permanent(e.to_string()))?;
            match self
                .ids
                .get_user_id()
                .identity_store_id(&store)
                .alternate_identifier(AlternateIdentifier::UniqueAttribute(attr))
                .send()
                .await
            {
                Ok(out) => {
                    let id = out.user_id().to_owned();
                    if let Ok(mut m) = self.users.lock() {
                        m.insert(email.to_owned(), id.clone());
                    }
                    return Ok(id);
                }
                Err(e) => {
                    let not_found = e
                        .as_service_error()
                        .is_some_and(|se| se.is_resource_not_found_exception());
                    if !not_found {
                        let msg = sdk_err("GetUserId", &e);
                        return Err(match e {
                            aws_sdk_identitystore::error::SdkError::ServiceError(_) => {
                                ProviderError::Permanent(msg)
                            }
                            _ => ProviderError::Retry(msg),
                        });
                    }
                }
            }
        }
        Err(ProviderError::Permanent(format!(
            "no Identity Store user has the user name or email {email}"
        )))
    }

    fn permission_set<'a>(&'a self, t: &'a Target) -> Result<&'a str, ProviderError> {
        t.permission_set_arn
            .as_deref()
            .or(self.default_permission_set.as_deref())
            .ok_or_else(|| {
                ProviderError::Permanent(
                    "the binding names no permission set for this account and \
                     grants.default_permission_set_arn is not set"
                        .into(),
                )
            })
    }

    /// Identity Store user ids holding `permission_set_arn` on `account_id` now.
    async fn assigned_user_ids(
        &self,
        account_id: &str,
        permission_set_arn: &str,
    ) -> Result<Vec<String>, ProviderError> {
        let (instance, _) = self.instance().await?;
        let mut ids = Vec::new();
        let mut token = None;
        loop {
            let out = self
                .sso
                .list_account_assignments()
                .instance_arn(&instance)
                .account_id(account_id)
                .permission_set_arn(permission_set_arn)
                .set_next_token(token)
                .send()
                .await
                .map_err(|e| classify("ListAccountAssignments", &e))?;
            ids.extend(
                out.account_assignments()
                    .iter()
                    .filter(|a| a.principal_type() == Some(&PrincipalType::User))
                    .filter_map(|a| a.principal_id().map(str::to_owned)),
            );
            match out.next_token() {
                Some(t) => token = Some(t.to_owned()),
                None => return Ok(ids),
            }
        }
    }

    /// Whether the user holds the assignment now.
    pub async fn is_assigned(&self, t: &Target) -> Result<bool, ProviderError> {
        let ps = self.permission_set(t)?;
        let user = self.user_id(&t.user_email).await?;
        Ok(self
            .assigned_user_ids(&t.account_id, ps)
            .await?
            .contains(&user))
    }

    /// The status of an asynchronous operation: (status, failure reason).
    async fn status(
        &self,
        instance: &str,
        request_id: &str,
        op: Op,
    ) -> Result<(Option<StatusValues>, Option<String>), ProviderError> {
        Ok(match op {
            Op::Creation => {
                let out = self
                    .sso
                    .describe_account_assignment_creation_status()
                    .instance_arn(instance)
                    .account_assignment_creation_request_id(request_id)
                    .send()
                    .await
                    .map_err(|e| classify("DescribeAccountAssignmentCreationStatus", &e))?;
                let s = out.account_assignment_creation_status();
                (
                    s.and_then(|s| s.status().cloned()),
                    s.and_then(|s| s.failure_reason().map(str::to_owned)),
                )
            }
            Op::Deletion => {
                let out = self
                    .sso
                    .describe_account_assignment_deletion_status()
                    .instance_arn(instance)
                    .account_assignment_deletion_request_id(request_id)
                    .send()
                    .await
                    .map_err(|e| classify("DescribeAccountAssignmentDeletionStatus", &e))?;
                let s = out.account_assignment_deletion_status();
                (
                    s.and_then(|s| s.status().cloned()),
                    s.and_then(|s| s.failure_reason().map(str::to_owned)),
                )
            }
            Op::Provisioning => {
                let out = self
                    .sso
                    .describe_permission_set_provisioning_status()
                    .instance_arn(instance)
                    .provision_permission_set_request_id(request_id)
                    .send()
                    .await
                    .map_err(|e| classify("DescribePermissionSetProvisioningStatus", &e))?;
                let s = out.permission_set_provisioning_status();
                (
                    s.and_then(|s| s.status().cloned()),
                    s.and_then(|s| s.failure_reason().map(str::to_owned)),
                )
            }
        })
    }

    /// `Some(result)` once `status` is final. For assignments, "already exists" and "not found"
    /// failures are success (idempotence); a failed provisioning is worth retrying.
    fn settled(
        op: Op,
        status: Option<&StatusValues>,
        reason: Option<String>,
    ) -> Option<Result<(), ProviderError>> {
        match status {
            Some(StatusValues::Succeeded) => Some(Ok(())),
            Some(StatusValues::Failed) => {
                let reason = reason.unwrap_or_default();
                let lower = reason.to_ascii_lowercase();
                if op != Op::Provisioning
                    && (lower.contains("already exists")
                        || lower.contains("not found")
                        || lower.contains("does not exist"))
                {
                    return Some(Ok(()));
                }
                Some(Err(ProviderError::Retry(format!(
                    "{} failed: {reason}",
                    op.what()
                ))))
            }
            _ => None,
        }
    }

    async fn wait(&self, instance: &str, request_id: &str, op: Op) -> Result<(), ProviderError> {
        let start = tokio::time::Instant::now();
        let mut delay = self.polling.initial;
        loop {
            let (status, reason) = self.status(instance, request_id, op).await?;
            if let Some(done) = Self::settled(op, status.as_ref(), reason) {
                return done;
            }
            if start.elapsed() + delay > self.polling.deadline {
                return Err(ProviderError::Retry(format!(
                    "{} still in progress after {:?}",
                    if op == Op::Provisioning {
                        op.what()
                    } else {
                        "assignment"
                    },
                    self.polling.deadline
                )));
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(self.polling.max);
        }
    }
}

impl IdentityCenterProvider {
    /// The email of an Identity Store user (primary email, else user name), cached.
    async fn email_of(&self, user_id: &str) -> Result<Option<String>, ProviderError> {
        if let Some(email) = self.users.lock().ok().and_then(|m| {
            m.iter()
                .find(|(_, id)| *id == user_id)
                .map(|(e, _)| e.clone())
        }) {
            return Ok(Some(email));
        }
        let (_, store) = self.instance().await?;
        let out = match self
            .ids
            .describe_user()
            .identity_store_id(&store)
            .user_id(user_id)
            .send()
            .await
        {
            Ok(o) => o,
            Err(e) => return Err(ProviderError::Retry(sdk_err("DescribeUser", &e))),
        };
        let email = out
            .emails()
            .iter()
            .find(|e| e.primary())
            .or_else(|| out.emails().first())
            .and_then(|e| e.value())
            .or(out.user_name())
            .map(str::to_ascii_lowercase);
        if let (Some(e), Ok(mut m)) = (&email, self.users.lock()) {
            m.insert(e.clone(), user_id.to_owned());
        }
        Ok(email)
    }

    /// The user name of an Identity Store user, cached: Identity Center names the user's role
    /// sessions after it, so `aws:userid` of their sessions ends in `:<user name>`.
    async fn user_name_of(&self, user_id: &str) -> Result<String, ProviderError> {
        if let Some(name) = self
            .user_names
            .lock()
            .ok()
            .and_then(|m| m.get(user_id).cloned())
        {
            return Ok(name);
        }
        let (_, store) = self.instance().await?;
        let out = self
            .ids
            .describe_user()
            .identity_store_id(&store)
            .user_id(user_id)
            .send()
            .await
            .map_err(|e| ProviderError::Retry(sdk_err("DescribeUser", &e)))?;
        let name = out
            .user_name()
            .filter(|n| !n.is_empty())
            .ok_or_else(|| {
                ProviderError::Permanent(format!("Identity Store user {user_id} has no user name"))
            })?
            .to_owned();
        if let Ok(mut m) = self.user_names.lock() {
            m.insert(user_id.to_owned(), name.clone());
        }
        Ok(name)
    }

    /// `DescribePermissionSet`'s `SessionDuration`, kept for [`DURATION_TTL`].
    async fn described_session_duration(
        &self,
        instance: &str,
        permission_set_arn: &str,
    ) -> Result<Option<String>, ProviderError> {
        let cached = self.durations.lock().ok().and_then(|m| {
            m.get(permission_set_arn)
                .filter(|(at, _)| at.elapsed() < DURATION_TTL)
                .map(|(_, d)| d.clone())
        });
        if let Some(d) = cached {
            return Ok(d);
        }
        let out = self
            .sso
            .describe_permission_set()
            .instance_arn(instance)
            .permission_set_arn(permission_set_arn)
            .send()
            .await
            .map_err(|e| classify("DescribePermissionSet", &e))?;
        let d = out
            .permission_set()
            .and_then(|p| p.session_duration())
            .map(str::to_owned);
        if let Ok(mut m) = self.durations.lock() {
            m.insert(
                permission_set_arn.to_owned(),
                (tokio::time::Instant::now(), d.clone()),
            );
        }
        Ok(d)
    }

    fn policy_lock(&self, permission_set_arn: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = match self.policy_locks.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        map.retain(|_, l| Arc::strong_count(l) > 1);
        map.entry(permission_set_arn.to_owned())
            .or_default()
            .clone()
    }

    /// Whether the permission set is provisioned to `account_id` now. Removing the last
    /// assignment of a permission set from an account removes its role there (and with it every
    /// session): provisioning it again would only bring back an empty role.
    async fn provisioned_to(
        &self,
        instance: &str,
        permission_set_arn: &str,
        account_id: &str,
    ) -> Result<bool, ProviderError> {
        let mut token = None;
        loop {
            let out = self
                .sso
                .list_accounts_for_provisioned_permission_set()
                .instance_arn(instance)
                .permission_set_arn(permission_set_arn)
                .set_next_token(token)
                .send()
                .await
                .map_err(|e| classify("ListAccountsForProvisionedPermissionSet", &e))?;
            if out.account_ids().iter().any(|a| a == account_id) {
                return Ok(true);
            }
            match out.next_token() {
                Some(t) => token = Some(t.to_owned()),
                None => return Ok(false),
            }
        }
    }

    /// Pushes the permission set's current policies to the role in `account_id` and waits
    /// until that is done.
    async fn provision(
        &self,
        instance: &str,
        permission_set_arn: &str,
        account_id: &str,
    ) -> Result<(), ProviderError> {
        let out = self
            .sso
            .provision_permission_set()
            .instance_arn(instance)
            .permission_set_arn(permission_set_arn)
            .target_type(ProvisionTargetType::AwsAccount)
            .target_id(account_id)
            .send()
            .await;
        let out = match out {
            Ok(o) => o,
            // Another provisioning of this permission set is under way: try again later.
            Err(e)
                if e.as_service_error()
                    .is_some_and(|se| se.is_conflict_exception()) =>
            {
                return Err(ProviderError::Retry(sdk_err("ProvisionPermissionSet", &e)));
            }
            Err(e) => return Err(classify("ProvisionPermissionSet", &e)),
        };
        let Some(status) = out.permission_set_provisioning_status() else {
            return Ok(());
        };
        if let Some(done) = Self::settled(
            Op::Provisioning,
            status.status(),
            status.failure_reason().map(str::to_owned),
        ) {
            return done;
        }
        match status.request_id() {
            Some(id) => self.wait(instance, id, Op::Provisioning).await,
            None => Ok(()),
        }
    }
}

#[async_trait]
impl AccessProvider for IdentityCenterProvider {
    fn name(&self) -> &'static str {
        "aws-identity-center"
    }

    /// `ListInstances` answers, the configured instance is among its answers (or, with none
    /// configured, there is one), and the default permission set, if any, exists.
    async fn check(&self) -> Result<(), ProviderError> {
        let out = self.list_instances().await?;
        let configured = self.instance.lock().ok().and_then(|g| g.clone());
        let instance = match configured {
            Some((arn, _)) => {
                if !out
                    .instances()
                    .iter()
                    .any(|i| i.instance_arn() == Some(&arn))
                {
                    return Err(ProviderError::Permanent(format!(
                        "grants.instance_arn {arn} is not an IAM Identity Center instance of this account and region"
                    )));
                }
                arn
            }
            // None configured: the first instance, kept so grants need not list again.
            None => self.keep_first(&out)?.0,
        };
        if let Some(ps) = &self.default_permission_set {
            self.sso
                .describe_permission_set()
                .instance_arn(&instance)
                .permission_set_arn(ps)
                .send()
                .await
                .map_err(|e| {
                    classify(
                        "DescribePermissionSet (grants.default_permission_set_arn)",
                        &e,
                    )
                })?;
        }
        Ok(())
    }

    async fn grant(&self, t: &Target) -> Result<Assigned, ProviderError> {
        let (instance, _) = self.instance().await?;
        let ps = self.permission_set(t)?.to_owned();
        let user = self.user_id(&t.user_email).await?;
        if self.is_assigned(t).await? {
            return Ok(Assigned { pre_existing: true });
        }
        let out = self
            .sso
            .create_account_assignment()
            .instance_arn(&instance)
            .target_id(&t.account_id)
            .target_type(TargetType::AwsAccount)
            .permission_set_arn(&ps)
            .principal_type(PrincipalType::User)
            .principal_id(&user)
            .send()
            .await;
        let out = match out {
            Ok(o) => o,
            Err(e)
                if e.as_service_error()
                    .is_some_and(|se| se.is_conflict_exception()) =>
            {
                return Ok(Assigned {
                    pre_existing: false,
                });
            }
            Err(e) => return Err(classify("CreateAccountAssignment", &e)),
        };
        if let Some(id) = out
            .account_assignment_creation_status()
            .and_then(|s| s.request_id())
        {
            self.wait(&instance, id, Op::Creation).await?;
        }
        Ok(Assigned {
            pre_existing: false,
        })
    }

    async fn revoke(&self, t: &Target) -> Result<(), ProviderError> {
        let (instance, _) = self.instance().await?;
        let ps = self.permission_set(t)?.to_owned();
        let user = self.user_id(&t.user_email).await?;
        let out = self
            .sso
            .delete_account_assignment()
            .instance_arn(&instance)
            .target_id(&t.account_id)
            .target_type(TargetType::AwsAccount)
            .permission_set_arn(&ps)
            .principal_type(PrincipalType::User)
            .principal_id(&user)
            .send()
            .await;
        let out = match out {
            Ok(o) => o,
            Err(e)
                if e.as_service_error()
                    .is_some_and(|se| se.is_resource_not_found_exception()) =>
            {
                return Ok(());
            }
            Err(e) => return Err(classify("DeleteAccountAssignment", &e)),
        };
        if let Some(id) = out
            .account_assignment_deletion_status()
            .and_then(|s| s.request_id())
        {
            self.wait(&instance, id, Op::Deletion).await?;
        }
        Ok(())
    }

    /// `DescribePermissionSet`'s `SessionDuration` (cached for five minutes).
    async fn session_duration(
        &self,
        permission_set_arn: Option<&str>,
    ) -> Result<Option<SessionDuration>, ProviderError> {
        let Some(ps) = permission_set_arn.or(self.default_permission_set.as_deref()) else {
            return Ok(None);
        };
        let (instance, _) = self.instance().await?;
        Ok(self
            .described_session_duration(&instance, ps)
            .await?
            .map(|duration| SessionDuration {
                permission_set_arn: ps.to_owned(),
                duration,
            }))
    }

    fn revokes_active_sessions(&self) -> bool {
        self.revoke_active_sessions
    }

    /// Reads the permission set's inline policy, puts in it a deny of the user's sessions in the
    /// account issued before `revoked_at` ([`sessions::with_revocation`]), writes it back when
    /// it changed, and provisions the permission set to the account (when it is still
    /// provisioned there) so the role carries it. Every step is idempotent; a failure anywhere
    /// is retried from the start by the revoke job.
    async fn revoke_active_sessions(
        &self,
        t: &Target,
        revoked_at: time::OffsetDateTime,
    ) -> Result<(), ProviderError> {
        if !self.revoke_active_sessions {
            return Ok(());
        }
        let (instance, _) = self.instance().await?;
        let ps = self.permission_set(t)?.to_owned();
        let user = self.user_id(&t.user_email).await?;
        let user_name = self.user_name_of(&user).await?;
        let lock = self.policy_lock(&ps);
        let _one_edit = lock.lock().await;
        let session = self
            .described_session_duration(&instance, &ps)
            .await?
            .as_deref()
            .and_then(sessions::parse_session_duration)
            .unwrap_or(sessions::LONGEST_SESSION);
        let current = self
            .sso
            .get_inline_policy_for_permission_set()
            .instance_arn(&instance)
            .permission_set_arn(&ps)
            .send()
            .await
            .map_err(|e| classify("GetInlinePolicyForPermissionSet", &e))?
            .inline_policy()
            .unwrap_or_default()
            .to_owned();
        let next =
            sessions::with_revocation(&current, &user_name, &t.account_id, revoked_at, session)
                .map_err(ProviderError::Permanent)?;
        if next != current {
            self.sso
                .put_inline_policy_to_permission_set()
                .instance_arn(&instance)
                .permission_set_arn(&ps)
                .inline_policy(next)
                .send()
                .await
                .map_err(|e| classify("PutInlinePolicyToPermissionSet", &e))?;
        }
        // Provisioned even when the policy was already in place: an earlier attempt may have
        // written it and failed before provisioning.
        if self.provisioned_to(&instance, &ps, &t.account_id).await? {
            self.provision(&instance, &ps, &t.account_id).await?;
        }
        tracing::info!(request_id = %t.request_id, account_id = %t.account_id, permission_set = %ps,
            "sessions opened before the revoke are denied through the permission set's inline policy");
        Ok(())
    }

    async fn assigned_users(
        &self,
        account_id: &str,
        permission_set_arn: Option<&str>,
    ) -> Result<Option<Vec<String>>, ProviderError> {
        let Some(ps) = permission_set_arn.or(self.default_permission_set.as_deref()) else {
            return Ok(None);
        };
        let mut users = Vec::new();
        for id in self.assigned_user_ids(account_id, ps).await? {
            if let Some(email) = self.email_of(&id).await? {
                users.push(email);
            }
        }
        Ok(Some(users))
    }
}
