//! Version checks between components: a client announcing a release whose protocol the server
//! does not serve is refused on the admin and the internal port, with both versions named; an
//! older release of a protocol the server serves is not.

use tonic::Request;
use tonic::metadata::AsciiMetadataValue;
use ums_proto::admin::v1 as pb;
use ums_proto::admin::v1::admin_service_client::AdminServiceClient;
use ums_proto::network::v1 as cpb;
use ums_proto::network::v1::network_service_client::NetworkServiceClient;
use ums_proto::version::{HEADER, VERSION};
use ums_tls::{ComponentKind, NetworkToken};

use crate::harness::{TestServer, channel, ha};

fn announcing<T>(message: T, text: &str) -> Request<T> {
    let mut r = Request::new(message);
    let value: AsciiMetadataValue = text.parse().expect("ascii");
    r.metadata_mut().insert(HEADER, value);
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incompatible_client_is_refused_naming_both_versions() {
    let url = ums_testkit::shared_database("svc_version").expect("postgres");
    let server = TestServer::start_with(Some(&url), ha).await;
    let password = server.admin_password.clone().expect("first admin");
    let mut admin = AdminServiceClient::new(
        channel(&server.admin_url, &server.ca_pem)
            .await
            .expect("connect"),
    );
    let login = |text: &str| {
        announcing(
            pb::LoginRequest {
                username: ums_server::FIRST_ADMIN.into(),
                password: password.clone(),
            },
            text,
        )
    };

    // A newer release speaking a protocol this server does not know.
    let err = admin
        .login(login("umsctl/99.0.0 protocol=99"))
        .await
        .expect_err("a newer protocol");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    let server_version = format!("server {VERSION}");
    assert!(
        err.message().contains("umsctl 99.0.0")
            && err.message().contains(&server_version)
            && err.message().contains("update the servers first"),
        "{err:?}"
    );
    // A release older than the oldest protocol served.
    let err = admin
        .login(login("umsctl/0.0.0-rc1 protocol=0"))
        .await
        .expect_err("an older protocol");
    assert!(
        err.message().contains("umsctl 0.0.0-rc1")
            && err.message().contains(&server_version)
            && err.message().contains("too old"),
        "{err:?}"
    );
    // Nonsense in the header is refused, saying what is expected.
    let err = admin
        .login(login("umsctl"))
        .await
        .expect_err("a malformed announcement");
    assert!(
        err.message().contains("<component>/<version> protocol=<n>"),
        "{err:?}"
    );
    // An older release of a protocol the server serves, and a client announcing nothing.
    admin
        .login(login(&format!(
            "umsctl/0.0.0-old protocol={}",
            ums_proto::version::OLDEST_PROTOCOL
        )))
        .await
        .expect("an older compatible release");
    admin
        .login(pb::LoginRequest {
            username: ums_server::FIRST_ADMIN.into(),
            password: password.clone(),
        })
        .await
        .expect("no announcement");

    // The internal port: a component's own channel announces its release in its user agent and
    // is served; a newer protocol is refused.
    let token = NetworkToken::parse(&server.token()).expect("token");
    let identity = ums_network::join(&ums_network::JoinOptions {
        server: server.admin_addr(),
        token,
        kind: ComponentKind::Broker,
        id: "broker-version".into(),
        names: vec!["127.0.0.1".into()],
    })
    .await
    .expect("join");
    let mut internal = NetworkServiceClient::new(
        ums_network::internal_channel(&identity, &server.internal_addr).expect("channel"),
    );
    internal
        .status(cpb::StatusRequest {})
        .await
        .expect("this build's broker is served");
    let err = internal
        .status(announcing(
            cpb::StatusRequest {},
            "broker/99.0.0 protocol=99",
        ))
        .await
        .expect_err("a newer broker");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message().contains("broker 99.0.0") && err.message().contains(&server_version),
        "{err:?}"
    );
    assert!(
        server
            .log_text()
            .contains("refused a client of another version"),
        "{}",
        server.log_text()
    );
    server.stop().await;
}
