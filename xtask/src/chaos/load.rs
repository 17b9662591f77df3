//! The device load of a chaos run: workers acting as devices through `ums_devsim::DeviceClient`
//! (registrations, check-ins, settings downloads, job results, file downloads), each call
//! retried once after a device's backoff, and a ledger of every acknowledged write for the
//! audit.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use ums_devsim::DeviceClient;

/// Devices one worker keeps registered and checks in, round robin.
pub const DEVICES_PER_WORKER: usize = 12;

/// Distinct error messages kept for the report.
const ERROR_SAMPLES: usize = 20;

/// What the load does.
#[derive(Clone)]
pub struct LoadConfig {
    /// The devices' broker addresses, `https://host:port` separated by commas, in the order
    /// the first half of the workers uses; the other half uses them reversed.
    pub addrs: Vec<String>,
    pub ca_pem: Vec<u8>,
    pub workers: usize,
    /// Unit id prefix of this run.
    pub prefix: String,
    /// The file every device may download, and its bytes.
    pub file: (i64, Arc<Vec<u8>>),
    /// Pause between two calls of one worker.
    pub pace: Duration,
    /// Wait before the one retry of a failed call (a device's backoff).
    pub retry_after: Duration,
    /// Time a connection attempt or a call may take.
    pub call_timeout: Duration,
}

/// Outcome counts of one kind of operation.
#[derive(Debug, Default, Clone, Serialize)]
pub struct OpCount {
    pub attempted: u64,
    /// Succeeded at the first try.
    pub succeeded: u64,
    /// Failed at the first try and succeeded on the retry.
    pub succeeded_on_retry: u64,
    /// Failed at the first try and on the retry.
    pub failed: u64,
}

/// An acknowledged registration: the server answered with this device id.
#[derive(Debug, Clone)]
pub struct AckedRegistration {
    pub unit_id: String,
    pub device_id: i64,
}

/// An acknowledged job result.
#[derive(Debug, Clone)]
pub struct AckedJobResult {
    pub job_id: i64,
    pub device_id: i64,
    pub message: String,
}

