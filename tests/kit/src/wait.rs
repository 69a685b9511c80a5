//! Polling with a deadline: the only way a test waits for something.

use std::future::Future;
use std::time::{Duration, Instant};

const POLL: Duration = Duration::from_millis(20);

/// Polls `cond` until it holds or `timeout` passes; returns whether it held.
#[must_use = "assert it: a timeout otherwise passes silently"]
pub fn wait_for(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(POLL);
    }
    cond()
}

/// The async twin of [`wait_for`]: awaits `cond()` until it holds or `timeout` passes.
#[must_use = "assert it: a timeout otherwise passes silently"]
pub async fn wait_until<F, Fut>(timeout: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline {
        if cond().await {
            return true;
        }
        tokio::time::sleep(POLL).await;
    }
    cond().await
}
