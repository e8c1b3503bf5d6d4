//! The pieces that protect the upstream and the mirror from each other: a
//! circuit breaker that fails fast while the upstream is down (so requests are
//! answered from stale copies at once instead of waiting for timeouts), retry
//! delays with exponential backoff and jitter, and `Retry-After` parsing.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Consecutive failures that open the circuit.
pub const BREAKER_THRESHOLD: u32 = 5;
/// How long an open circuit fails fast before letting a trial request through.
pub const BREAKER_COOLDOWN: Duration = Duration::from_secs(10);

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Closed → (threshold consecutive failures) → open for the cooldown →
/// half-open: requests pass again; one success closes it, one failure reopens it.
#[derive(Debug, Default)]
pub struct CircuitBreaker {
    consecutive_failures: AtomicU32,
    open_until_ms: AtomicU64,
}

impl CircuitBreaker {
    /// Whether a request may go to the upstream now.
    pub fn allows(&self) -> bool {
        now_ms() >= self.open_until_ms.load(Ordering::Relaxed)
    }

    pub fn is_open(&self) -> bool {
        !self.allows()
    }

    pub fn record_success(&self) {
        self.consecutive_failures.store(0, Ordering::Relaxed);
        self.open_until_ms.store(0, Ordering::Relaxed);
    }

    /// Records a failure; returns true when this failure opened the circuit.
    pub fn record_failure(&self) -> bool {
        let failures = self.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        if failures >= BREAKER_THRESHOLD {
            let until = now_ms() + BREAKER_COOLDOWN.as_millis() as u64;
            let previous = self.open_until_ms.swap(until, Ordering::Relaxed);
            return previous < now_ms();
        }
        false
    }
}

/// The delay before retry number `attempt` (1-based): 100 ms doubling, with
/// ±50% jitter so that many waiting clients do not return in lockstep.
pub fn backoff_delay(attempt: u32) -> Duration {
    let base_ms = 100u64 << attempt.saturating_sub(1).min(6);
    let jitter = jitter_fraction();
    Duration::from_millis((base_ms as f64 * (0.5 + jitter)) as u64)
}

/// A number in [0, 1) that differs between calls; no cryptographic quality needed.
fn jitter_fraction() -> f64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0x9e37_79b9_7f4a_7c15);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(0);
    let mut x = COUNTER.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed) ^ nanos;
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    (x >> 11) as f64 / (1u64 << 53) as f64
}

/// `Retry-After` as a delay: delta-seconds or an HTTP date.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let date = httpdate::parse_http_date(value).ok()?;
    Some(date.duration_since(SystemTime::now()).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_breaker_opens_after_consecutive_failures_and_closes_on_success() {
        let breaker = CircuitBreaker::default();
        for _ in 0..BREAKER_THRESHOLD - 1 {
            assert!(!breaker.record_failure());
            assert!(breaker.allows());
        }
        assert!(breaker.record_failure());
        assert!(breaker.is_open());
        breaker.record_success();
        assert!(breaker.allows());
        // A success in between resets the count.
        for _ in 0..BREAKER_THRESHOLD - 1 {
            breaker.record_failure();
        }
        breaker.record_success();
        assert!(!breaker.record_failure());
        assert!(breaker.allows());
    }

    #[test]
    fn backoff_grows_with_jitter() {
        for attempt in 1..5 {
            let base = 100u64 << (attempt - 1);
            let delay = backoff_delay(attempt).as_millis() as u64;
            assert!(
                delay >= base / 2 && delay < base * 3 / 2,
                "{attempt}: {delay}"
            );
        }
        let delays: std::collections::HashSet<u128> =
            (0..20).map(|_| backoff_delay(3).as_micros()).collect();
        assert!(delays.len() > 1, "no jitter");
    }

    #[test]
    fn retry_after_takes_seconds_and_dates() {
        assert_eq!(parse_retry_after("3"), Some(Duration::from_secs(3)));
        let later = SystemTime::now() + Duration::from_secs(30);
        let parsed = parse_retry_after(&httpdate::fmt_http_date(later)).unwrap();
        assert!(parsed > Duration::from_secs(25) && parsed <= Duration::from_secs(30));
        assert_eq!(
            parse_retry_after("Mon, 01 Jan 2001 00:00:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }
}
