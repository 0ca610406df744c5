//! AWS IAM Identity Center: an account assignment of a permission set to a user, through the
//! AWS SDK for Rust. The user is found in the Identity Store by `userName`, then by
//! `emails.value` (answers cached). Creation and deletion are asynchronous in AWS: their status
//! is polled with backoff up to a deadline. "Already exists" and "already gone" are success; an
//! assignment the user held before the grant is reported as pre-existing so the lifecycle never
//! removes it.

use crate::{AccessProvider, Assigned, ProviderError, Target};
use async_trait::async_trait;
use aws_sdk_identitystore::types::{AlternateIdentifier, UniqueAttribute};
use aws_sdk_ssoadmin::types::{PrincipalType, StatusValues, TargetType};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

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
    polling: Polling,
    default_permission_set: Option<String>,
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
            polling,
            default_permission_set: None,
        }
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

    async fn wait(
        &self,
        instance: &str,
        request_id: &str,
        creation: bool,
    ) -> Result<(), ProviderError> {
        let start = tokio::time::Instant::now();
        let mut delay = self.polling.initial;
        loop {
            let (status, reason) = if creation {
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
            } else {
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
            };
            match status {
                Some(StatusValues::Succeeded) => return Ok(()),
                Some(StatusValues::Failed) => {
                    let reason = reason.unwrap_or_default();
                    let lower = reason.to_ascii_lowercase();
                    if lower.contains("already exists")
                        || lower.contains("not found")
                        || lower.contains("does not exist")
                    {
                        return Ok(());
                    }
                    return Err(ProviderError::Retry(format!(
                        "assignment {} failed: {reason}",
                        if creation { "creation" } else { "deletion" }
                    )));
                }
                _ => {}
            }
            if start.elapsed() + delay > self.polling.deadline {
                return Err(ProviderError::Retry(format!(
                    "assignment still in progress after {:?}",
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
            self.wait(&instance, id, true).await?;
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
            self.wait(&instance, id, false).await?;
        }
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
