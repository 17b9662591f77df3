//! A server of an HA network: tokens of another network refused on both sides, and a database
//! that restarts under the server.

use std::time::{Duration, Instant};

use ums_proto::admin::v1 as pb;
use ums_proto::network::v1 as cpb;
use ums_proto::network::v1::network_service_client::NetworkServiceClient;
use ums_tls::{ComponentKind, NetworkToken};

use crate::harness::{self, TestServer, eventually, ha};

/// The processes of the network, as `umsctl network list` shows them.
async fn processes(admin: &mut harness::Admin) -> Vec<cpb::ProcessInfo> {
    admin
        .list_processes(pb::ListProcessesRequest {})
        .await
        .expect("list processes")
        .into_inner()
        .processes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_networks_token_is_refused_on_both_sides() {
    let ours = ums_testkit::shared_database("svc_net_ours").expect("postgres");
    let theirs = ums_testkit::shared_database("svc_net_theirs").expect("postgres");
    let a = TestServer::start_with(Some(&ours), ha).await;
    let x = TestServer::start_with(Some(&theirs), ha).await;
    let foreign = NetworkToken::parse(&x.token()).expect("token");
    let token = NetworkToken::parse(&a.token()).expect("token");

    let join = |token: NetworkToken, id: &str| ums_network::JoinOptions {
        server: a.admin_addr(),
        token,
        kind: ComponentKind::Broker,
        id: id.into(),
        names: vec!["127.0.0.1".into()],
    };

    // A component with the other network's token stops at the CA check, before any secret.
    let err = ums_network::join(&join(foreign.clone(), "broker-x"))
        .await
        .expect_err("foreign token");
    assert!(err.to_string().contains("network token mismatch"), "{err}");
    // The right CA but a secret that is not this network's.
    let forged = NetworkToken::generate(&token.ca_hash);
    let err = ums_network::join(&join(forged, "broker-f"))
        .await
        .expect_err("forged secret");
    assert!(err.to_string().contains("network token mismatch"), "{err}");
    let logged = eventually(Duration::from_secs(5), || async {
        let log = a.log_text();
        (log.matches("network token mismatch").count() >= 2).then_some(())
    })
    .await;
    assert!(
        logged.is_some(),
        "the server logs both refusals:\n{}",
        a.log_text()
    );

    // A server with the other network's token refuses to start on this database.
    let refused = TestServer::try_start_with(Some(&ours), |cfg| {
        ha(cfg);
        harness::write_token(cfg, &x.token());
    })
    .await;
    let err = format!(
        "{:#}",
        refused.err().expect("a foreign token on our database")
    );
    assert!(err.contains("network token mismatch"), "{err}");

    // The right token joins; the identity works on the internal port and reports a heartbeat.
    let identity = ums_network::join(&join(token.clone(), "broker-1"))
        .await
        .expect("join");
    assert_eq!(identity.kind, ComponentKind::Broker);
    let channel = ums_network::internal_channel(&identity, &a.internal_addr).expect("channel");
    let mut client = NetworkServiceClient::new(channel);
    client
        .heartbeat(cpb::HeartbeatRequest {
            process: Some(cpb::ProcessInfo {
                id: "broker-1".into(),
                kind: "broker".into(),
                host: "127.0.0.1".into(),
                status: "running".into(),
                clock_ms: ums_db::now_ms(),
                ..Default::default()
            }),
            supervised: vec![],
            known_servers: vec![],
        })
        .await
        .expect("heartbeat over mutual TLS");
    // A broker cannot report for another process.
    let err = client
        .heartbeat(cpb::HeartbeatRequest {
            process: Some(cpb::ProcessInfo {
                id: "server-evil".into(),
                kind: "server".into(),
                ..Default::default()
            }),
            supervised: vec![],
            known_servers: vec![],
        })
        .await
        .expect_err("impersonation");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    let mut admin = a.admin();
    let list = processes(&mut admin).await;
    assert!(list.iter().any(|p| p.id == "broker-1"), "{list:?}");
    assert!(!list.iter().any(|p| p.clock_skewed), "{list:?}");
    // A clock two minutes ahead of the servers' is flagged.
    client
        .heartbeat(cpb::HeartbeatRequest {
            process: Some(cpb::ProcessInfo {
                id: "broker-1".into(),
                kind: "broker".into(),
                host: "127.0.0.1".into(),
                status: "running".into(),
                clock_ms: ums_db::now_ms() + 120_000,
                ..Default::default()
            }),
            supervised: vec![],
            known_servers: vec![],
        })
        .await
        .expect("heartbeat");
    let list = processes(&mut admin).await;
    let broker = list
        .iter()
        .find(|p| p.id == "broker-1")
        .expect("broker-1 listed");
    assert!(broker.clock_skewed, "{broker:?}");
    assert!(broker.clock_offset_ms > 100_000, "{broker:?}");

    // An identity of the other network cannot even open the internal port.
    let their_identity = ums_network::join(&ums_network::JoinOptions {
        server: x.admin_addr(),
        ..join(foreign, "broker-2")
    })
    .await
    .expect("join the other network");
    let channel =
        ums_network::internal_channel(&their_identity, &a.internal_addr).expect("channel");
    let err = NetworkServiceClient::new(channel)
        .status(cpb::StatusRequest {})
        .await
        .expect_err("foreign certificate");
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");

    // The token can be exported again and rotated; the old one keeps working for its grace.
    let exported = admin
        .export_token(pb::ExportTokenRequest {})
        .await
        .expect("export")
        .into_inner();
    assert_eq!(exported.token, a.token());
    let rotated = admin
        .rotate_token(pb::RotateTokenRequest { grace_seconds: 2 })
        .await
        .expect("rotate")
        .into_inner();
    let new = NetworkToken::parse(&rotated.token).expect("new token");
    assert_ne!(new, token);
    assert_eq!(
        a.token(),
        new.expose(),
        "the token file holds the new token"
    );
    ums_network::join(&join(token.clone(), "broker-3"))
        .await
        .expect("old token within its grace");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let err = ums_network::join(&join(token, "broker-4"))
        .await
        .expect_err("old token after its grace");
    assert!(err.to_string().contains("network token mismatch"), "{err}");
    ums_network::join(&join(new, "broker-5"))
        .await
        .expect("new token");
    x.stop().await;
    a.stop().await;
}

/// The database goes away under a server: it reports itself unavailable, and once the database
/// is back it serves again by itself, with nothing lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_survives_its_database_restarting() {
    let pg = ums_testkit::Postgres::start().expect("own postgres");
    let url = pg.create_database("restart").expect("database");
    let server = TestServer::start_with(Some(&url), ha).await;
    let mut dev = server.device().await;
    let reg = dev
        .register("00:00:00:00:db:01", "db-restart")
        .await
        .expect("register");
    dev.check_in("idle", 0).await.expect("check in");
    let ca = server.ca_pem.clone();
    let status = |url: String, ca: Vec<u8>| async move {
        let channel = harness::channel(&url, &ca).await.ok()?;
        NetworkServiceClient::new(channel)
            .status(cpb::StatusRequest {})
            .await
            .ok()
            .map(|r| r.into_inner().available)
    };

    pg.stop_now().expect("stop postgres");
    let stopped_at = Instant::now();
    let down = eventually(Duration::from_secs(20), || {
        let (url, ca) = (server.admin_url.clone(), ca.clone());
        async move { (status(url, ca).await != Some(true)).then_some(()) }
    })
    .await;
    assert!(down.is_some(), "the server must report itself unavailable");
    let err = dev.check_in("idle", 0).await.expect_err("no database");
    assert!(
        matches!(err.code(), tonic::Code::Unavailable | tonic::Code::Internal),
        "{err:?}"
    );

    pg.resume().expect("start postgres");
    let resumed_at = Instant::now();
    println!("database down for {:?}", stopped_at.elapsed());
    let back = eventually(Duration::from_secs(30), || {
        let (url, ca) = (server.admin_url.clone(), ca.clone());
        async move { (status(url, ca).await == Some(true)).then_some(()) }
    })
    .await;
    assert!(
        back.is_some(),
        "the server must come back by itself:\n{}",
        server.log_text()
    );
    println!(
        "server available again {:?} after the database",
        resumed_at.elapsed()
    );
    let again = eventually(Duration::from_secs(10), || {
        let mut d = dev.clone();
        async move { d.check_in("idle", 0).await.ok() }
    })
    .await;
    assert!(again.is_some(), "devices check in again");
    let shown = server
        .admin()
        .get_device(pb::GetDeviceRequest { id: reg.device_id })
        .await
        .expect("show the device")
        .into_inner();
    assert_eq!(shown.name, "db-restart", "nothing was lost");
    let log = server.log_text();
    assert!(log.contains("database is unreachable"), "{log}");
    assert!(log.contains("reachable again"), "{log}");
    server.stop().await;
}
