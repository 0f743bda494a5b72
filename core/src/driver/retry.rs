//! Retrying port calls that failed transiently (throttled, unavailable): capped exponential
//! backoff with full jitter, bounded by the backoff's attempts or not at all. Any other kind of
//! failure is returned at once: the caller decides what it means.

use std::future::Future;

use crate::backoff::Backoff;
use crate::ports::{Clock, Entropy, Observation, Observer, PortError};

/// Calls `op` until it succeeds or fails with a non-retryable error (or after
/// `backoff.max_attempts` attempts when `bounded`).
pub(crate) async fn with_backoff<T, F, Fut>(
    clock: &impl Clock,
    entropy: &impl Entropy,
    observer: &impl Observer,
    backoff: &Backoff,
    bounded: bool,
    mut op: F,
) -> Result<T, PortError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, PortError>>,
{
    let mut attempt = 0u32;
    loop {
        match op().await {
            Ok(v) => return Ok(v),
            Err(e) if !e.is_transient() => return Err(e),
            Err(e) => {
                attempt = attempt.saturating_add(1);
                if bounded && attempt >= backoff.max_attempts {
                    return Err(e);
                }
                observer.observe(Observation::retry(&e));
                clock.sleep(backoff.delay(attempt - 1, entropy.unit())).await;
            }
        }
    }
}
