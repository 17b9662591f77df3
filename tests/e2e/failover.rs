//! The database fails over under device load: PostgreSQL with a synchronous streaming standby
//! behind one address (a forwarder standing in for a Kubernetes Service or a virtual IP that
//! follows the primary), two servers on it, devices registering and checking in. The primary
//! crashes, the standby is promoted and the address moves to it; the servers follow without a
//! restart and no acknowledged registration is lost.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ums_devsim::DeviceClient;
use ums_testkit::{Postgres, TcpSwitch};

use crate::harness::{Server, eventually};

/// What one device worker saw: registrations acknowledged, operations tried and failed.
#[derive(Default)]
struct Seen {
    acknowledged: Vec<String>,
    tried: u32,
    failed: u32,
    /// When a call failed, and when the next one succeeded again.
    last_failure: Option<Instant>,
    first_success_after_failure: Option<Instant>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_database_fails_over_to_its_standby_and_no_acknowledged_registration_is_lost() {
    let primary = Postgres::start_primary().expect("primary");
    primary
        .sql("postgres", "CREATE DATABASE e2e_failover")
        .expect("database");
    let standby = primary.start_standby().expect("standby");
    let switch = TcpSwitch::start(([127, 0, 0, 1], primary.port()).into()).expect("forwarder");
    let url = format!(
        "postgres://postgres@127.0.0.1:{}/e2e_failover",
        switch.port()
    );
    let a = Server::start(Some(&url));
    let b = Server::start_sharing_ca(&a, Some(&url));
    let ca = Arc::new(a.ca_pem());
    let both = Arc::new(format!("{},{}", a.device_url, b.device_url));

    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for w in 0..4 {
        let (ca, both, stop) = (ca.clone(), both.clone(), stop.clone());
        workers.push(tokio::spawn(async move {
            let mut seen = Seen::default();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let unit = format!("failover-{w}-{i:05}");
                i += 1;
                seen.tried += 1;
                let attempt = async {
                    let mut dev = DeviceClient::connect_lazy(&both, &ca)?;
                    dev.register(&unit, &unit).await?;
                    anyhow::Ok(dev)
                };
                match tokio::time::timeout(Duration::from_secs(5), attempt).await {
                    Ok(Ok(mut dev)) => {
                        seen.acknowledged.push(unit);
                        if seen.last_failure.is_some() && seen.first_success_after_failure.is_none()
                        {
                            seen.first_success_after_failure = Some(Instant::now());
                        }
                        let _ = dev.check_in("idle", 0).await;
                    }
                    _ => {
                        seen.failed += 1;
                        seen.last_failure = Some(Instant::now());
                        seen.first_success_after_failure = None;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
            seen
        }));
    }

    tokio::time::sleep(Duration::from_secs(2)).await;
    // The primary crashes; the standby is promoted and the address follows it.
    let crashed = Instant::now();
    primary.crash().expect("crash the primary");
    standby.promote().expect("promote the standby");
    switch.set_target(([127, 0, 0, 1], standby.port()).into());
    let switched = Instant::now();
    tokio::time::sleep(Duration::from_secs(4)).await;
    stop.store(true, Ordering::Relaxed);
    let mut seen = Vec::new();
    for w in workers {
        seen.push(w.await.expect("worker"));
    }

    let acknowledged: Vec<&String> = seen.iter().flat_map(|s| &s.acknowledged).collect();
    let (tried, failed): (u32, u32) = seen
        .iter()
        .fold((0, 0), |(t, f), s| (t + s.tried, f + s.failed));
    let after: Vec<Instant> = seen
        .iter()
        .filter_map(|s| s.first_success_after_failure)
        .collect();
    assert!(
        acknowledged.len() > 20,
        "too few registrations to tell: {}",
        acknowledged.len()
    );
    // Every worker is served again after the switch.
    assert!(
        seen.iter().all(|s| s.acknowledged.len() > 1
            && s.last_failure
                .is_none_or(|_| s.first_success_after_failure.is_some())),
        "a device worker was not served again after the failover"
    );
    let recovered = after
        .iter()
        .map(|t| t.saturating_duration_since(switched))
        .max()
        .unwrap_or_default();

    // The audit, on the new primary: every acknowledged registration exactly once.
    let rows = standby
        .sql(
            "e2e_failover",
            "SELECT lower(unit_id) FROM devices WHERE unit_id ILIKE 'failover-%'",
        )
        .expect("audit query");
    let stored: Vec<String> = rows
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("failover-"))
        .map(str::to_owned)
        .collect();
    let unique: BTreeSet<&String> = stored.iter().collect();
    assert_eq!(unique.len(), stored.len(), "a device is stored twice");
    let lost: Vec<&&String> = acknowledged
        .iter()
        .filter(|u| !unique.contains(&u.to_lowercase()))
        .collect();
    println!(
        "failover: {tried} registrations tried, {} acknowledged, {failed} failed; crash to switch {:?}; every worker served again within {recovered:?} of the switch; {} acknowledged and lost",
        acknowledged.len(),
        switched - crashed,
        lost.len()
    );
    assert!(lost.is_empty(), "acknowledged registrations lost: {lost:?}");

    // Both servers serve on the new primary: a device registered now is visible through either.
    let mut dev = DeviceClient::connect(&b.device_url, &ca).await.expect("b");
    dev.register("failover-late", "failover-late")
        .await
        .expect("register on b after the failover");
    let seen_on_a = eventually(Duration::from_secs(10), || {
        let ca = ca.clone();
        let url = a.device_url.clone();
        let secret = dev.secret().to_vec();
        let id = dev.device_id();
        async move {
            let mut d = DeviceClient::connect(&url, &ca).await.ok()?;
            d.set_secret(secret);
            d.set_device_id(id);
            d.check_in("idle", 0).await.ok()
        }
    })
    .await;
    assert!(
        seen_on_a.is_some(),
        "server a does not serve the device b registered"
    );
}
