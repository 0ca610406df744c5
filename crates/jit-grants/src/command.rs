//! Runs a configured executable (no shell) for each grant and revoke, with the target as JSON on
//! stdin. Exit 0: done. Exit 75 (EX_TEMPFAIL): try again later. Anything else: failed, with
//! stderr kept (values that look like secrets redacted). This wires in anything else: databases,
//! Kubernetes, directory groups.

use crate::{AccessProvider, Assigned, ProviderError, Target};
use async_trait::async_trait;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// The command provider.
#[derive(Debug, Clone)]
pub struct CommandProvider {
    program: PathBuf,
    args: Vec<String>,
    timeout: Duration,
}

const EX_TEMPFAIL: i32 = 75;
/// Exit code a script uses to say the assignment already existed before the grant.
const EX_PRE_EXISTING: i32 = 10;

impl CommandProvider {
    /// Runs `program args… <action>` with the target on stdin, for at most `timeout`.
    pub fn new(program: impl Into<PathBuf>, args: Vec<String>, timeout: Duration) -> Self {
        Self {
            program: program.into(),
            args,
            timeout,
        }
    }

    async fn run(&self, action: &str, target: &Target) -> Result<i32, ProviderError> {
        /// What the program reads on stdin (documented in docs/configuration.md).
        #[derive(serde::Serialize)]
        struct Input<'a> {
            action: &'a str,
            request_id: &'a str,
            user_email: &'a str,
            account_id: &'a str,
            permission_set_arn: Option<&'a str>,
        }
        let input = Input {
            action,
            request_id: &target.request_id,
            user_email: &target.user_email,
            account_id: &target.account_id,
            permission_set_arn: target.permission_set_arn.as_deref(),
        };
        let mut attempt = 0;
        let mut child = loop {
            let spawned = tokio::process::Command::new(&self.program)
                .args(&self.args)
                .arg(action)
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .kill_on_drop(true)
                .spawn();
            match spawned {
                Ok(c) => break c,
                // ETXTBSY: the program was just written (or is being replaced) and a write handle
                // is still open somewhere, e.g. inherited by a process forked meanwhile. Brief.
                Err(e) if e.raw_os_error() == Some(26) && attempt < 10 => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(20 * attempt)).await;
                }
                Err(e) => {
                    return Err(ProviderError::Permanent(format!(
                        "cannot run {}: {e}",
                        self.program.display()
                    )));
                }
            }
        };
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin
                .write_all(serde_json::to_string(&input).unwrap_or_default().as_bytes())
                .await;
        }
        let out = match tokio::time::timeout(self.timeout, child.wait_with_output()).await {
            Ok(r) => {
                r.map_err(|e| ProviderError::Retry(format!("waiting for the command: {e}")))?
            }
            Err(_) => {
                return Err(ProviderError::Retry(format!(
                    "the command took longer than {:?}",
                    self.timeout
                )));
            }
        };
        let stderr = redact(&String::from_utf8_lossy(&out.stderr));
        match out.status.code() {
            Some(0) => Ok(0),
            Some(EX_PRE_EXISTING) if action == "grant" => Ok(EX_PRE_EXISTING),
            Some(EX_TEMPFAIL) => Err(ProviderError::Retry(format!("exit 75: {stderr}"))),
            Some(code) => Err(ProviderError::Permanent(format!("exit {code}: {stderr}"))),
            None => Err(ProviderError::Retry(format!(
                "killed by a signal: {stderr}"
            ))),
        }
    }
}