/// Everything the load saw.
#[derive(Default)]
pub struct Ledger {
    pub registrations: Vec<AckedRegistration>,
    pub job_results: Vec<AckedJobResult>,
    pub ops: BTreeMap<&'static str, OpCount>,
    /// When a first try failed, and which operation: what recovery times are read from.
    pub first_failures: Vec<(Instant, &'static str)>,
    /// When an operation failed on its retry too.
    pub failures: Vec<(Instant, &'static str)>,
    pub error_samples: Vec<String>,
    /// Downloads whose bytes differed from the file's.
    pub corrupt_downloads: u64,
}

impl Ledger {
    fn sample(&mut self, error: String) {
        if self.error_samples.len() < ERROR_SAMPLES && !self.error_samples.contains(&error) {
            self.error_samples.push(error);
        }
    }

    /// Registered devices, newest last, for queueing jobs.
    pub fn device_ids(&self) -> Vec<i64> {
        self.registrations.iter().map(|r| r.device_id).collect()
    }

    /// All operations together.
    pub fn total(&self) -> OpCount {
        self.ops.values().fold(OpCount::default(), |mut t, c| {
            t.attempted += c.attempted;
            t.succeeded += c.succeeded;
            t.succeeded_on_retry += c.succeeded_on_retry;
            t.failed += c.failed;
            t
        })
    }
}

/// A running load; [`Load::stop`] ends it and returns the ledger.
pub struct Load {
    stop: Arc<AtomicBool>,
    pub ledger: Arc<Mutex<Ledger>>,
    thread: std::thread::JoinHandle<()>,
}

impl Load {
    /// Starts `cfg.workers` device workers on a runtime of their own.
    pub fn start(cfg: LoadConfig) -> anyhow::Result<Load> {
        let stop = Arc::new(AtomicBool::new(false));
        let ledger = Arc::new(Mutex::new(Ledger::default()));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let (s, l) = (stop.clone(), ledger.clone());
        let thread = std::thread::spawn(move || {
            runtime.block_on(async move {
                let mut tasks = Vec::new();
                for w in 0..cfg.workers {
                    let (cfg, s, l) = (cfg.clone(), s.clone(), l.clone());
                    tasks.push(tokio::spawn(worker(cfg, w, s, l)));
                }
                for t in tasks {
                    let _ = t.await;
                }
            });
        });
        Ok(Load {
            stop,
            ledger,
            thread,
        })
    }

    /// Stops the workers (each finishes its call) and returns what they saw.
    pub fn stop(self) -> Ledger {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.thread.join();
        std::mem::take(&mut *self.ledger.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// One simulated device a worker holds.
struct Device {
    client: DeviceClient,
    revision: u64,
}

/// Calls `op` once, and once more after the backoff when it fails; counts the outcome.
/// `Err` only when both tries failed.
async fn twice<T, F, Fut>(
    cfg: &LoadConfig,
    ledger: &Mutex<Ledger>,
    name: &'static str,
    mut op: F,
) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let limit = cfg.call_timeout + Duration::from_secs(1);
    let first = match tokio::time::timeout(limit, op()).await {
        Ok(r) => r,
        Err(_) => Err(format!("{name}: no answer within {limit:?}")),
    };
    let first_error = match first {
        Ok(v) => {
            let mut l = ledger.lock().unwrap_or_else(|p| p.into_inner());
            let c = l.ops.entry(name).or_default();
            c.attempted += 1;
            c.succeeded += 1;
            return Ok(v);
        }
        Err(e) => e,
    };
    ledger
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .first_failures
        .push((Instant::now(), name));
    tokio::time::sleep(cfg.retry_after).await;
    let second = match tokio::time::timeout(limit, op()).await {
        Ok(r) => r,
        Err(_) => Err(format!("{name}: no answer within {limit:?}")),
    };
    let mut l = ledger.lock().unwrap_or_else(|p| p.into_inner());
    let c = l.ops.entry(name).or_default();
    c.attempted += 1;
    match second {
        Ok(v) => {
            c.succeeded_on_retry += 1;
            Ok(v)
        }
        Err(e) => {
            c.failed += 1;
            l.failures.push((Instant::now(), name));
            l.sample(format!("{e} (first try: {first_error})"));
            Err(e)
        }
    }
}

fn status_text(op: &str, status: impl std::fmt::Display) -> String {
    format!("{op}: {status}")
}

async fn worker(cfg: LoadConfig, w: usize, stop: Arc<AtomicBool>, ledger: Arc<Mutex<Ledger>>) {
    let mut addrs = cfg.addrs.clone();
    if !w.is_multiple_of(2) {
        addrs.reverse();
    }
    let addrs = addrs.join(",");
    let mut devices: Vec<Device> = Vec::new();
    let mut next_unit = 0u64;
    let mut round = 0u64;
    while !stop.load(Ordering::SeqCst) {
        round += 1;
        // Devices keep arriving: a new one every tenth call once the pool is full, taking
        // the place of the oldest.
        let arrives = if devices.len() < DEVICES_PER_WORKER {
            round % 3 == 1
        } else {
            round % 10 == 5
        };
        let ok = if arrives {
            register(&cfg, &ledger, &addrs, w, &mut next_unit, &mut devices).await
        } else if devices.is_empty() {
            tokio::time::sleep(cfg.pace).await;
            continue;
        } else {
            let i = (round as usize) % devices.len();
            let dev = &mut devices[i];
            if round.is_multiple_of(7) {
                download(&cfg, &ledger, dev).await
            } else {
                check_in(&cfg, &ledger, dev).await
            }
        };
        // A device that failed twice backs off before its next call.
        let pause = if ok { cfg.pace } else { cfg.retry_after };
        tokio::time::sleep(pause).await;
    }
}

async fn register(
    cfg: &LoadConfig,
    ledger: &Mutex<Ledger>,
    addrs: &str,
    w: usize,
    next_unit: &mut u64,
    devices: &mut Vec<Device>,
) -> bool {
    let unit = format!("{}-{w:02}-{:05}", cfg.prefix, *next_unit);
    *next_unit += 1;
    let client = match DeviceClient::connect_lazy_with_timeout(addrs, &cfg.ca_pem, cfg.call_timeout)
    {
        Ok(c) => c,
        Err(e) => {
            ledger
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .sample(format!("connect: {e:#}"));
            return false;
        }
    };
    // The retry sends the same unit id and secret: a registration whose answer was lost is
    // answered again with the same device.
    let result = twice(cfg, ledger, "register", || {
        let mut c = client.clone();
        let unit = unit.clone();
        async move {
            c.register(&unit, &unit)
                .await
                .map(|r| r.device_id)
                .map_err(|s| status_text("register", s))
        }
    })
    .await;
    match result {
        Ok(device_id) => {
            let mut client = client;
            client.set_device_id(Some(device_id));
            ledger
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .registrations
                .push(AckedRegistration {
                    unit_id: unit,
                    device_id,
                });
            if devices.len() >= DEVICES_PER_WORKER {
                devices.remove(0);
            }
            devices.push(Device {
                client,
                revision: 0,
            });
            true
        }
        Err(_) => false,
    }
}

async fn check_in(cfg: &LoadConfig, ledger: &Mutex<Ledger>, dev: &mut Device) -> bool {
    let revision = dev.revision;
    let client = dev.client.clone();
    let answer = twice(cfg, ledger, "check-in", || {
        let mut c = client.clone();
        async move {
            c.check_in("idle", revision)
                .await
                .map_err(|s| status_text("check-in", s))
        }
    })
    .await;
    let Ok(answer) = answer else { return false };
    if answer.settings_changed {
        let got = twice(cfg, ledger, "get-settings", || {
            let mut c = client.clone();
            async move {
                c.get_settings()
                    .await
                    .map_err(|s| status_text("get settings", s))
            }
        })
        .await;
        match got {
            Ok(s) => dev.revision = s.revision,
            Err(_) => return false,
        }
    }
    if answer.jobs_due > 0 {
        return jobs(cfg, ledger, &client).await;
    }
    true
}

/// Fetches the device's due jobs and reports each done.
async fn jobs(cfg: &LoadConfig, ledger: &Mutex<Ledger>, client: &DeviceClient) -> bool {
    let fetched = twice(cfg, ledger, "fetch-jobs", || {
        let mut c = client.clone();
        async move {
            c.fetch_jobs()
                .await
                .map_err(|s| status_text("fetch jobs", s))
        }
    })
    .await;
    let Ok(fetched) = fetched else { return false };
    let Some(device_id) = client.device_id() else {
        return false;
    };
    for job in fetched.jobs {
        let message = format!("chaos: job {} done by device {device_id}", job.id);
        let reported = twice(cfg, ledger, "job-result", || {
            let mut c = client.clone();
            let message = message.clone();
            async move {
                c.report_job_result(job.id, true, &message)
                    .await
                    .map_err(|s| status_text("report job result", s))
            }
        })
        .await;
        match reported {
            Ok(()) => ledger
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .job_results
                .push(AckedJobResult {
                    job_id: job.id,
                    device_id,
                    message,
                }),
            Err(_) => return false,
        }
    }
    true
}

/// Downloads the run's file, resuming where an interrupted try stopped, and checks its bytes.
async fn download(cfg: &LoadConfig, ledger: &Mutex<Ledger>, dev: &mut Device) -> bool {
    let (id, expected) = (cfg.file.0, cfg.file.1.clone());
    let client = dev.client.clone();
    let partial = Arc::new(tokio::sync::Mutex::new(Vec::with_capacity(expected.len())));
    let got = twice(cfg, ledger, "download", || {
        let mut c = client.clone();
        let partial = partial.clone();
        async move {
            let mut out = partial.lock().await;
            c.download_file(id, &mut out, None)
                .await
                .map_err(|s| status_text("download", s))?;
            Ok(out.clone())
        }
    })
    .await;
    match got {
        Ok(bytes) if bytes == *expected => true,
        Ok(bytes) => {
            let mut l = ledger.lock().unwrap_or_else(|p| p.into_inner());
            l.corrupt_downloads += 1;
            l.sample(format!(
                "download: {} bytes that differ from the file's {}",
                bytes.len(),
                expected.len()
            ));
            false
        }
        Err(_) => false,
    }
}
