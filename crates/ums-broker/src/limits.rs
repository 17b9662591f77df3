//! Admission of new device connections: a cap on connections at once and a token bucket of new
//! connections per source address.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

/// One address's bucket.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// New connections per second per source address: `per_second` tokens refill a bucket of
/// `burst`, each connection takes one.
#[derive(Debug)]
pub struct RateLimiter {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

impl RateLimiter {
    /// A limiter; `per_second == 0` admits everything.
    pub fn new(per_second: u32, burst: u32) -> Self {
        Self {
            per_second: f64::from(per_second),
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Whether the limit is on.
    pub fn enabled(&self) -> bool {
        self.per_second > 0.0
    }

    /// Takes a token for a new connection from `ip` at `now`; false when the bucket is empty.
    pub fn allow(&self, ip: IpAddr, now: Instant) -> bool {
        if !self.enabled() {
            return true;
        }
        let mut buckets = match self.buckets.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        let bucket = buckets.entry(ip).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.per_second).min(self.burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Forgets addresses whose bucket has refilled: they are as good as new. Keeps the map as
    /// small as the set of recently busy addresses.
    pub fn prune(&self, now: Instant) {
        let mut buckets = match self.buckets.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        buckets.retain(|_, b| {
            let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
            b.tokens + elapsed * self.per_second < self.burst
        });
    }

    /// Addresses remembered now.
    pub fn tracked(&self) -> usize {
        self.buckets.lock().map(|g| g.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn burst_then_rate() {
        let limiter = RateLimiter::new(10, 5);
        let ip: IpAddr = [10, 0, 0, 1].into();
        let other: IpAddr = [10, 0, 0, 2].into();
        let t0 = Instant::now();
        for _ in 0..5 {
            assert!(limiter.allow(ip, t0));
        }
        assert!(!limiter.allow(ip, t0), "burst spent");
        assert!(limiter.allow(other, t0), "buckets are per address");
        // 10 per second: one token every 100 ms.
        assert!(!limiter.allow(ip, t0 + Duration::from_millis(50)));
        assert!(limiter.allow(ip, t0 + Duration::from_millis(160)));
        assert!(!limiter.allow(ip, t0 + Duration::from_millis(170)));
        // Refill is capped at the burst.
        let later = t0 + Duration::from_secs(100);
        for _ in 0..5 {
            assert!(limiter.allow(ip, later));
        }
        assert!(!limiter.allow(ip, later));
    }

    #[test]
    fn prune_forgets_refilled_buckets() {
        let limiter = RateLimiter::new(10, 5);
        let t0 = Instant::now();
        limiter.allow([10, 0, 0, 1].into(), t0);
        limiter.allow([10, 0, 0, 2].into(), t0);
        limiter.prune(t0);
        assert_eq!(limiter.tracked(), 2);
        limiter.prune(t0 + Duration::from_secs(1));
        assert_eq!(limiter.tracked(), 0);
    }

    #[test]
    fn zero_rate_admits_everything() {
        let limiter = RateLimiter::new(0, 0);
        let t0 = Instant::now();
        for _ in 0..1000 {
            assert!(limiter.allow([10, 0, 0, 1].into(), t0));
        }
        assert_eq!(limiter.tracked(), 0);
    }
}
