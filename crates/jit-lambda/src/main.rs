//! `jit-lambda`: the Lambda function's entry point (the `bootstrap` of a `provided.al2023`
//! runtime). Configuration is the server's `JIT_*` environment (docs/configuration.md), plus:
//! - `JIT_SCHEDULER_GROUP`, `JIT_SCHEDULER_ROLE_ARN`: where each job's one-time schedule goes
//!   and the role it invokes the function with (both, or no schedules: jobs then run at ticks);
//! - `JIT_SCHEDULER_TARGET_ARN`: the function's ARN, when the invoked ARN is not the one to
//!   target (an alias); by default the ARN each invocation names;
//! - `JIT_METRICS_NAMESPACE`: the CloudWatch namespace of the metric lines (`JitAccess`).

use jit_lambda::{Emf, Function, Schedules};
use jit_proto::{Clock, SystemClock};
use jit_server::serve::Backend;
use lambda_http::lambda_runtime::{self, Error, LambdaEvent, service_fn};
use std::sync::Arc;

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let filter = tracing_subscriber::EnvFilter::try_from_env("JIT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(false)
        .with_ansi(false)
        .with_writer(std::io::stdout)
        .with_env_filter(filter)
        .init();
    let config = jit_server::Config::load(None, &jit_server::config::ProcessEnv)
        .map_err(|e| Error::from(format!("configuration: {e}")))?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let schedules = match (var("JIT_SCHEDULER_GROUP"), var("JIT_SCHEDULER_ROLE_ARN")) {
        (Some(group), Some(role)) => {
            let sdk = jit_keys::aws_sdk_config(
                config.aws_region.clone(),
                config.aws_endpoint_url.clone(),
            )
            .await;
            Some(Arc::new(Schedules::new(
                &sdk,
                group,
                role,
                var("JIT_SCHEDULER_TARGET_ARN"),
                clock.clone(),
            )))
        }
        (None, None) => {
            tracing::warn!(
                "no JIT_SCHEDULER_GROUP / JIT_SCHEDULER_ROLE_ARN: jobs run at the one-minute tick only"
            );
            None
        }
        _ => {
            return Err(Error::from(
                "set both JIT_SCHEDULER_GROUP and JIT_SCHEDULER_ROLE_ARN, or neither",
            ));
        }
    };
    let hook = schedules.clone().map(|s| s as Arc<dyn jit_store::JobHook>);
    let backend = Backend::prepare_with(config, clock, None, hook)
        .await
        .map_err(|e| Error::from(format!("{e:#}")))?;
    let emf = Emf::new(var("JIT_METRICS_NAMESPACE").unwrap_or_else(|| "JitAccess".into()));
    let function = Arc::new(Function::new(backend, schedules, emf));
    tracing::info!("jit-lambda ready");
    lambda_runtime::run(service_fn(move |ev: LambdaEvent<serde_json::Value>| {
        let f = function.clone();
        async move { f.handle(ev).await }
    }))
    .await
}
