//! The IAM Identity Center provider through the real AWS SDK against moto's server, with a
//! fault-injecting proxy in front of it for the polling path (moto answers SUCCEEDED at once).
//!
//! What moto cannot show about revoking active sessions: it stores a permission set's inline
//! policy as text and answers provisioning at once, but it evaluates no IAM policy and issues no
//! role sessions, so these tests pin the policy document we write (the deny statement, its
//! condition, what is kept and dropped) and the calls made, not its effect on tokens. In real
//! AWS, once the permission set is provisioned to the account the role's inline policy carries
//! the statement, and every call made with that user's role credentials issued before the revoke
//! time (`aws:TokenIssueTime`) is refused with an explicit deny, within IAM's propagation delay
//! (seconds); sessions opened after the revoke time are not affected.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use aws_sdk_identitystore::types::{Email, Name};
use jit_grants::{AccessProvider, IdentityCenterProvider, Polling, ProviderError, Target};
use jit_testkit::Moto;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

struct Fixture {
    moto: Moto,
    conf: aws_config::SdkConfig,
    instance: String,
    permission_set: String,
}

async fn fixture() -> Fixture {
    let moto = Moto::start().unwrap();
    let conf = moto.sdk_config().await;
    let sso = aws_sdk_ssoadmin::Client::new(&conf);
    let inst = sso.list_instances().send().await.unwrap();
    let inst = &inst.instances()[0];
    let (arn, store) = (
        inst.instance_arn().unwrap().to_owned(),
        inst.identity_store_id().unwrap().to_owned(),
    );
    // moto answers CreatePermissionSet with a SessionDuration the SDK cannot parse, and does not
    // check that a permission set exists; an ARN of the right shape stands in for one.
    let ins = arn.rsplit('/').next().unwrap();
    let ps = format!("arn:aws:sso:::permissionSet/{ins}/ps-0123456789abcdef");
    let ids = aws_sdk_identitystore::Client::new(&conf);
    for (user_name, email) in [
        ("alice@example.com", "alice@example.com"),
        ("bob", "bob@example.com"),
    ] {
        ids.create_user()
            .identity_store_id(&store)
            .user_name(user_name)
            .display_name(user_name)
            .name(Name::builder().given_name("G").family_name("F").build())
            .emails(
                Email::builder()
                    .value(email)
                    .primary(true)
                    .r#type("work")
                    .build(),
            )
            .send()
            .await
            .unwrap();
    }
    Fixture {
        moto,
        conf,
        instance: arn,
        permission_set: ps,
    }
}

fn target(email: &str, ps: Option<&str>) -> Target {
    Target {
        request_id: "r1".into(),
        user_email: email.into(),
        account_id: "123456789012".into(),
        permission_set_arn: ps.map(str::to_owned),
    }
}

fn fast() -> Polling {
    Polling {
        initial: Duration::from_millis(5),
        max: Duration::from_millis(20),
        deadline: Duration::from_secs(5),
    }
}

