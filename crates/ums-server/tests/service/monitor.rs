//! The network check of one server (green, cached, counting tokens of another network) and
//! the audit log's refusals of bad filters.

use ums_proto::admin::v1 as pb;
use ums_tls::{ComponentKind, NetworkToken};

use crate::harness::{TestServer, ha};

fn not_ok(r: &pb::NetworkCheckReport) -> Vec<String> {
    r.results
        .iter()
        .filter(|r| r.status == "failed" || r.status == "warning")
        .map(|r| format!("{} | {} | {} | {}", r.section, r.checked, r.result, r.fix))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_server_checks_green_caches_the_report_and_counts_foreign_tokens() {
    let url = ums_testkit::shared_database("svc_check").expect("postgres");
    let a = TestServer::start_with(Some(&url), ha).await;
    let mut admin = a.admin();
    let check = |fresh| {
        let mut admin = a.admin();
        async move {
            admin
                .network_check(pb::NetworkCheckRequest { fresh })
                .await
                .expect("network check")
                .into_inner()
        }
    };
    let first = check(true).await;
    assert_eq!(first.failed + first.warnings, 0, "{:#?}", not_ok(&first));
    assert!(!first.cached);
    for section in [
        "files",
        "device ports",
        "certificates",
        "more checks",
        "roles",
    ] {
        assert!(
            first.results.iter().any(|r| r.section == section),
            "no {section} rows: {:#?}",
            first.results
        );
    }
    let again = check(false).await;
    assert!(
        again.cached,
        "a report less than a minute old is the cached one"
    );
    assert_eq!(again.checked_at_ms, first.checked_at_ms);

    // A component with another network's token is refused, counted, and named with its fix.
    let join = ums_network::JoinOptions {
        server: a.admin_addr(),
        token: NetworkToken::generate(&"cd".repeat(32)),
        kind: ComponentKind::Broker,
        id: "broker-other".into(),
        names: vec!["127.0.0.1".into()],
    };
    ums_network::join(&join).await.expect_err("foreign token");
    let cached = check(false).await;
    assert_eq!(cached.failed, 0, "the cache answers without checking again");
    let fresh = check(true).await;
    let row = fresh
        .results
        .iter()
        .find(|r| r.status == "failed" && r.checked.starts_with("network token"))
        .unwrap_or_else(|| panic!("{:#?}", not_ok(&fresh)));
    assert!(row.result.starts_with("1 join attempts"), "{row:?}");
    assert!(row.result.contains("a broker from 127.0.0.1"), "{row:?}");
    assert!(row.fix.contains("umsctl token export"), "{row:?}");
    assert_eq!(fresh.failed, 1, "{:#?}", not_ok(&fresh));

    // Bad filters of the audit log are refused.
    let err = admin
        .list_audit(pb::ListAuditRequest {
            since_ms: 10,
            until_ms: 5,
            ..Default::default()
        })
        .await
        .expect_err("since after until");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    let err = admin
        .list_audit(pb::ListAuditRequest {
            since_ms: -1,
            ..Default::default()
        })
        .await
        .expect_err("negative");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
}
