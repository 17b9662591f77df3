//! Shared Workplace: a device user logging in and out, and a login load generator for
//! `cargo xtask bench swp`.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;
use tonic::Status;
use ums_proto::device::v1::{GetSettingsResponse, LoginRequest, LoginResponse, LogoutRequest};

use crate::{DeviceClient, Latency, describe};

impl DeviceClient {
    /// Logs a directory user in on this device; answers with the user's effective settings.
    pub async fn login(&mut self, username: &str, password: &str) -> Result<LoginResponse, Status> {
        let request = self.request(LoginRequest {
            username: username.to_owned(),
            password: password.to_owned(),
        })?;
        Ok(self.inner.login(request).await?.into_inner())
    }

    /// Logs the user out; answers with the device's own settings.
    pub async fn logout(&mut self) -> Result<GetSettingsResponse, Status> {
        let request = self.request(LogoutRequest {})?;
        Ok(self.inner.logout(request).await?.into_inner())
    }
}

/// Outcome of a login load run.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct LoginReport {
    /// Successful logins.
    pub logins: u64,
    pub errors: u64,
    pub error_samples: Vec<String>,
    pub elapsed_s: f64,
    pub logins_per_s: f64,
    /// Time from sending a login to holding the user's settings.
    pub latency: Latency,
    /// Settings per login (of the last login), to show the merge did work.
    pub settings_per_login: usize,
}

/// Runs logins for `duration` with `concurrency` workers. Worker `w` uses the devices
/// `w, w + concurrency, ...` in turn, and each login picks the next user from `users`.
pub async fn run_logins(
    devices: Vec<DeviceClient>,
    users: Vec<(String, String)>,
    concurrency: usize,
    duration: Duration,
) -> anyhow::Result<LoginReport> {
    // From 1 µs to one minute, 3 significant digits.
    let histogram = || Histogram::<u64>::new_with_bounds(1, 60_000_000, 3);
    histogram()?;
    let concurrency = concurrency.clamp(1, devices.len().max(1));
    let mut per_worker: Vec<Vec<DeviceClient>> = (0..concurrency).map(|_| Vec::new()).collect();
    for (i, d) in devices.into_iter().enumerate() {
        per_worker[i % concurrency].push(d);
    }
    let users = std::sync::Arc::new(users);
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = tokio::task::JoinSet::new();
    for (w, mut mine) in per_worker.into_iter().enumerate() {
        let users = users.clone();
        tasks.spawn(async move {
            let Ok(mut hist) = histogram() else {
                return None;
            };
            let (mut ok, mut errors, mut samples, mut settings) = (0u64, 0u64, Vec::new(), 0);
            let mut n = w;
            while Instant::now() < deadline && !mine.is_empty() {
                let device = n / concurrency % mine.len();
                let (user, password) = &users[n % users.len()];
                n += concurrency;
                let t = Instant::now();
                match mine[device].login(user, password).await {
                    Ok(r) => {
                        let _ = hist.record(t.elapsed().as_micros() as u64);
                        ok += 1;
                        settings = r.settings.len();
                    }
                    Err(s) => {
                        errors += 1;
                        if samples.len() < 5 {
                            samples.push(describe("login", &s));
                        }
                    }
                }
            }
            Some((hist, ok, errors, samples, settings))
        });
    }
    let mut all = histogram()?;
    let mut report = LoginReport::default();
    while let Some(Ok(Some((hist, ok, errors, samples, settings)))) = tasks.join_next().await {
        let _ = all.add(&hist);
        report.logins += ok;
        report.errors += errors;
        report.settings_per_login = report.settings_per_login.max(settings);
        for s in samples {
            if report.error_samples.len() < 5 && !report.error_samples.contains(&s) {
                report.error_samples.push(s);
            }
        }
    }
    report.elapsed_s = started.elapsed().as_secs_f64();
    report.logins_per_s = report.logins as f64 / report.elapsed_s.max(1e-9);
    report.latency = Latency::from_histogram(&all);
    Ok(report)
}