/// Keeps at most 2,000 characters of stderr and hides values after `secret`, `password`,
/// `token` or `key` (`name=value`, `name: value`) and long hex or base64 runs.
pub fn redact(text: &str) -> String {
    let mut out = Vec::new();
    let mut hide_next = false;
    for word in text.split_inclusive(char::is_whitespace) {
        let trimmed = word.trim_end();
        let ws = word.get(trimmed.len()..).unwrap_or_default();
        let lower = trimmed.to_ascii_lowercase();
        let sensitive = ["secret", "password", "passwd", "token", "key", "credential"]
            .iter()
            .any(|k| lower.contains(k));
        let long_opaque = trimmed.len() >= 24
            && trimmed
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+/=_-".contains(c));
        if hide_next && !trimmed.is_empty() {
            out.push(format!("***{ws}"));
            hide_next = false;
        } else if let Some((name, value)) = trimmed.split_once(['=', ':']).filter(|_| sensitive) {
            out.push(format!("{name}=***{ws}"));
            // `password: hunter2`: the value is the next word.
            hide_next = value.is_empty();
        } else if long_opaque {
            out.push(format!("***{ws}"));
        } else {
            out.push(word.to_owned());
        }
    }
    out.concat().chars().take(2000).collect()
}

#[async_trait]
impl AccessProvider for CommandProvider {
    fn name(&self) -> &'static str {
        "command"
    }

    async fn grant(&self, target: &Target) -> Result<Assigned, ProviderError> {
        let code = self.run("grant", target).await?;
        Ok(Assigned {
            pre_existing: code == EX_PRE_EXISTING,
        })
    }

    async fn revoke(&self, target: &Target) -> Result<(), ProviderError> {
        self.run("revoke", target).await.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> Target {
        Target {
            request_id: "r1".into(),
            user_email: "a@example.com".into(),
            account_id: "123456789012".into(),
            permission_set_arn: None,
        }
    }

    fn script(dir: &std::path::Path, body: &str) -> PathBuf {
        let p = dir.join("provider.sh");
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        #[cfg(unix)]
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        p
    }

    #[tokio::test]
    async fn exit_codes_map_to_outcomes_and_input_arrives_on_stdin() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        let p = script(
            dir.path(),
            &format!(
                "cat >> {}; echo >> {}; exit ${{EXIT:-0}}",
                log.display(),
                log.display()
            ),
        );
        let ok = CommandProvider::new(&p, vec![], Duration::from_secs(5));
        assert_eq!(
            ok.grant(&target()).await,
            Ok(Assigned {
                pre_existing: false
            })
        );
        ok.revoke(&target()).await.unwrap();
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(
            text.contains(r#""action":"grant""#) && text.contains(r#""action":"revoke""#),
            "{text}"
        );
        assert!(text.contains(r#""user_email":"a@example.com""#));

        let p = script(dir.path(), "echo 'throttled token=abc123' >&2; exit 75");
        let retry = CommandProvider::new(&p, vec![], Duration::from_secs(5));
        match retry.grant(&target()).await {
            Err(ProviderError::Retry(m)) => {
                assert!(m.contains("throttled") && !m.contains("abc123"), "{m}");
            }
            other => panic!("{other:?}"),
        }
        let p = script(dir.path(), "echo 'no such user' >&2; exit 3");
        let bad = CommandProvider::new(&p, vec![], Duration::from_secs(5));
        assert!(
            matches!(bad.grant(&target()).await, Err(ProviderError::Permanent(m)) if m.contains("no such user"))
        );
        let p = script(dir.path(), "exit 10");
        let pre = CommandProvider::new(&p, vec![], Duration::from_secs(5));
        assert_eq!(
            pre.grant(&target()).await,
            Ok(Assigned { pre_existing: true })
        );
    }

    #[tokio::test]
    async fn a_command_that_hangs_is_cut_off_and_retried() {
        let dir = tempfile::tempdir().unwrap();
        let p = script(dir.path(), "sleep 30");
        let slow = CommandProvider::new(&p, vec![], Duration::from_millis(200));
        assert!(
            matches!(slow.grant(&target()).await, Err(ProviderError::Retry(m)) if m.contains("longer than"))
        );
    }

    #[test]
    fn redaction() {
        let r = redact("auth failed password=hunter2 key: ZZOPAQUEEXAMPLE1234567890ZZ plain words");
        assert!(
            !r.contains("hunter2") && !r.contains("ZZOPAQUEEXAMPLE1234567890ZZ"),
            "{r}"
        );
        assert!(r.contains("plain words"));
    }
}
