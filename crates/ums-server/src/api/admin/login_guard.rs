//! Slows down password guessing: after [`MAX_FAILURES`] failed logins of one user name within
//! [`WINDOW`], further attempts for that name are refused until the window has passed, without
//! checking the password. A successful login clears the count.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const MAX_FAILURES: u32 = 5;
pub const WINDOW: Duration = Duration::from_secs(60);
/// User names tracked at most; the oldest entries go first when full.
const MAX_TRACKED: usize = 10_000;

#[derive(Default)]
pub struct LoginGuard {
    failures: Mutex<HashMap<String, (u32, Instant)>>,
}

impl LoginGuard {
    /// `Err(wait)` when the user name is locked out for `wait` longer.
    pub fn check(&self, username: &str, now: Instant) -> Result<(), Duration> {
        let map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        match map.get(username) {
            Some(&(n, since)) if n >= MAX_FAILURES && now.duration_since(since) < WINDOW => {
                Err(WINDOW - now.duration_since(since))
            }
            _ => Ok(()),
        }
    }

    pub fn failed(&self, username: &str, now: Instant) {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_TRACKED {
            map.retain(|_, (_, since)| now.duration_since(*since) < WINDOW);
        }
        let entry = map.entry(username.to_owned()).or_insert((0, now));
        if now.duration_since(entry.1) >= WINDOW {
            *entry = (0, now);
        }
        entry.0 += 1;
    }

    pub fn succeeded(&self, username: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(username);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_out_after_repeated_failures_then_forgives() {
        let guard = LoginGuard::default();
        let t0 = Instant::now();
        for _ in 0..MAX_FAILURES {
            assert!(guard.check("admin", t0).is_ok());
            guard.failed("admin", t0);
        }
        let wait = guard.check("admin", t0).expect_err("locked out");
        assert!(wait <= WINDOW);
        assert!(
            guard.check("other", t0).is_ok(),
            "other users are not affected"
        );
        assert!(
            guard.check("admin", t0 + WINDOW).is_ok(),
            "the window passes"
        );
        guard.failed("admin", t0 + WINDOW);
        assert!(
            guard.check("admin", t0 + WINDOW).is_ok(),
            "a new window starts"
        );
        guard.succeeded("admin");
        assert!(guard.check("admin", t0 + WINDOW).is_ok());
    }
}
