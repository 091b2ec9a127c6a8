//! Rate limits per API key and per org: token buckets with a burst
//! (`governor`), checked after authentication. Over the limit: 429 with
//! `Retry-After`. Limits are per gateway replica.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// Requests per second and burst, for keys and for orgs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimits {
    pub per_key_per_second: u32,
    pub per_key_burst: u32,
    pub per_org_per_second: u32,
    pub per_org_burst: u32,
}

impl Default for RateLimits {
    fn default() -> Self {
        Self {
            per_key_per_second: 50,
            per_key_burst: 100,
            per_org_per_second: 200,
            per_org_burst: 400,
        }
    }
}

#[derive(Debug)]
pub struct Limiter {
    keys: DefaultKeyedRateLimiter<String>,
    orgs: DefaultKeyedRateLimiter<String>,
}

fn quota(per_second: u32, burst: u32) -> Quota {
    let rate = NonZeroU32::new(per_second.max(1)).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(burst.max(1)).unwrap_or(NonZeroU32::MIN);
    Quota::per_second(rate).allow_burst(burst)
}

impl Limiter {
    pub fn new(limits: RateLimits) -> Self {
        Self {
            keys: RateLimiter::keyed(quota(limits.per_key_per_second, limits.per_key_burst)),
            orgs: RateLimiter::keyed(quota(limits.per_org_per_second, limits.per_org_burst)),
        }
    }

    /// `Err(wait)` when the credential (`key`: an API key id, or a user's
    /// session) or its org is over its limit.
    pub fn check(&self, key: &str, org: &str) -> Result<(), Duration> {
        let now = DefaultClock::default().now();
        let over = |limiter: &DefaultKeyedRateLimiter<String>, id: &str| {
            limiter
                .check_key(&id.to_owned())
                .err()
                .map(|not_until| not_until.wait_time_from(now))
        };
        match (over(&self.keys, key), over(&self.orgs, org)) {
            (None, None) => Ok(()),
            (a, b) => Err(a.unwrap_or_default().max(b.unwrap_or_default())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_pass_then_the_bucket_refuses_with_a_wait() {
        let limiter = Limiter::new(RateLimits {
            per_key_per_second: 1,
            per_key_burst: 3,
            per_org_per_second: 100,
            per_org_burst: 100,
        });
        for _ in 0..3 {
            assert!(limiter.check("k1", "acme").is_ok());
        }
        let wait = limiter.check("k1", "acme").unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        assert!(
            limiter.check("k2", "acme").is_ok(),
            "another key has its own bucket"
        );
    }

    #[test]
    fn the_org_bucket_covers_all_its_keys() {
        let limiter = Limiter::new(RateLimits {
            per_key_per_second: 100,
            per_key_burst: 100,
            per_org_per_second: 1,
            per_org_burst: 2,
        });
        assert!(limiter.check("k1", "acme").is_ok());
        assert!(limiter.check("k2", "acme").is_ok());
        assert!(limiter.check("k3", "acme").is_err());
        assert!(limiter.check("k3", "globex").is_ok());
    }
}
