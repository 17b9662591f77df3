//! `ums-broker` in front of real servers: failover when a server dies, drain on SIGTERM.

use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use ums_devsim::DeviceClient;

use crate::harness::{Broker, Server, eventually};

/// One device's life through the broker: a new connection, registration, one check-in.
async fn one_device(url: &str, ca: &[u8], unit: &str) -> anyhow::Result<()> {
    let mut dev = DeviceClient::connect(url, ca).await?;
    dev.register(unit, unit).await?;
    dev.check_in("idle", 0).await?;
    Ok(())
}

/// An attempt: when it started, and its error if it failed.
struct Attempt {
    started: Instant,
    error: Option<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn new_devices_never_see_a_killed_server() {
    let url = ums_testkit::shared_database("e2e_broker").expect("postgres");
    let a = Server::start(Some(&url));
    let mut b = Server::start_sharing_ca(&a, Some(&url));
    assert_eq!(a.ca_pem(), b.ca_pem(), "one device CA");
    // The load comes from one address: the per-address rate is not under test here.
    let broker = Broker::start(
        &[a.device_addr(), b.device_addr()],
        &[("UMS_RATE__PER_SECOND", "0")],
    );
    let ca = Arc::new(a.ca_pem());
    let device_url = Arc::new(broker.device_url.clone());

    let started = Instant::now();
    let run_for = Duration::from_secs(6);
    let mut tasks = Vec::new();
    for worker in 0..8 {
        let (ca, device_url) = (ca.clone(), device_url.clone());
        tasks.push(tokio::spawn(async move {
            let mut attempts = Vec::new();
            let mut i = 0;
            while started.elapsed() < run_for {
                let unit = format!("broker-{worker}-{i:05}");
                i += 1;
                let t = Instant::now();
                let r = tokio::time::timeout(
                    Duration::from_secs(5),
                    one_device(&device_url, &ca, &unit),
                )
                .await;
                let error = match r {
                    Ok(Ok(())) => None,
                    Ok(Err(e)) => Some(format!("{e:#}")),
                    Err(_) => Some("timed out".to_owned()),
                };
                attempts.push(Attempt { started: t, error });
            }
            attempts
        }));
    }

    tokio::time::sleep(Duration::from_millis(2500)).await;
    let b_addr = b.device_addr();
    kill(Pid::from_raw(b.child.id() as i32), Signal::SIGKILL).expect("kill -9 server b");
    let killed = Instant::now();
    let _ = b.child.0.wait();

    let mut attempts = Vec::new();
    for t in tasks {
        attempts.extend(t.await.expect("device task"));
    }
    let before = attempts.iter().filter(|x| x.started < killed).count();
    let ok_after = attempts
        .iter()
        .filter(|x| x.started > killed && x.error.is_none())
        .count();
    let late_failures: Vec<&String> = attempts
        .iter()
        .filter(|x| x.started > killed + Duration::from_secs(1))
        .filter_map(|x| x.error.as_ref())
        .collect();
    assert!(before > 0, "devices ran before the kill");
    assert!(ok_after > 0, "devices succeeded after the kill");
    assert!(
        late_failures.is_empty(),
        "{} device connections failed more than 1 s after the kill, first: {:?}\nbroker log:\n{}",
        late_failures.len(),
        late_failures.first(),
        broker.log_text()
    );

    let total = |addr: &str| {
        broker
            .metric(&format!(
                "ums_broker_connections_total{{server=\"{addr}\"}}"
            ))
            .unwrap_or(0.0)
    };
    assert!(total(&a.device_addr()) > 0.0, "{}", broker.metrics());
    assert!(total(&b_addr) > 0.0, "{}", broker.metrics());
    let b_up = format!("ums_broker_server_up{{server=\"{b_addr}\"}}");
    let a_up = format!("ums_broker_server_up{{server=\"{}\"}}", a.device_addr());
    assert_eq!(broker.metric(&b_up), Some(0.0), "{}", broker.metrics());
    assert_eq!(broker.metric(&a_up), Some(1.0), "{}", broker.metrics());
    eprintln!(
        "{} device attempts, {} after the kill succeeded",
        attempts.len(),
        ok_after
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_the_broker() {
    let server = Server::start(None);
    let drain = Duration::from_secs(5);
    let mut broker = Broker::start(&[server.device_addr()], &[("UMS_DRAIN_TIMEOUT_S", "5")]);
    let mut dev = DeviceClient::connect(&broker.device_url, &server.ca_pem())
        .await
        .expect("connect through the broker");
    dev.register("drain-00001", "drain")
        .await
        .expect("register");

    // A stream of check-ins over the one connection, across the SIGTERM.
    let stream = tokio::spawn(async move {
        let mut results = Vec::new();
        for _ in 0..30 {
            results.push(dev.check_in("idle", 0).await.map(|_| ()));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        (dev, results)
    });
    tokio::time::sleep(Duration::from_millis(400)).await;
    kill(Pid::from_raw(broker.child.id() as i32), Signal::SIGTERM).expect("sigterm");
    let term = Instant::now();

    // New connections are refused at once...
    let port = broker.port;
    let refused = eventually(Duration::from_secs(2), || async move {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
            .then_some(())
    })
    .await;
    assert!(refused.is_some(), "the broker still accepts after SIGTERM");

    // ...while the proxied connection keeps flowing.
    let (dev, results) = stream.await.expect("check-in stream");
    let failed: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(
        failed.is_empty(),
        "check-ins failed during the drain: {failed:?}\n{}",
        broker.log_text()
    );
    assert!(
        term.elapsed() > Duration::from_millis(500),
        "requests ran after the SIGTERM"
    );
    drop(dev);

    let status = loop {
        if let Some(st) = broker.child.0.try_wait().expect("poll broker") {
            break st;
        }
        assert!(
            term.elapsed() < drain + Duration::from_secs(2),
            "the broker did not exit within the drain timeout:\n{}",
            broker.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status}\n{}", broker.log_text());
    assert!(
        broker.log_text().contains("draining"),
        "{}",
        broker.log_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_devices_go_to_the_other_server_when_one_stops() {
    let a = Server::start(None);
    let mut b = Server::start_sharing_ca(&a, None);
    let broker = Broker::start(&[a.device_addr(), b.device_addr()], &[]);
    let ca = a.ca_pem();

    // Connections through the broker alternate: keep one that landed on B.
    let b_total = format!(
        "ums_broker_connections_total{{server=\"{}\"}}",
        b.device_addr()
    );
    let mut on_b = None;
    for i in 0..4 {
        let before = broker.metric(&b_total).unwrap_or(0.0);
        let mut dev = DeviceClient::connect(&broker.device_url, &ca)
            .await
            .expect("connect");
        dev.register(&format!("stop-{i:05}"), "stop")
            .await
            .expect("register");
        if broker.metric(&b_total).unwrap_or(0.0) > before {
            on_b = Some(dev);
            break;
        }
    }
    let mut on_b = on_b.expect("a connection on server b");

    on_b.check_in("idle", 0)
        .await
        .expect("check in on server b");

    kill(Pid::from_raw(b.child.id() as i32), Signal::SIGTERM).expect("sigterm server b");
    // New devices go to A only, from the first connection after B closed its listener.
    let b_port: u16 = b
        .device_addr()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port");
    eventually(Duration::from_secs(5), || async move {
        tokio::net::TcpStream::connect(("127.0.0.1", b_port))
            .await
            .is_err()
            .then_some(())
    })
    .await
    .expect("server b closes its listener");
    let b_before = broker.metric(&b_total).unwrap_or(0.0);
    for i in 0..6 {
        let mut dev = DeviceClient::connect(&broker.device_url, &ca)
            .await
            .expect("new device after server b stopped");
        dev.register(&format!("after-{i:05}"), "after")
            .await
            .expect("register on server a");
    }
    assert_eq!(
        broker.metric(&b_total),
        Some(b_before),
        "no new connection went to the stopped server"
    );
    drop(on_b);
    let _ = b.child.0.wait();
}

/// A broker that joined the network with the token follows the running servers from the watch
/// stream: no static list, a stopped server leaves the rotation, one that comes back re-enters,
/// and the broker moves to another server's stream when the one it follows goes away.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_broker_in_the_network_follows_the_running_servers() {
    let url = ums_testkit::shared_database("e2e_broker_net").expect("postgres");
    let mut a = Server::start_ha(&url, None);
    let b = Server::start_ha(&url, Some(&a.token()));
    let token_dir = tempfile::tempdir().expect("dir");
    let token_file = token_dir.path().join("token");
    std::fs::write(&token_file, a.token()).expect("token");
    let data = token_dir.path().join("broker-data");
    let join = format!("{},{}", a.admin_addr(), b.admin_addr());
    let broker = Broker::start(
        &[],
        &[
            ("UMS_RATE__PER_SECOND", "0"),
            ("UMS_NETWORK__SERVERS", &join),
            (
                "UMS_NETWORK__TOKEN_FILE",
                token_file.to_str().expect("path"),
            ),
            ("UMS_DATA_DIR", data.to_str().expect("path")),
            ("UMS_NETWORK__ID", "broker-e2e"),
        ],
    );
    let server_up = |s: &Server| format!("ums_broker_server_up{{server=\"{}\"}}", s.device_addr());
    let both = eventually(Duration::from_secs(15), || async {
        (broker.metric(&server_up(&a)) == Some(1.0) && broker.metric(&server_up(&b)) == Some(1.0))
            .then_some(())
    })
    .await;
    assert!(
        both.is_some(),
        "the broker did not learn both servers:\n{}\n{}",
        broker.metrics(),
        broker.log_text()
    );
    let ca = a.ca_pem();
    for i in 0..4 {
        one_device(&broker.device_url, &ca, &format!("net-{i}"))
            .await
            .expect("a device through the broker");
    }
    let ctl = a.umsctl();
    let registered = eventually(Duration::from_secs(10), || async {
        ctl.ok(&["network", "list"])
            .contains("broker-e2e")
            .then_some(())
    })
    .await;
    assert!(registered.is_some(), "the broker is in the registry");
    assert!(
        data.join("identity/node-key.pem").exists(),
        "the broker keeps its identity"
    );

    // A stops: it leaves the rotation (the broker follows B's stream now); devices keep working.
    kill(Pid::from_raw(a.child.id() as i32), Signal::SIGTERM).expect("sigterm");
    let _ = a.child.0.wait();
    let gone = eventually(Duration::from_secs(15), || async {
        broker.metric(&server_up(&a)).is_none().then_some(())
    })
    .await;
    assert!(
        gone.is_some(),
        "a stopped server stays in the rotation:\n{}",
        broker.metrics()
    );
    for i in 0..4 {
        one_device(&broker.device_url, &ca, &format!("net-after-{i}"))
            .await
            .expect("a device after the server stopped");
    }
    assert!(broker.log_text().contains("running servers changed"));
}

/// With the PROXY protocol on both sides, the server sees the device's own address, not the
/// broker's; a connection without the header is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_sees_the_device_address_through_the_proxy_header() {
    let data = tempfile::tempdir().expect("dir");
    let server = Server::start_with(data, None, &[("UMS_DEVICE__PROXY_PROTOCOL", "true")]);
    let broker = Broker::start(
        &[server.device_addr()],
        &[
            ("UMS_RATE__PER_SECOND", "0"),
            ("UMS_PROXY_PROTOCOL", "true"),
        ],
    );
    // The device connects from a port of our choosing, so its address is known.
    let local_port = ums_testkit::free_port();
    let broker_addr: std::net::SocketAddr =
        format!("127.0.0.1:{}", broker.port).parse().expect("addr");
    let connector = tower::service_fn(move |_: http::Uri| async move {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.set_reuseaddr(true)?;
        socket.bind(([127, 0, 0, 1], local_port).into())?;
        let stream = socket.connect(broker_addr).await?;
        Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
    });
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(server.ca_pem()));
    let channel = tonic::transport::Endpoint::from_shared(broker.device_url.clone())
        .expect("endpoint")
        .tls_config(tls)
        .expect("tls")
        .connect_with_connector(connector)
        .await
        .expect("connect through the broker");
    let mut dev = DeviceClient::from_channel(channel);
    dev.register("00:00:00:00:pp:01", "proxied")
        .await
        .expect("register through the broker");
    let wanted = format!("127.0.0.1:{local_port}");
    let logged = eventually(Duration::from_secs(5), || async {
        server
            .log_text()
            .lines()
            .any(|l| l.contains("device registered") && l.contains(&wanted))
            .then_some(())
    })
    .await;
    assert!(
        logged.is_some(),
        "{wanted} not in the server log:\n{}",
        server.log_text()
    );

    // Straight to the server, without the header: refused.
    let direct = DeviceClient::connect(&server.device_url, &server.ca_pem()).await;
    assert!(
        direct.is_err(),
        "a connection without the PROXY header must be refused"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn devices_through_a_broker_are_served_again_soon_after_the_database_restarts() {
    // A PostgreSQL of its own: this test stops and starts it.
    let pg = ums_testkit::Postgres::start().expect("postgres");
    let url = pg.create_database("e2e_db_restart").expect("database");
    let a = Server::start(Some(&url));
    let b = Server::start_sharing_ca(&a, Some(&url));
    let broker = Broker::start(
        &[a.device_addr(), b.device_addr()],
        &[("UMS_RATE__PER_SECOND", "0")],
    );
    let ca = a.ca_pem();
    let mut dev = DeviceClient::connect(&broker.device_url, &ca)
        .await
        .expect("connect");
    dev.register("db-restart-1", "db-restart-1")
        .await
        .expect("register");

    // A check-in every 20 ms on the device's connection, each given 2 s, as a device polls.
    struct Call {
        started: Instant,
        ended: Instant,
        error: Option<String>,
    }
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let stop = stop.clone();
        let mut dev = dev.clone();
        tokio::spawn(async move {
            let mut calls = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let started = Instant::now();
                let r = tokio::time::timeout(Duration::from_secs(2), dev.check_in("idle", 0)).await;
                let error = match r {
                    Ok(Ok(_)) => None,
                    Ok(Err(s)) => Some(format!("{:?}: {}", s.code(), s.message())),
                    Err(_) => Some("no answer within 2 s".to_owned()),
                };
                calls.push(Call {
                    started,
                    ended: Instant::now(),
                    error,
                });
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            calls
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Down for longer than a heartbeat's timeout, so the servers notice.
    let stopping = Instant::now();
    pg.stop_now().expect("stop postgres");
    let stopped = Instant::now();
    tokio::time::sleep(Duration::from_secs(6)).await;
    pg.resume().expect("start postgres");
    let resumed = Instant::now();
    tokio::time::sleep(Duration::from_secs(4)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let calls = load.await.expect("load");

    let before: Vec<&String> = calls
        .iter()
        .filter(|c| c.ended < stopping)
        .filter_map(|c| c.error.as_ref())
        .collect();
    assert!(
        before.is_empty(),
        "check-ins failed before the database stopped: {before:?}"
    );
    let refused: Vec<&String> = calls
        .iter()
        .filter(|c| c.started > stopped + Duration::from_secs(4) && c.ended < resumed)
        .filter_map(|c| c.error.as_ref())
        .collect();
    assert!(
        !refused.is_empty()
            && refused
                .iter()
                .all(|e| e.contains("Unavailable") && e.contains("cannot reach its database")),
        "while the database is down a device is told so at once: {refused:?}"
    );
    let first_served = calls
        .iter()
        .filter(|c| c.started >= resumed && c.error.is_none())
        .map(|c| c.ended)
        .next()
        .unwrap_or_else(|| panic!("no check-in succeeded after the database came back"));
    let recovery = first_served - resumed;
    let failed_after: Vec<&String> = calls
        .iter()
        .filter(|c| c.started > first_served)
        .filter_map(|c| c.error.as_ref())
        .collect();
    println!(
        "database down {:?}; a device served again {recovery:?} after it was back",
        resumed - stopped
    );
    assert!(
        failed_after.is_empty(),
        "check-ins failed after the first one was served again: {failed_after:?}"
    );
    // Within a second on a quiet machine; shared test machines get some slack.
    assert!(
        recovery < Duration::from_secs(2),
        "a device was served again only {recovery:?} after the database was back"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_device_given_both_brokers_fails_over_at_once_when_one_dies() {
    let url = ums_testkit::shared_database("e2e_two_brokers").expect("postgres");
    let a = Server::start(Some(&url));
    let b = Server::start_sharing_ca(&a, Some(&url));
    let servers = [a.device_addr(), b.device_addr()];
    let env = [("UMS_RATE__PER_SECOND", "0")];
    let mut first = Broker::start(&servers, &env);
    let second = Broker::start(&servers, &env);
    let ca = a.ca_pem();
    let both = format!("{},{}", first.device_url, second.device_url);
    let mut dev = DeviceClient::connect(&both, &ca).await.expect("connect");
    dev.register("two-brokers-1", "two-brokers-1")
        .await
        .expect("register");

    // Check-ins every 20 ms; a failed one is retried once at once, as a device would.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let stop = stop.clone();
        let dev = dev.clone();
        tokio::spawn(async move {
            let (mut calls, mut failed, mut lost) = (0u32, Vec::new(), Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                calls += 1;
                let call = |mut d: DeviceClient| async move {
                    tokio::time::timeout(Duration::from_secs(2), d.check_in("idle", 0))
                        .await
                        .map_err(|_| "no answer within 2 s".to_owned())
                        .and_then(|r| r.map_err(|s| format!("{:?}: {}", s.code(), s.message())))
                };
                if let Err(e) = call(dev.clone()).await {
                    failed.push(e);
                    if let Err(e) = call(dev.clone()).await {
                        lost.push(e);
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (calls, failed, lost)
        })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    kill(Pid::from_raw(first.child.id() as i32), Signal::SIGKILL).expect("kill -9 a broker");
    let _ = first.child.0.wait();
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (calls, failed, lost) = load.await.expect("load");
    println!(
        "{calls} check-ins over two brokers, one killed: {} failed once ({failed:?}), {} failed on the retry too",
        failed.len(),
        lost.len()
    );
    assert!(calls > 50, "{calls} check-ins");
    assert!(
        lost.is_empty(),
        "check-ins failed on their retry too: {lost:?}"
    );
    assert!(
        failed.len() <= 1,
        "more than the call in flight failed: {failed:?}"
    );
}
