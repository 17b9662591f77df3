//! The migration service on one server: the update's status (schema history, versions, "N of M
//! servers updated", the steps that wait), the pre-flight plan with its fixes, the update log
//! with a backup in it, and the write permission running steps needs.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ums_db::network::ProcessRow;
use ums_proto::admin::v1 as pb;

use crate::harness::{self, TestServer, eventually, ha};

async fn status(admin: &mut harness::Admin) -> pb::UpdateStatus {
    admin
        .update_status(pb::UpdateStatusRequest {})
        .await
        .expect("update status")
        .into_inner()
}

async fn plan(admin: &mut harness::Admin) -> pb::UpdatePlan {
    admin
        .update_plan(pb::UpdatePlanRequest {})
        .await
        .expect("update plan")
        .into_inner()
}

fn check<'a>(plan: &'a pb::UpdatePlan, checked: &str) -> Vec<&'a pb::PlanCheck> {
    plan.checks
        .iter()
        .filter(|c| c.checked == checked)
        .collect()
}

/// Writes registry rows every 200 ms until the flag drops, as running processes would, each
/// with its clock now.
fn keep_alive(db: Arc<ums_db::Db>, rows: Vec<ProcessRow>, stop: Arc<AtomicBool>) {
    tokio::spawn(async move {
        while !stop.load(Ordering::Relaxed) {
            for r in &rows {
                let r = ProcessRow {
                    clock_ms: ums_db::now_ms(),
                    ..r.clone()
                };
                db.heartbeat(&r).await.expect("heartbeat");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_status_plan_and_log_on_one_server() {
    let url = ums_testkit::shared_database("svc_update").expect("postgres");
    let server = TestServer::start_with(Some(&url), ha).await;
    let mut admin = server.admin();
    let latest = ums_db::schema::latest().to_string();

    // Status: the schema and its whole history, this server alone and updated.
    let s = eventually(Duration::from_secs(10), || {
        let mut admin = admin.clone();
        async move {
            let s = status(&mut admin).await;
            (s.servers_running == 1).then_some(s)
        }
    })
    .await
    .expect("the server's heartbeat in the registry");
    assert_eq!(s.schema_version, latest);
    assert_eq!(s.summary, "1 of 1 servers updated", "{s:?}");
    assert!(!s.in_progress && s.pending.is_empty(), "{s:?}");
    let versions: Vec<&str> = s.history.iter().map(|h| h.version.as_str()).collect();
    assert_eq!(versions.first(), Some(&"1.0"), "{versions:?}");
    assert_eq!(versions.last(), Some(&latest.as_str()), "{versions:?}");
    assert!(
        s.history.iter().all(|h| h.phase == "expand"),
        "{:?}",
        s.history
    );
    let last = s.history.last().expect("a step");
    assert_eq!(last.applied_by, format!("server/{}", s.answered_by));
    assert_eq!(last.binary_version, s.binary_version);
    let me = s
        .processes
        .iter()
        .find(|p| p.id == s.answered_by)
        .expect("this server in the status");
    assert!(
        me.updated && me.mode == "normal" && me.schema_max == latest,
        "{me:?}"
    );

    // Plan: nothing fails, but no backup was ever taken.
    let p = plan(&mut admin).await;
    assert_eq!(p.failed, 0, "{p:#?}");
    for name in ["versions", "schema", "clocks", "registry"] {
        let rows = check(&p, name);
        assert!(rows.iter().all(|c| c.status == "ok"), "{name}: {p:#?}");
    }
    let backup = check(&p, "backup");
    assert_eq!(backup[0].status, "warn", "{p:#?}");
    assert!(backup[0].result.contains("no backup"), "{p:#?}");
    assert!(backup[0].fix.contains("ums-server backup"), "{p:#?}");

    // A backup is recorded in the update log, and the plan finds it.
    let mut cfg = ums_server::ServerConfig {
        data_dir: server.data_dir.clone(),
        database_url: url.clone(),
        ..Default::default()
    };
    ha(&mut cfg);
    let cfg = cfg.validate().expect("config");
    let out = tempfile::tempdir().expect("dir");
    let taken = ums_server::backup::create_backup(&cfg, Some(out.path()))
        .await
        .expect("backup");
    let p = plan(&mut admin).await;
    let backup = check(&p, "backup");
    assert_eq!(backup[0].status, "ok", "{p:#?}");
    assert!(
        backup[0].result.contains(&taken.path.display().to_string()),
        "{p:#?}"
    );
    let log = admin
        .update_log(pb::UpdateLogRequest { limit: 5 })
        .await
        .expect("log")
        .into_inner();
    assert!(log.entries.len() <= 5);
    let last = log.entries.last().expect("an entry");
    assert_eq!(
        (last.step.as_str(), last.outcome.as_str()),
        ("backup", "ok")
    );
    assert!(last.actor.starts_with("backup/"), "{last:?}");

    // A newer server beside this one (a registry row: a second release cannot run in this
    // process, the release is chosen by a process-wide variable; the end-to-end test runs the
    // real one), a broker whose clock is two minutes off, and an entry whose watchdog is gone.
    let db = Arc::new(ums_db::Db::connect(&url).await.expect("connect"));
    let row = |id: &str, kind: &str| ProcessRow {
        id: id.into(),
        kind: kind.into(),
        host: "127.0.0.1".into(),
        status: "running".into(),
        mode: "update".into(),
        clock_ms: ums_db::now_ms(),
        ..Default::default()
    };
    let newer = ProcessRow {
        version: "9.0.0".into(),
        schema_min: Some(latest.clone()),
        schema_max: Some(format!("{}.99", ums_db::schema::latest().major)),
        ..row("server-newer", "server")
    };
    let skewed = || ProcessRow {
        version: "9.0.0".into(),
        clock_ms: ums_db::now_ms() + 120_000,
        ..row("broker-skewed", "broker")
    };
    let orphan = ProcessRow {
        supervisor_id: Some("watchdog-gone".into()),
        ..row("broker-orphan", "broker")
    };
    let stop = Arc::new(AtomicBool::new(false));
    keep_alive(db.clone(), vec![newer, orphan], stop.clone());
    // The skewed broker reports once, just before the plan reads it. The others are in the
    // registry once the newer server is counted and the orphan's first heartbeat is written.
    let s = eventually(Duration::from_secs(10), || {
        let (mut admin, db) = (admin.clone(), db.clone());
        async move {
            let (rows, _) = db.list_processes().await.expect("registry");
            let orphan = rows.iter().any(|r| r.id == "broker-orphan");
            let s = status(&mut admin).await;
            (s.servers_running == 2 && orphan).then_some(s)
        }
    })
    .await
    .expect("the newer server counted and the orphan registered");
    assert_eq!(s.summary, "1 of 2 servers updated", "{s:#?}");
    assert_eq!(s.newest_version, "9.0.0");
    assert!(s.in_progress, "{s:#?}");
    let newer = s.processes.iter().find(|p| p.id == "server-newer");
    assert!(newer.is_some_and(|p| p.updated), "{s:#?}");
    assert!(
        s.processes
            .iter()
            .any(|p| p.id == s.answered_by && !p.updated),
        "{s:#?}"
    );
    let only_newer = s.pending.iter().find(|w| w.phase == "unknown");
    assert!(
        only_newer.is_some_and(|w| w.waits_for.contains("server-newer")),
        "{s:#?}"
    );

    db.heartbeat(&skewed()).await.expect("heartbeat");
    let p = plan(&mut admin).await;
    let clocks = check(&p, "clocks");
    assert_eq!(clocks[0].status, "fail", "{p:#?}");
    assert!(clocks[0].result.contains("broker-skewed"), "{p:#?}");
    assert!(clocks[0].fix.contains("synchronise"), "{p:#?}");
    assert!(p.failed >= 1, "{p:#?}");
    let versions = check(&p, "versions");
    assert_eq!(versions[0].status, "warn", "{p:#?}");
    assert!(
        versions[0].result.contains("1 of 2 servers updated")
            && versions[0].result.contains(&s.answered_by),
        "{p:#?}"
    );
    let registry = check(&p, "registry");
    let orphaned = registry
        .iter()
        .find(|c| c.result.contains("broker-orphan"))
        .unwrap_or_else(|| panic!("the orphaned entry: {p:#?}"));
    assert_eq!(orphaned.status, "warn");
    assert!(
        orphaned.fix.contains("umsctl network rm broker-orphan"),
        "{p:#?}"
    );

    // Running steps needs network:write; with nothing of this server's waiting, the newer
    // server's steps are not this server's to run.
    admin
        .create_admin(pb::CreateAdminRequest {
            username: "reader".into(),
            password: "reader-password-1".into(),
            permissions: vec!["network:read".into()],
        })
        .await
        .expect("create reader");
    let mut reader = server
        .login("reader", "reader-password-1")
        .await
        .expect("login");
    status(&mut reader).await;
    let err = reader
        .update_apply(pb::UpdateApplyRequest {})
        .await
        .expect_err("network:read cannot run steps");
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    let err = admin
        .update_apply(pb::UpdateApplyRequest {})
        .await
        .expect_err("only newer servers know the step");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message().contains("server-newer") && err.message().contains(&latest),
        "{err:?}"
    );

    // Once the others are gone, the server is alone and updated again; nothing waits.
    stop.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(300)).await;
    for id in ["server-newer", "broker-skewed", "broker-orphan"] {
        db.remove_process(id).await.expect("remove");
    }
    let s = status(&mut admin).await;
    assert_eq!(s.summary, "1 of 1 servers updated", "{s:#?}");
    assert!(s.pending.is_empty(), "{s:#?}");
    let applied = admin
        .update_apply(pb::UpdateApplyRequest {})
        .await
        .expect("nothing to apply")
        .into_inner();
    assert!(applied.applied.is_empty(), "{applied:?}");
    server.stop().await;
}