#[tokio::test]
async fn assignments_are_idempotent_and_standing_ones_are_reported() {
    let f = fixture().await;
    let p = IdentityCenterProvider::new(&f.conf, None, fast());
    let alice = target("alice@example.com", Some(&f.permission_set));
    assert!(!p.is_assigned(&alice).await.unwrap());
    assert!(!p.grant(&alice).await.unwrap().pre_existing);
    assert!(p.is_assigned(&alice).await.unwrap());
    assert!(
        p.grant(&alice).await.unwrap().pre_existing,
        "a second grant finds it in place"
    );
    p.revoke(&alice).await.unwrap();
    assert!(!p.is_assigned(&alice).await.unwrap());
    p.revoke(&alice).await.unwrap();

    // Found by email when the user name differs.
    let bob = target("bob@example.com", Some(&f.permission_set));
    p.grant(&bob).await.unwrap();
    assert!(p.is_assigned(&bob).await.unwrap());
    // The drift check's view: who holds the assignment, by email.
    let fresh = IdentityCenterProvider::new(&f.conf, None, fast());
    assert_eq!(
        fresh
            .assigned_users("123456789012", Some(&f.permission_set))
            .await
            .unwrap(),
        Some(vec!["bob@example.com".to_owned()])
    );
    assert_eq!(
        p.user_id("bob@example.com").await.unwrap(),
        p.user_id("bob@example.com").await.unwrap()
    );

    let nobody = target("nobody@example.com", Some(&f.permission_set));
    assert!(
        matches!(p.grant(&nobody).await, Err(ProviderError::Permanent(m)) if m.contains("no Identity Store user"))
    );
    let no_ps = target("alice@example.com", None);
    assert!(
        matches!(p.grant(&no_ps).await, Err(ProviderError::Permanent(m)) if m.contains("no permission set"))
    );
    // With the old backend's single permission set configured, a binding without one (as the
    // existing plugin's /jit bind makes them) grants and revokes that one.
    let p = IdentityCenterProvider::new(&f.conf, None, fast())
        .with_default_permission_set(Some(f.permission_set.clone()));
    assert!(!p.grant(&no_ps).await.unwrap().pre_existing);
    assert!(
        IdentityCenterProvider::new(&f.conf, None, fast())
            .is_assigned(&alice)
            .await
            .unwrap(),
        "the assignment is of the default permission set"
    );
    p.revoke(&no_ps).await.unwrap();
    assert!(!p.is_assigned(&alice).await.unwrap());
    drop(f.moto);
}

/// Forwards to moto; answers the first `stall` creation-status polls with IN_PROGRESS.
async fn proxy(moto: String, stall: usize) -> (String, Arc<AtomicUsize>) {
    let p = spy(moto, stall, 0).await;
    (p.url, p.creation_polls)
}

/// The proxy in front of moto, and what it saw.
struct Spy {
    url: String,
    creation_polls: Arc<AtomicUsize>,
    provisioning_polls: Arc<AtomicUsize>,
    /// Every operation called (the tail of `X-Amz-Target`), in order.
    calls: Arc<std::sync::Mutex<Vec<String>>>,
}

impl Spy {
    fn called(&self, op: &str) -> usize {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.as_str() == op)
            .count()
    }
}

