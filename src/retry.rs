//! How long and how often `acquire` waits for a held lock.

use std::time::Duration;

use rand::Rng;

use crate::duration;
use crate::error::Result;

/// The retry policy of [`Lock::acquire`](crate::Lock::acquire).
///
/// Defaults: no timeout, unlimited attempts, 250 ms delay, jitter up to half the delay, no
/// backoff. With a store that notifies on release (memory, SQLite in one process, Redis,
/// PostgreSQL) the delay is only the fall-back: waiters wake as soon as the lock is released,
/// and at the latest when the holder's lease runs out.
///
/// ```
/// use std::time::Duration;
/// use cadenas::Retry;
///
/// let retry = Retry::default()
///     .timeout(Duration::from_secs(5))
///     .delay(Duration::from_millis(100))
///     .backoff(2.0, Duration::from_secs(1));
/// assert_eq!(retry.get_timeout(), Some(Duration::from_secs(5)));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Retry {
    timeout: Option<Duration>,
    attempts: Option<u32>,
    delay: Duration,
    jitter: Option<Duration>,
    backoff: Option<(f64, Duration)>,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            timeout: None,
            attempts: None,
            delay: Duration::from_millis(250),
            jitter: None,
            backoff: None,
        }
    }
}

impl Retry {
    /// Try exactly once (what `try_acquire` does).
    pub fn once() -> Self {
        Retry::default().attempts(1)
    }

    /// Give up after `timeout` in total (default: wait forever).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Give up after `attempts` tries (default: unlimited). `0` is taken as `1`.
    pub fn attempts(mut self, attempts: u32) -> Self {
        self.attempts = Some(attempts.max(1));
        self
    }

    /// Wait `delay` between tries (default 250 ms).
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// Add a random extra wait of up to `jitter` to every delay (default: half the delay), so
    /// that waiters do not retry in lock step.
    pub fn jitter(mut self, jitter: Duration) -> Self {
        self.jitter = Some(jitter);
        self
    }

    /// Multiply the delay by `factor` after every failed try, up to `max`.
    pub fn backoff(mut self, factor: f64, max: Duration) -> Self {
        self.backoff = Some((factor, max));
        self
    }

    /// The timeout, if any.
    pub fn get_timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// The attempt limit, if any.
    pub fn get_attempts(&self) -> Option<u32> {
        self.attempts
    }

    /// Checks the durations (at least 1 ms, at most one year; a zero timeout is allowed and
    /// means "try once").
    pub(crate) fn validate(&self) -> Result<()> {
        duration::check("retry delay", self.delay)?;
        if let Some((factor, max)) = self.backoff {
            if !(1.0..=100.0).contains(&factor) {
                return Err(crate::Error::invalid(
                    "retry backoff",
                    format!("factor {factor} must be between 1 and 100"),
                ));
            }
            duration::check("retry backoff cap", max)?;
        }
        if let Some(t) = self.timeout {
            if t > duration::MAX_DURATION {
                duration::check("retry timeout", t)?;
            }
        }
        Ok(())
    }

    /// Whether another try is allowed after `attempts` tries and `elapsed` time.
    pub(crate) fn may_retry(&self, attempts: u32, elapsed: Duration) -> bool {
        self.attempts.is_none_or(|max| attempts < max) && self.timeout.is_none_or(|t| elapsed < t)
    }

    /// The pause after failed try number `attempt` (1-based), jitter included, not capped.
    pub(crate) fn pause(&self, attempt: u32) -> Duration {
        let mut base = self.delay;
        if let Some((factor, max)) = self.backoff {
            let grown = self.delay.as_secs_f64() * factor.powi(attempt.saturating_sub(1) as i32);
            base = Duration::from_secs_f64(grown.min(max.as_secs_f64()));
        }
        let jitter = self.jitter.unwrap_or(self.delay / 2);
        if jitter.is_zero() {
            return base;
        }
        base + rand::rng().random_range(Duration::ZERO..=jitter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits() {
        let r = Retry::default().attempts(3);
        assert!(r.may_retry(2, Duration::from_secs(999)));
        assert!(!r.may_retry(3, Duration::ZERO));
        let r = Retry::default().timeout(Duration::from_secs(1));
        assert!(r.may_retry(1000, Duration::from_millis(999)));
        assert!(!r.may_retry(1, Duration::from_secs(1)));
        assert!(Retry::once().may_retry(0, Duration::ZERO));
        assert!(!Retry::once().may_retry(1, Duration::ZERO));
    }

    #[test]
    fn pauses() {
        let r = Retry::default()
            .delay(Duration::from_millis(100))
            .jitter(Duration::ZERO)
            .backoff(2.0, Duration::from_millis(350));
        let p: Vec<_> = (1..=4).map(|a| r.pause(a).as_millis()).collect();
        assert_eq!(p, [100, 200, 350, 350]);
        let r = Retry::default();
        for _ in 0..100 {
            let p = r.pause(1);
            assert!(p >= Duration::from_millis(250) && p <= Duration::from_millis(375));
        }
    }

    #[test]
    fn validation() {
        assert!(Retry::default().validate().is_ok());
        assert!(Retry::default().delay(Duration::ZERO).validate().is_err());
        assert!(Retry::default()
            .backoff(0.5, Duration::from_secs(1))
            .validate()
            .is_err());
    }
}
