//! Audit verification as a background job. `GET /audit/verify` starts a run (or joins the one
//! under way), waits a few seconds, and answers with the result if it is done, or 202 with the
//! run's id and progress if not; `GET /audit/verify?job=<id>` reports the run later. So a long
//! trail never holds an HTTP request open until its timeout: nothing answers 503 because the
//! trail is long. The last [`KEPT`] runs are remembered.

#[allow(unused_imports)]
use jit_store::prelude::*;
use jit_store::{Store, VerifyOptions, VerifyProgress, VerifyReport};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Runs remembered for `?job=`.
pub const KEPT: usize = 8;

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The chain holds.
    Intact(VerifyReport),
    /// The chain is broken: what verification found.
    Broken(String),
    /// The store could not be read.
    Failed(String),
}

/// One verification run.
#[derive(Debug)]
pub struct Run {
    /// Its id.
    pub id: String,
    /// From the first event.
    pub full: bool,
    from_seq: AtomicI64,
    verified_seq: AtomicI64,
    head_seq: AtomicI64,
    done: tokio::sync::watch::Sender<Option<Outcome>>,
}

impl Run {
    /// Progress so far.
    pub fn progress(&self) -> VerifyProgress {
        VerifyProgress {
            from_seq: self.from_seq.load(Ordering::Relaxed),
            verified_seq: self.verified_seq.load(Ordering::Relaxed),
            head_seq: self.head_seq.load(Ordering::Relaxed),
        }
    }

    /// The outcome, if the run ends within `wait`.
    pub async fn wait(&self, wait: Duration) -> Option<Outcome> {
        let mut rx = self.done.subscribe();
        let ended = tokio::time::timeout(wait, rx.wait_for(Option::is_some)).await;
        match ended {
            Ok(Ok(v)) => v.clone(),
            _ => self.done.borrow().clone(),
        }
    }

    fn finished(&self) -> bool {
        self.done.borrow().is_some()
    }
}

/// The runs of one server.
#[derive(Debug, Default)]
pub struct Verifications {
    runs: Mutex<VecDeque<Arc<Run>>>,
}

impl Verifications {
    /// Joins the run under way when it covers what is asked (a full run covers a routine
    /// one), or starts one: from the newest checkpoint, or from the first event with `full`.
    /// A run that finds the chain whole records its head as the new checkpoint.
    pub fn start_or_join(
        &self,
        store: Arc<dyn Store>,
        full: bool,
        now_ms: i64,
        id: String,
    ) -> Arc<Run> {
        let mut runs = self.runs.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(r) = runs.iter().find(|r| !r.finished() && (r.full || !full)) {
            return r.clone();
        }
        let run = Arc::new(Run {
            id,
            full,
            from_seq: AtomicI64::new(0),
            verified_seq: AtomicI64::new(0),
            head_seq: AtomicI64::new(0),
            done: tokio::sync::watch::Sender::new(None),
        });
        runs.push_back(run.clone());
        while runs.len() > KEPT {
            runs.pop_front();
        }
        let r = run.clone();
        tokio::spawn(async move {
            let opts = VerifyOptions {
                full,
                record_checkpoint: true,
                now_ms,
            };
            let progress = |p: VerifyProgress| {
                r.from_seq.store(p.from_seq, Ordering::Relaxed);
                r.verified_seq.store(p.verified_seq, Ordering::Relaxed);
                r.head_seq.store(p.head_seq, Ordering::Relaxed);
            };
            let outcome = match store.verify_audit_with(opts, &progress).await {
                Ok(rep) => {
                    tracing::info!(target: "audit", job = %r.id, full, events = rep.head_seq, checked = rep.checked,
                        from_checkpoint = rep.from_checkpoint, "audit chain verified");
                    Outcome::Intact(rep)
                }
                Err(jit_store::VerifyError::Chain(e)) => {
                    tracing::error!(target: "audit", job = %r.id, error = %e, "audit chain verification failed");
                    Outcome::Broken(e.to_string())
                }
                Err(jit_store::VerifyError::Store(e)) => {
                    tracing::error!(job = %r.id, error = %e, "audit chain verification could not read the store");
                    Outcome::Failed(e.to_string())
                }
            };
            r.done.send_replace(Some(outcome));
        });
        run
    }

    /// A remembered run.
    pub fn get(&self, id: &str) -> Option<Arc<Run>> {
        let runs = self.runs.lock().unwrap_or_else(|p| p.into_inner());
        runs.iter().find(|r| r.id == id).cloned()
    }
}
