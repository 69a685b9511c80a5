//! Retries with jittered exponential backoff, for every call to an external system.

use std::future::Future;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::units::{Dur, millis, secs};

/// How one kind of call is retried: attempts, and delays growing from `base` by `exp` up to
/// `max`, each with a random extra of up to itself (so one delay may reach twice `max`), so that
/// many workers do not retry in step.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct RetryPolicy {
    /// Retries after the first attempt (0: no retry).
    pub max_retries: u32,
    /// Backoff delays.
    pub backoff: Backoff,
}

/// Exponential backoff.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Backoff {
    /// The first delay.
    pub base: Dur,
    /// The longest delay before its jitter (a random extra of up to the delay itself).
    pub max: Dur,
    /// Growth factor between delays.
    #[schemars(range(min = 1.0))]
    pub exp: f32,
}

impl Backoff {
    /// An endless series of jittered delays, for loops that retry on their own terms (e.g. until
    /// a batch is fully written) rather than through [`RetryPolicy::run`].
    pub fn delays(&self) -> impl Iterator<Item = Duration> + Send + use<> {
        use backon::BackoffBuilder;
        self.builder().without_max_times().build()
    }

    /// The delays: from `base` by `exp` up to `max`, each plus a random part of up to itself.
    fn builder(&self) -> ExponentialBuilder {
        ExponentialBuilder::default()
            .with_min_delay(self.base.0)
            .with_max_delay(self.max.0)
            .with_factor(self.exp.max(1.0))
            .with_jitter()
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            base: millis::<300>(),
            max: secs::<10>(),
            exp: 1.5,
        }
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: 10,
            backoff: Backoff::default(),
        }
    }
}

impl RetryPolicy {
    /// A policy with these numbers (for defaults of specific call kinds).
    pub const fn new(max_retries: u32, base: Duration, max: Duration, exp: f32) -> Self {
        Self {
            max_retries,
            backoff: Backoff {
                base: Dur(base),
                max: Dur(max),
                exp,
            },
        }
    }

    fn builder(&self) -> ExponentialBuilder {
        self.backoff
            .builder()
            .with_max_times(self.max_retries as usize)
    }

    /// Runs `call` until it succeeds, fails with an error `retriable` rejects, or retries run
    /// out. Each retry is logged with `what` (which names the call and its stream/table/topic).
    pub async fn run<T, E, F, Fut>(
        &self,
        what: &str,
        retriable: impl Fn(&E) -> bool,
        call: F,
    ) -> Result<T, E>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: std::fmt::Display,
    {
        call.retry(self.builder())
            .sleep(tokio::time::sleep)
            .when(|e| retriable(e))
            .notify(|e, delay| {
                tracing::warn!(call = what, error = %e, retry_in = ?delay, "retriable error; backing off");
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[test]
    fn delays_go_on_and_stay_below_max_plus_jitter() {
        let b = Backoff {
            base: Dur(Duration::from_millis(10)),
            max: Dur(Duration::from_millis(40)),
            exp: 2.0,
        };
        let d: Vec<Duration> = b.delays().take(50).collect();
        assert_eq!(d.len(), 50, "endless");
        // The jitter adds at most the delay itself on top of it.
        assert!(d.iter().all(|x| *x <= Duration::from_millis(80)), "{d:?}");
        assert!(
            d.iter().skip(5).any(|x| *x >= Duration::from_millis(40)),
            "{d:?}"
        );
    }

    /// How many times `p` calls an operation that always fails with `error`.
    async fn attempts(p: &RetryPolicy, retriable: impl Fn(&String) -> bool, error: &str) -> u32 {
        let n = AtomicU32::new(0);
        let r: Result<(), String> = p
            .run("test", retriable, || async {
                n.fetch_add(1, Ordering::SeqCst);
                Err(error.to_string())
            })
            .await;
        assert!(r.is_err());
        n.load(Ordering::SeqCst)
    }

    #[tokio::test]
    async fn retries_retriable_errors_then_gives_up() {
        let p = RetryPolicy::new(3, Duration::from_millis(1), Duration::from_millis(2), 2.0);
        assert_eq!(
            attempts(&p, |_| true, "throttled").await,
            4,
            "one attempt and three retries"
        );
        assert_eq!(
            attempts(&p, |e| e != "fatal", "fatal").await,
            1,
            "no retry of a fatal error"
        );
    }
}
