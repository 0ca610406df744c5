//! One EventBridge Scheduler one-time schedule per job, kept in step with the job table: a job
//! scheduled or moved gets a schedule at its due time (the old one replaced), a removed job
//! loses it. A schedule invokes the function with `{"jit":"job",…}` and deletes itself after.
//!
//! Scheduler fires within the minute of its time (never before it: the time is rounded up to
//! the second). A job due within a few seconds gets no schedule: it runs in the invocation that
//! scheduled it (a grant right after an approval) or at the next tick. Failing to create or delete a schedule loses nothing: the job is in the store and the
//! tick runs it; a schedule whose job is gone fires into an invocation that finds nothing due.

use aws_sdk_scheduler::Client;
use aws_sdk_scheduler::error::DisplayErrorContext;
use aws_sdk_scheduler::types::{
    ActionAfterCompletion, FlexibleTimeWindow, FlexibleTimeWindowMode, Target,
};
use jit_core::types::RequestId;
use jit_proto::Clock;
use jit_store::{JobHook, JobKind, JobOp};
use std::sync::{Arc, Mutex};

/// A job due within this gets no schedule (it runs now or at the tick).
const SOON_MS: i64 = 5_000;

/// Keeps the schedules; the function's own ARN (the target) comes with each invocation.
#[derive(Debug)]
pub struct Schedules {
    client: Client,
    group: String,
    role_arn: String,
    target: Mutex<Option<String>>,
    clock: Arc<dyn Clock>,
}

/// The schedule of a job: `<kind>-<request id>` (at most 64 characters, as Scheduler allows).
pub fn schedule_name(kind: JobKind, request_id: &RequestId) -> String {
    format!("{}-{}", kind.as_str(), request_id.as_str())
}

impl Schedules {
    /// Schedules in `group`, invoking the function with `role_arn`; `target` is the function's
    /// ARN when known before the first invocation.
    pub fn new(
        sdk: &aws_config::SdkConfig,
        group: String,
        role_arn: String,
        target: Option<String>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            client: Client::new(sdk),
            group,
            role_arn,
            target: Mutex::new(target),
            clock,
        }
    }

    /// Remembers the invoked function's ARN (the schedules' target), unless one was configured.
    pub fn set_target(&self, arn: &str) {
        let mut t = self.target.lock().unwrap_or_else(|e| e.into_inner());
        if t.is_none() && arn.starts_with("arn:") {
            *t = Some(arn.to_owned());
        }
    }

    fn target(&self) -> Option<String> {
        self.target
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    async fn delete(&self, name: &str) {
        match self
            .client
            .delete_schedule()
            .name(name)
            .group_name(&self.group)
            .send()
            .await
        {
            Ok(_) => {}
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_resource_not_found_exception()) => {}
            Err(e) => {
                tracing::warn!(schedule = name, error = %DisplayErrorContext(&e), "deleting a job's schedule failed; it will fire into nothing")
            }
        }
    }

    /// Creates the job's schedule; `Ok(false)` when one of that name exists.
    async fn create(&self, kind: JobKind, request_id: &RequestId, due_ms: i64) -> bool {
        let name = schedule_name(kind, request_id);
        if due_ms <= self.clock.now_ms() + SOON_MS {
            return true;
        }
        let Some(target) = self.target() else {
            tracing::warn!(schedule = %name, "no function ARN yet: the job runs at a tick");
            return true;
        };
        // Rounded up: a schedule that fired before the job was due would find nothing to do.
        let secs = due_ms.div_euclid(1000) + i64::from(due_ms.rem_euclid(1000) > 0);
        let Ok(at) = time::OffsetDateTime::from_unix_timestamp(secs) else {
            return true;
        };
        let at = format!(
            "at({:04}-{:02}-{:02}T{:02}:{:02}:{:02})",
            at.year(),
            u8::from(at.month()),
            at.day(),
            at.hour(),
            at.minute(),
            at.second()
        );
        let input =
            serde_json::json!({"jit": "job", "kind": kind.as_str(), "request_id": request_id})
                .to_string();
        let built = (
            FlexibleTimeWindow::builder()
                .mode(FlexibleTimeWindowMode::Off)
                .build(),
            Target::builder()
                .arn(target)
                .role_arn(&self.role_arn)
                .input(input)
                .build(),
        );
        let (Ok(window), Ok(target)) = built else {
            return true;
        };
        let r = self
            .client
            .create_schedule()
            .name(&name)
            .group_name(&self.group)
            .schedule_expression(at)
            .schedule_expression_timezone("UTC")
            .flexible_time_window(window)
            .target(target)
            .action_after_completion(ActionAfterCompletion::Delete)
            .send()
            .await;
        match r {
            Ok(_) => true,
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_conflict_exception()) =>
            {
                false
            }
            Err(e) => {
                tracing::warn!(schedule = %name, error = %DisplayErrorContext(&e), "creating a job's schedule failed; the job runs at a tick");
                true
            }
        }
    }
}

#[async_trait::async_trait]
impl JobHook for Schedules {
    async fn committed(&self, jobs: &[JobOp]) {
        for op in jobs {
            match op {
                JobOp::Schedule {
                    kind,
                    request_id,
                    due_ms,
                } => {
                    // Most jobs are new: create, and replace only when one exists.
                    if !self.create(*kind, request_id, *due_ms).await {
                        self.delete(&schedule_name(*kind, request_id)).await;
                        self.create(*kind, request_id, *due_ms).await;
                    }
                }
                JobOp::Ensure {
                    kind,
                    request_id,
                    due_ms,
                } => {
                    self.create(*kind, request_id, *due_ms).await;
                }
                JobOp::Remove { kind, request_id } => {
                    self.delete(&schedule_name(*kind, request_id)).await;
                }
            }
        }
    }
}
