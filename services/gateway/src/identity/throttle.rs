//! Login throttling: failed logins counted per account and per client
//! address in a sliding window. Over the limit, logins are refused with 429
//! and `Retry-After` until the oldest failure leaves the window — whether the
//! password is right or not, and whether the account exists or not.
//!
//! The counters live in each gateway replica's memory: with N replicas an
//! attacker gets at most N times the limit.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct Throttle {
    window: Duration,
    per_account: usize,
    per_address: usize,
    failures: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl Throttle {
    pub fn new(window: Duration, per_account: usize, per_address: usize) -> Self {
        Self {
            window,
            per_account,
            per_address,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// `Some(wait)` when a login for `account` from `address` must wait.
    pub fn check(&self, account: &str, address: &str, now: Instant) -> Option<Duration> {
        let mut failures = self.failures.lock().ok()?;
        [
            (format!("account:{account}"), self.per_account),
            (format!("address:{address}"), self.per_address),
        ]
        .into_iter()
        .filter_map(|(key, limit)| {
            let times = failures.get_mut(&key)?;
            while times
                .front()
                .is_some_and(|t| now.duration_since(*t) >= self.window)
            {
                times.pop_front();
            }
            (times.len() >= limit).then(|| {
                let oldest = times.front().copied().unwrap_or(now);
                self.window.saturating_sub(now.duration_since(oldest))
            })
        })
        .max()
    }

    pub fn record_failure(&self, account: &str, address: &str, now: Instant) {
        if let Ok(mut failures) = self.failures.lock() {
            for key in [format!("account:{account}"), format!("address:{address}")] {
                failures.entry(key).or_default().push_back(now);
            }
        }
    }

    /// A successful login clears the account's failures (not the address's).
    pub fn record_success(&self, account: &str) {
        if let Ok(mut failures) = self.failures.lock() {
            failures.remove(&format!("account:{account}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_beyond_the_limit_wait_for_the_window() {
        let throttle = Throttle::new(Duration::from_secs(60), 3, 5);
        let t0 = Instant::now();
        for i in 0..3 {
            assert_eq!(throttle.check("ada", "1.2.3.4", t0), None, "attempt {i}");
            throttle.record_failure("ada", "1.2.3.4", t0);
        }
        let wait = throttle
            .check("ada", "1.2.3.4", t0 + Duration::from_secs(10))
            .unwrap();
        assert_eq!(wait, Duration::from_secs(50));
        assert_eq!(
            throttle.check("bob", "5.6.7.8", t0),
            None,
            "others are not affected"
        );
        assert_eq!(
            throttle.check("ada", "1.2.3.4", t0 + Duration::from_secs(61)),
            None
        );
    }

    #[test]
    fn one_address_trying_many_accounts_is_throttled() {
        let throttle = Throttle::new(Duration::from_secs(60), 3, 5);
        let t0 = Instant::now();
        for i in 0..5 {
            throttle.record_failure(&format!("user{i}"), "9.9.9.9", t0);
        }
        assert!(throttle.check("fresh-account", "9.9.9.9", t0).is_some());
        assert!(throttle.check("fresh-account", "1.1.1.1", t0).is_none());
        throttle.record_success("user0");
        assert!(throttle.check("user0", "1.1.1.1", t0).is_none());
    }
}
