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
    /// Check-ins of devices with a user logged in (see [`SessionCheckIns`]).
    pub checkins: u64,
    pub checkins_per_s: f64,
    /// Check-ins that announced new settings, each followed by a settings download.
    pub settings_changed: u64,
    /// Of those downloads, the ones that held the user's side (the marker key).
    pub user_settings: u64,
    /// Time of a check-in, with the settings download when it announced one.
    pub checkin_latency: Latency,
}

/// Check-ins of logged-in devices in the login load: after each login, `per_login` devices of
/// the worker that have a user logged in check in with the revision they hold; when the
/// answer says the settings changed, they download them, which while the user is logged in are
/// the user's merged settings. A download that holds `user_key` (a parameter only the users'
/// profiles set) counts as the user's settings.
#[derive(Debug, Clone, Default)]
pub struct SessionCheckIns {
    pub per_login: usize,
    pub user_key: String,
}

/// Runs logins for `duration` with `concurrency` workers. Worker `w` uses the devices
/// `w, w + concurrency, ...` in turn, and each login picks the next user from `users`.
pub async fn run_logins(
    devices: Vec<DeviceClient>,
    users: Vec<(String, String)>,
    concurrency: usize,
    duration: Duration,
) -> anyhow::Result<LoginReport> {
    run_session_load(
        devices,
        users,
        concurrency,
        duration,
        SessionCheckIns::default(),
    )
    .await
}

/// What one worker counted.
struct Counts {
    logins: Histogram<u64>,
    checkins: Histogram<u64>,
    ok: u64,
    errors: u64,
    samples: Vec<String>,
    settings: usize,
    changed: u64,
    user_settings: u64,
}

/// [`run_logins`] with check-ins of the logged-in devices between the logins.
pub async fn run_session_load(
    devices: Vec<DeviceClient>,
    users: Vec<(String, String)>,
    concurrency: usize,
    duration: Duration,
    checkins: SessionCheckIns,
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
    let checkins = std::sync::Arc::new(checkins);
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = tokio::task::JoinSet::new();
    for (w, mut mine) in per_worker.into_iter().enumerate() {
        let users = users.clone();
        let checkins = checkins.clone();
        tasks.spawn(async move {
            let (Ok(logins), Ok(checkin_hist)) = (histogram(), histogram()) else {
                return None;
            };
            let mut c = Counts {
                logins,
                checkins: checkin_hist,
                ok: 0,
                errors: 0,
                samples: Vec::new(),
                settings: 0,
                changed: 0,
                user_settings: 0,
            };
            let sample = |c: &mut Counts, what: &str, s: &Status| {
                c.errors += 1;
                if c.samples.len() < 5 {
                    c.samples.push(describe(what, s));
                }
            };
            // The revision each device of this worker holds while a user is logged in.
            let mut held: Vec<Option<u64>> = vec![None; mine.len()];
            let mut next_checkin = 0usize;
            let mut n = w;
            while Instant::now() < deadline && !mine.is_empty() {
                let device = n / concurrency % mine.len();
                let (user, password) = &users[n % users.len()];
                n += concurrency;
                let t = Instant::now();
                match mine[device].login(user, password).await {
                    Ok(r) => {
                        let _ = c.logins.record(t.elapsed().as_micros() as u64);
                        c.ok += 1;
                        c.settings = r.settings.len();
                        held[device] = Some(r.revision);
                    }
                    Err(s) => sample(&mut c, "login", &s),
                }
                for _ in 0..checkins.per_login {
                    if Instant::now() >= deadline {
                        break;
                    }
                    next_checkin = (next_checkin + 1) % mine.len();
                    let d = next_checkin;
                    let Some(known) = held[d] else { continue };
                    let t = Instant::now();
                    let answer = match mine[d].check_in("session", known).await {
                        Ok(a) => a,
                        Err(s) => {
                            sample(&mut c, "check-in", &s);
                            continue;
                        }
                    };
                    if answer.settings_changed {
                        match mine[d].get_settings().await {
                            Ok(got) => {
                                c.changed += 1;
                                if got.settings.iter().any(|s| s.key == checkins.user_key) {
                                    c.user_settings += 1;
                                }
                                held[d] = Some(got.revision);
                            }
                            Err(s) => {
                                sample(&mut c, "settings", &s);
                                continue;
                            }
                        }
                    }
                    let _ = c.checkins.record(t.elapsed().as_micros() as u64);
                }
            }
            Some(c)
        });
    }
    let (mut all, mut all_checkins) = (histogram()?, histogram()?);
    let mut report = LoginReport::default();
    while let Some(Ok(Some(c))) = tasks.join_next().await {
        let _ = all.add(&c.logins);
        let _ = all_checkins.add(&c.checkins);
        report.logins += c.ok;
        report.errors += c.errors;
        report.settings_per_login = report.settings_per_login.max(c.settings);
        report.settings_changed += c.changed;
        report.user_settings += c.user_settings;
        for s in c.samples {
            if report.error_samples.len() < 5 && !report.error_samples.contains(&s) {
                report.error_samples.push(s);
            }
        }
    }
    report.elapsed_s = started.elapsed().as_secs_f64();
    report.logins_per_s = report.logins as f64 / report.elapsed_s.max(1e-9);
    report.latency = Latency::from_histogram(&all);
    report.checkins = all_checkins.len();
    report.checkins_per_s = report.checkins as f64 / report.elapsed_s.max(1e-9);
    report.checkin_latency = Latency::from_histogram(&all_checkins);
    Ok(report)
}
