//! The IAM Identity Center provider through the real AWS SDK against moto's server, with a
//! fault-injecting proxy in front of it for the polling path (moto answers SUCCEEDED at once).
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
    let polls = Arc::new(AtomicUsize::new(0));
    let seen = polls.clone();
    let client = reqwest::Client::new();
    let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
        let (client, moto, seen) = (client.clone(), moto.clone(), seen.clone());
        async move {
            let (parts, body) = req.into_parts();
            let body = axum::body::to_bytes(body, 1 << 20).await.unwrap();
            let target = parts
                .headers
                .get("x-amz-target")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
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
    (format!("http://{addr}"), polls)
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
