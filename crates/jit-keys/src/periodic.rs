//! The one periodic loop every background task runs on (ring reloads here; nonce purges, key-use
//! records and the like in the server and the bridge).

use std::time::Duration;
use tokio::sync::watch;

/// Runs `work` every `interval` (a late tick waits; ticks are not bunched) until `shutdown`
/// turns true or its sender is dropped; with `at_stop`, once more on the way out. The first run
/// is at once.
///
/// A dropped sender ends the loop: `watch::Receiver::changed` then fails at once on every call,
/// and a loop that only looked at the value would spin at full CPU.
pub fn every<F, Fut>(
    interval: Duration,
    mut shutdown: watch::Receiver<bool>,
    at_stop: bool,
    mut work: F,
) -> tokio::task::JoinHandle<()>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if *shutdown.borrow() {
                break;
            }
            let stop = tokio::select! {
                r = shutdown.changed() => r.is_err() || *shutdown.borrow(),
                _ = tick.tick() => false,
            };
            if stop {
                break;
            }
            work().await;
        }
        if at_stop {
            work().await;
        }
    })
}
