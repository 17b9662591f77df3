//! Login rate limits: a token bucket per user name and one per device. Every attempt takes a
//! token from both; a failed attempt takes a second one from the user's bucket, so guessing a
//! password runs dry twice as fast as logging in and out.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Limits of `swp-auth`'s `[limits]` table.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LimitConfig {
    /// Attempts a user name may make at once.
    pub user_burst: u32,
    /// Attempts per minute a user name regains.
    pub user_per_minute: u32,
    /// Attempts a device may make at once.
    pub device_burst: u32,
    /// Attempts per minute a device regains.
    pub device_per_minute: u32,
}

impl Default for LimitConfig {
    fn default() -> Self {
        Self {
            user_burst: 10,
            user_per_minute: 10,
            device_burst: 30,
            device_per_minute: 60,
        }
    }
}

#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

struct Buckets {
    burst: f64,
    per_second: f64,
    map: Mutex<HashMap<String, Bucket>>,
}

impl Buckets {
    fn new(burst: u32, per_minute: u32) -> Self {
        Self {
            burst: f64::from(burst.max(1)),
            per_second: f64::from(per_minute) / 60.0,
            map: Mutex::new(HashMap::new()),
        }
    }

    fn refill(&self, b: &mut Bucket, now: Instant) {
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * self.per_second).min(self.burst);
        b.at = now;
    }

    /// Takes `n` tokens, or says how long until they are there.
    fn take(&self, key: &str, n: f64, now: Instant) -> Result<(), Duration> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() > 100_000 {
            // Forget the buckets that are full again.
            let (burst, rate) = (self.burst, self.per_second);
            map.retain(|_, b| {
                b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * rate < burst
            });
        }
        let b = map.entry(key.to_owned()).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        self.refill(b, now);
        if b.tokens >= n {
            b.tokens -= n;
            Ok(())
        } else if self.per_second > 0.0 {
            Err(Duration::from_secs_f64((n - b.tokens) / self.per_second))
        } else {
            Err(Duration::from_secs(3600))
        }
    }

    fn put_back(&self, key: &str, n: f64) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(b) = map.get_mut(key) {
            b.tokens = (b.tokens + n).min(self.burst);
        }
    }

    fn charge(&self, key: &str, n: f64) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(b) = map.get_mut(key) {
            b.tokens = (b.tokens - n).max(-self.burst);
        }
    }
}

/// The login rate limits of one `swp-auth` process.
pub struct Limits {
    users: Buckets,
    devices: Buckets,
}

/// Which limit refused an attempt, and for how long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Limited {
    User(Duration),
    Device(Duration),
}

impl Limits {
    pub fn new(cfg: &LimitConfig) -> Self {
        Self {
            users: Buckets::new(cfg.user_burst, cfg.user_per_minute),
            devices: Buckets::new(cfg.device_burst, cfg.device_per_minute),
        }
    }

    /// Admits an attempt of `user` (directory-qualified, lowercase) on `device`.
    pub fn admit(&self, user: &str, device: i64, now: Instant) -> Result<(), Limited> {
        let device_key = device.to_string();
        self.devices
            .take(&device_key, 1.0, now)
            .map_err(Limited::Device)?;
        if let Err(wait) = self.users.take(user, 1.0, now) {
            self.devices.put_back(&device_key, 1.0);
            return Err(Limited::User(wait));
        }
        Ok(())
    }

    /// Charges a failed attempt once more to the user.
    pub fn failed(&self, user: &str) {
        self.users.charge(user, 1.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_user_and_per_device() {
        let limits = Limits::new(&LimitConfig {
            user_burst: 3,
            user_per_minute: 60,
            device_burst: 5,
            device_per_minute: 60,
        });
        let t0 = Instant::now();
        for _ in 0..3 {
            limits.admit("alice", 1, t0).expect("within burst");
        }
        let Err(Limited::User(wait)) = limits.admit("alice", 1, t0) else {
            panic!("user limit");
        };
        assert!(wait <= Duration::from_secs(1));
        // Another user on the same device still gets in, until the device's burst is used.
        limits.admit("bob", 1, t0).expect("bob");
        limits.admit("carol", 1, t0).expect("carol");
        assert!(matches!(
            limits.admit("dave", 1, t0),
            Err(Limited::Device(_))
        ));
        // Another device is not affected; time refills.
        limits.admit("dave", 2, t0).expect("other device");
        limits
            .admit("alice", 3, t0 + Duration::from_secs(1))
            .expect("refilled");
    }

    #[test]
    fn failures_cost_double() {
        let limits = Limits::new(&LimitConfig {
            user_burst: 4,
            user_per_minute: 1,
            device_burst: 100,
            device_per_minute: 100,
        });
        let t0 = Instant::now();
        limits.admit("mallory", 1, t0).expect("1");
        limits.failed("mallory");
        limits.admit("mallory", 1, t0).expect("2");
        limits.failed("mallory");
        assert!(limits.admit("mallory", 1, t0).is_err());
    }
}