/// Forwards to moto and records every operation; answers the first `stall` creation-status
/// polls with IN_PROGRESS; with `stall_provisioning` > 0, answers ProvisionPermissionSet with
/// IN_PROGRESS and then (moto has no DescribePermissionSetProvisioningStatus) that many
/// IN_PROGRESS polls before SUCCEEDED.
async fn spy(moto: String, stall: usize, stall_provisioning: usize) -> Spy {
    let polls = Arc::new(AtomicUsize::new(0));
    let seen = polls.clone();
    let provisioning_polls = Arc::new(AtomicUsize::new(0));
    let seen_provisioning = provisioning_polls.clone();
    let calls = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = calls.clone();
    let client = reqwest::Client::new();
    let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
        let (client, moto, seen, seen_provisioning, log) = (
            client.clone(),
            moto.clone(),
            seen.clone(),
            seen_provisioning.clone(),
            log.clone(),
        );
        async move {
            let (parts, body) = req.into_parts();
            let body = axum::body::to_bytes(body, 1 << 20).await.unwrap();
            let target = parts
                .headers
                .get("x-amz-target")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            let op = target.rsplit('.').next().unwrap_or("").to_owned();
            log.lock().unwrap().push(op.clone());
            if op == "DescribePermissionSetProvisioningStatus" {
                let n = seen_provisioning.fetch_add(1, Ordering::SeqCst);
                let status = if n < stall_provisioning {
                    "IN_PROGRESS"
                } else {
                    "SUCCEEDED"
                };
                let text = serde_json::json!({"PermissionSetProvisioningStatus": {
                    "RequestId": "provisioning-1", "Status": status}})
                .to_string();
                return axum::response::Response::builder()
                    .status(200)
                    .header("content-type", "application/x-amz-json-1.1")
                    .body(axum::body::Body::from(text))
                    .unwrap();
            }
            let mut rb = client.request(
                parts.method.clone(),
                format!(
                    "{moto}{}",
                    parts
                        .uri
                        .path_and_query()
                        .map(|p| p.as_str())
                        .unwrap_or("/")
                ),
            );
            for (k, v) in &parts.headers {
                if k != "host" {
                    rb = rb.header(k, v);
                }
            }
            let resp = rb.body(body).send().await.unwrap();
            let status = resp.status().as_u16();
            let mut text = resp.text().await.unwrap();
            if target.ends_with("DescribeAccountAssignmentCreationStatus") {
                let n = seen.fetch_add(1, Ordering::SeqCst);
                if n < stall {
                    text = text.replace("SUCCEEDED", "IN_PROGRESS");
                }
            }
            if op == "ProvisionPermissionSet" && stall_provisioning > 0 {
                text = text.replace("SUCCEEDED", "IN_PROGRESS");
            }
            axum::response::Response::builder()
                .status(status)
                .header("content-type", "application/x-amz-json-1.1")
                .body(axum::body::Body::from(text))
                .unwrap()
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Spy {
        url: format!("http://{addr}"),
        creation_polls: polls,
        provisioning_polls,
        calls,
    }
}

#[tokio::test]
async fn creation_status_is_polled_until_it_succeeds_or_the_deadline() {
    let f = fixture().await;
    let (url, polls) = proxy(f.moto.endpoint.clone(), 3).await;
    let conf = f.conf.to_builder().endpoint_url(url).build();
    let p = IdentityCenterProvider::new(&conf, None, fast());
    let alice = target("alice@example.com", Some(&f.permission_set));
    p.grant(&alice).await.unwrap();
    assert_eq!(
        polls.load(Ordering::SeqCst),
        4,
        "three IN_PROGRESS answers, then SUCCEEDED"
    );

    let (url, _) = proxy(f.moto.endpoint.clone(), usize::MAX).await;
    let conf = f.conf.to_builder().endpoint_url(url).build();
    let slow = Polling {
        deadline: Duration::from_millis(100),
        ..fast()
    };
    let p = IdentityCenterProvider::new(&conf, None, slow);
    let bob = target("bob@example.com", Some(&f.permission_set));
    match p.grant(&bob).await {
        Err(ProviderError::Retry(m)) => assert!(m.contains("still in progress"), "{m}"),
        other => panic!("{other:?}"),
    }
}

/// A real permission set in moto (with the session duration given: moto's default is a number
/// the SDK cannot read), with `inline` as its inline policy, provisioned to the account.
async fn permission_set(f: &Fixture, session: &str, inline: &serde_json::Value) -> String {
    let sso = aws_sdk_ssoadmin::Client::new(&f.conf);
    let ps = sso
        .create_permission_set()
        .instance_arn(&f.instance)
        .name("Admin")
        .session_duration(session)
        .send()
        .await
        .unwrap()
        .permission_set()
        .unwrap()
        .permission_set_arn()
        .unwrap()
        .to_owned();
    sso.put_inline_policy_to_permission_set()
        .instance_arn(&f.instance)
        .permission_set_arn(&ps)
        .inline_policy(inline.to_string())
        .send()
        .await
        .unwrap();
    sso.provision_permission_set()
        .instance_arn(&f.instance)
        .permission_set_arn(&ps)
        .target_type(aws_sdk_ssoadmin::types::ProvisionTargetType::AwsAccount)
        .target_id("123456789012")
        .send()
        .await
        .unwrap();
    ps
}

async fn inline_policy(f: &Fixture, ps: &str) -> String {
    aws_sdk_ssoadmin::Client::new(&f.conf)
        .get_inline_policy_for_permission_set()
        .instance_arn(&f.instance)
        .permission_set_arn(ps)
        .send()
        .await
        .unwrap()
        .inline_policy()
        .unwrap_or_default()
        .to_owned()
}

fn statements(policy: &str) -> Vec<serde_json::Value> {
    let v: serde_json::Value = serde_json::from_str(policy).unwrap();
    v["Statement"].as_array().unwrap().clone()
}

/// A deny of the user's sessions (role session name = Identity Center user name) in the
/// account issued before `before`.
fn deny(session_name: &str, before: &str) -> serde_json::Value {
    serde_json::json!({
        "Sid": jit_grants::sessions::sid(session_name, "123456789012"),
        "Effect": "Deny",
        "Action": "*",
        "Resource": "*",
        "Condition": {
            "StringLike": {"aws:userid": format!("*:{session_name}")},
            "StringEquals": {"aws:PrincipalAccount": "123456789012"},
            "DateLessThan": {"aws:TokenIssueTime": before}
        }
    })
}

/// An early revoke with `revoke_active_sessions` on: the user's sessions are denied through the
/// permission set's inline policy, which is provisioned to the account. Moto shows the document
/// and the calls; what real AWS then does with tokens is in this file's header.
#[tokio::test]
async fn an_early_revoke_denies_the_sessions_it_leaves_open() {
    use time::macros::datetime;
    let f = fixture().await;
    let theirs = serde_json::json!({"Sid": "ReadLogs", "Effect": "Allow",
        "Action": ["logs:Get*"], "Resource": "*"});
    let ps = permission_set(
        &f,
        "PT2H",
        &serde_json::json!({"Version": "2012-10-17", "Statement": [theirs.clone()]}),
    )
    .await;
    let proxy = spy(f.moto.endpoint.clone(), 0, 0).await;
    let conf = f.conf.to_builder().endpoint_url(proxy.url.clone()).build();
    let p = IdentityCenterProvider::new(&conf, None, fast()).with_active_session_revocation(true);
    assert!(p.revokes_active_sessions());
    assert_eq!(
        p.session_duration(Some(&ps)).await.unwrap(),
        Some(jit_grants::SessionDuration {
            permission_set_arn: ps.clone(),
            duration: "PT2H".into()
        })
    );
    let t0 = datetime!(2025-11-25 12:00:00.400 UTC);

    // Alice (user name = email) is revoked early.
    let alice = target("alice@example.com", Some(&ps));
    p.grant(&alice).await.unwrap();
    p.revoke(&alice).await.unwrap();
    p.revoke_active_sessions(&alice, t0).await.unwrap();
    let after_alice = inline_policy(&f, &ps).await;
    assert_eq!(
        statements(&after_alice),
        vec![
            theirs.clone(),
            deny("alice@example.com", "2025-11-25T12:00:01Z")
        ],
        "the non-jit statement is kept; the deny names the role session and the revoke time (rounded up to the second)"
    );
    assert_eq!(proxy.called("PutInlinePolicyToPermissionSet"), 1);
    assert_eq!(
        proxy.called("ProvisionPermissionSet"),
        1,
        "provisioned so the role in the account carries it"
    );

    // A retried revoke job runs it again: same document, nothing written, provisioned again
    // (the earlier attempt may have failed before provisioning).
    p.revoke_active_sessions(&alice, t0).await.unwrap();
    assert_eq!(inline_policy(&f, &ps).await, after_alice);
    assert_eq!(proxy.called("PutInlinePolicyToPermissionSet"), 1);
    assert_eq!(proxy.called("ProvisionPermissionSet"), 2);

    // Bob's sessions are named after his user name, not his email.
    let bob = target("bob@example.com", Some(&ps));
    p.grant(&bob).await.unwrap();
    p.revoke(&bob).await.unwrap();
    p.revoke_active_sessions(&bob, t0 + time::Duration::minutes(90))
        .await
        .unwrap();
    assert_eq!(
        statements(&inline_policy(&f, &ps).await),
        vec![
            theirs.clone(),
            deny("alice@example.com", "2025-11-25T12:00:01Z"),
            deny("bob", "2025-11-25T13:30:01Z"),
        ],
        "a second user adds a second statement; alice's (90 min old, sessions of 2 h) stays"
    );

    // Two hours after alice's revoke no token it denies can be alive: her statement is dropped
    // at the next edit, bob's stays (moved to his later revoke).
    p.revoke_active_sessions(&bob, t0 + time::Duration::minutes(121))
        .await
        .unwrap();
    assert_eq!(
        statements(&inline_policy(&f, &ps).await),
        vec![theirs, deny("bob", "2025-11-25T14:01:01Z")]
    );
    drop(f.moto);
}

/// With the feature off (the default) the inline policy is never read, written or provisioned.
#[tokio::test]
async fn with_the_feature_off_the_inline_policy_is_untouched() {
    let f = fixture().await;
    let inline = serde_json::json!({"Version": "2012-10-17", "Statement": [
        {"Sid": "ReadLogs", "Effect": "Allow", "Action": "logs:Get*", "Resource": "*"}]});
    let ps = permission_set(&f, "PT1H", &inline).await;
    let proxy = spy(f.moto.endpoint.clone(), 0, 0).await;
    let conf = f.conf.to_builder().endpoint_url(proxy.url.clone()).build();
    let p = IdentityCenterProvider::new(&conf, None, fast());
    assert!(!p.revokes_active_sessions());
    let alice = target("alice@example.com", Some(&ps));
    p.grant(&alice).await.unwrap();
    p.revoke(&alice).await.unwrap();
    p.revoke_active_sessions(&alice, time::macros::datetime!(2025-11-25 12:00 UTC))
        .await
        .unwrap();
    for op in [
        "GetInlinePolicyForPermissionSet",
        "PutInlinePolicyToPermissionSet",
        "ProvisionPermissionSet",
    ] {
        assert_eq!(proxy.called(op), 0, "{op}");
    }
    assert_eq!(inline_policy(&f, &ps).await, inline.to_string());
    // The session duration is shown all the same.
    assert_eq!(
        p.session_duration(Some(&ps))
            .await
            .unwrap()
            .map(|d| d.duration),
        Some("PT1H".into())
    );
    assert_eq!(p.session_duration(None).await.unwrap(), None);
    drop(f.moto);
}

/// Provisioning is asynchronous in AWS: its status is polled like an assignment's (moto answers
/// SUCCEEDED at once and has no status call, so the proxy plays both).
#[tokio::test]
async fn provisioning_is_waited_for() {
    let f = fixture().await;
    let ps = permission_set(&f, "PT1H", &serde_json::json!({"Statement": []})).await;
    let proxy = spy(f.moto.endpoint.clone(), 0, 2).await;
    let conf = f.conf.to_builder().endpoint_url(proxy.url.clone()).build();
    let p = IdentityCenterProvider::new(&conf, None, fast()).with_active_session_revocation(true);
    let alice = target("alice@example.com", Some(&ps));
    p.revoke_active_sessions(&alice, time::macros::datetime!(2025-11-25 12:00 UTC))
        .await
        .unwrap();
    assert_eq!(
        proxy.provisioning_polls.load(Ordering::SeqCst),
        3,
        "two IN_PROGRESS answers, then SUCCEEDED"
    );
    let policy = inline_policy(&f, &ps).await;
    assert_eq!(
        statements(&policy),
        vec![deny("alice@example.com", "2025-11-25T12:00:00Z")]
    );
    let v: serde_json::Value = serde_json::from_str(&policy).unwrap();
    assert_eq!(
        v["Version"], "2012-10-17",
        "a version-less document gets one"
    );
}
