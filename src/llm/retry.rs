//! The one retry policy: which failures are worth another attempt, and how long to wait.
//! Only failures *before the first token* are ever retried (see `client`); this module
//! decides the rest: capped exponential backoff with jitter, `Retry-After` honoured.

use std::time::{Duration, SystemTime};

use backon::ExponentialBuilder;
use reqwest::header::HeaderMap;

/// Backoff settings, from `Leptos.toml` and `LLM_MAX_RETRIES` / `LLM_RETRY_{MIN,MAX}_MS`.
#[derive(Clone, Debug, PartialEq)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub max_retries: u32,
    pub min_delay: Duration,
    pub max_delay: Duration,
    /// A `Retry-After` longer than this fails at once instead of waiting.
    pub retry_after_cap: Duration,
}

impl RetryPolicy {
    /// Exponential backoff from `min_delay`, doubling, capped at `max_delay`, with jitter.
    pub fn backoff(&self) -> ExponentialBuilder {
        ExponentialBuilder::default()
            .with_min_delay(self.min_delay)
            .with_max_delay(self.max_delay)
            .with_factor(2.0)
            .with_max_times(self.max_retries as usize)
            .with_jitter()
    }

    /// backon's jitter adds up to one more delay on top; keep every wait within the maximum.
    pub fn clamp(&self, proposed: Duration) -> Duration {
        proposed.min(self.max_delay)
    }
}

/// Statuses worth retrying: timeouts, rate limits and the transient server errors.
pub fn is_retryable_status(status: u16) -> bool {
    matches!(status, 408 | 429 | 500 | 502 | 503 | 504)
}

/// The longest wait a `Retry-After` is taken at: beyond it, values are clamped, so that a
/// hostile `10^19` seconds can never overflow a deadline.
pub const RETRY_AFTER_CEILING: Duration = Duration::from_secs(24 * 60 * 60);

/// The wait a response asks for: `retry-after-ms` (OpenAI), else `Retry-After` as
/// delta-seconds or an HTTP-date (RFC 9110 §10.2.3). A date in the past means "now".
/// Clamped to [`RETRY_AFTER_CEILING`].
pub fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    raw_retry_after(headers, now).map(|wait| wait.min(RETRY_AFTER_CEILING))
}

fn raw_retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    if let Some(ms) = header("retry-after-ms").and_then(|v| v.parse::<f64>().ok()) {
        if ms.is_finite() && ms >= 0.0 {
            // `as` saturates: 1e300 ms becomes u64::MAX ms, clamped by the caller.
            return Some(Duration::from_millis(ms as u64));
        }
    }
    let value = header("retry-after")?;
    if value.bytes().all(|b| b.is_ascii_digit()) && !value.is_empty() {
        // More digits than a u64 holds is still "a very long time", not "no header".
        return Some(value.parse().map_or(Duration::MAX, Duration::from_secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn check(pairs: &[(&'static str, &str)], expected: Option<u64>) {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        assert_eq!(
            retry_after(&headers, now).map(|d| d.as_millis() as u64),
            expected,
            "{pairs:?}"
        );
    }

    #[test]
    fn retry_after_forms() {
        check(&[("retry-after", "3")], Some(3000));
        check(&[("retry-after", " 0 ")], Some(0));
        // 1_700_000_000 is Tue, 14 Nov 2023 22:13:20 GMT.
        check(
            &[("retry-after", "Tue, 14 Nov 2023 22:13:25 GMT")],
            Some(5000),
        );
        check(&[("retry-after", "Tue, 14 Nov 2023 22:13:00 GMT")], Some(0));
        check(
            &[("retry-after-ms", "1500"), ("retry-after", "9")],
            Some(1500),
        );
        check(&[("retry-after", "soon")], None);
        // Absurd values are clamped, never overflow.
        let day = Some(24 * 60 * 60 * 1000);
        check(&[("retry-after", "10000000000000000000")], day);
        check(&[("retry-after", "99999999999999999999999999")], day);
        check(&[("retry-after-ms", "1e300")], day);
        check(&[("retry-after", "-5")], None);
        check(&[], None);
    }

    #[test]
    fn which_statuses_retry() {
        let retried: Vec<u16> = (400..600).filter(|s| is_retryable_status(*s)).collect();
        assert_eq!(retried, [408, 429, 500, 502, 503, 504]);
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        use backon::BackoffBuilder;
        let policy = RetryPolicy {
            max_retries: 5,
            min_delay: Duration::from_millis(1000),
            max_delay: Duration::from_millis(4000),
            retry_after_cap: Duration::from_secs(60),
        };
        let delays: Vec<Duration> = policy.backoff().build().collect();
        assert_eq!(delays.len(), 5);
        for (n, delay) in delays.iter().enumerate() {
            let base = Duration::from_millis(1000 * (1 << n.min(2)));
            let wait = policy.clamp(*delay);
            // Jitter adds up to one more base delay; the clamp keeps it under the maximum.
            assert!(
                wait >= base && wait <= (base * 2).min(policy.max_delay),
                "retry {n}: {wait:?}"
            );
        }
    }
}
