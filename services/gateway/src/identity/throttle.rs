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

    /// Starts a login attempt: `Err(wait)` when `account` or `address` is
    /// over its limit; otherwise the attempt is counted as a failure at once,
    /// before the (slow) password check, so a burst of parallel attempts
    /// cannot all pass before any is recorded. [`Throttle::succeeded`] takes
    /// it back.
    pub fn begin(&self, account: &str, address: &str, now: Instant) -> Result<Instant, Duration> {
        let Ok(mut failures) = self.failures.lock() else {
            return Ok(now);
        };
        if let Some(wait) = self.over_limit(&mut failures, account, address, now) {
            return Err(wait);
        }
        for key in [format!("account:{account}"), format!("address:{address}")] {
            failures.entry(key).or_default().push_back(now);
        }
        Ok(now)
    }

    /// The attempt begun at `began` succeeded: the account's failures are
    /// cleared and the attempt no longer counts against the address.
    pub fn succeeded(&self, account: &str, address: &str, began: Instant) {
        if let Ok(mut failures) = self.failures.lock() {
            failures.remove(&format!("account:{account}"));
            if let Some(times) = failures.get_mut(&format!("address:{address}"))
                && let Some(i) = times.iter().rposition(|t| *t == began)
            {
                times.remove(i);
            }
        }
    }

    /// `Some(wait)` when a login for `account` from `address` must wait.
    pub fn check(&self, account: &str, address: &str, now: Instant) -> Option<Duration> {
        let mut failures = self.failures.lock().ok()?;
        self.over_limit(&mut failures, account, address, now)
    }

    fn over_limit(
        &self,
        failures: &mut HashMap<String, VecDeque<Instant>>,
        account: &str,
        address: &str,
        now: Instant,
    ) -> Option<Duration> {
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
            assert!(throttle.begin("ada", "1.2.3.4", t0).is_ok(), "attempt {i}");
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
    fn a_burst_of_parallel_attempts_is_counted_before_any_is_checked() {
        let throttle = Throttle::new(Duration::from_secs(60), 3, 50);
        let t0 = Instant::now();
        // Ten attempts at once, none finished: only the first three start.
        let started = (0..10)
            .filter(|_| throttle.begin("ada", "1.2.3.4", t0).is_ok())
            .count();
        assert_eq!(started, 3);
        // A success takes its attempt back from the address and clears the account.
        let throttle = Throttle::new(Duration::from_secs(60), 3, 2);
        let began = throttle.begin("bob", "5.6.7.8", t0).unwrap();
        throttle.succeeded("bob", "5.6.7.8", began);
        assert!(throttle.begin("bob", "5.6.7.8", t0).is_ok());
        assert!(throttle.begin("eve", "5.6.7.8", t0).is_ok());
        assert!(
            throttle.begin("mal", "5.6.7.8", t0).is_err(),
            "two failures from the address"
        );
    }

    #[test]
    fn one_address_trying_many_accounts_is_throttled() {
        let throttle = Throttle::new(Duration::from_secs(60), 3, 5);
        let t0 = Instant::now();
        for i in 0..5 {
            assert!(throttle.begin(&format!("user{i}"), "9.9.9.9", t0).is_ok());
        }
        assert!(throttle.check("fresh-account", "9.9.9.9", t0).is_some());
        assert!(throttle.check("fresh-account", "1.1.1.1", t0).is_none());
        assert!(throttle.begin("user0", "1.1.1.1", t0).is_ok());
    }
}
