//! The HA network's shared state on both backends: tokens, registry, leases with fencing, files.

use ums_db::Db;
use ums_db::network::{NetworkCa, NewToken, ProcessRow, ReleaseNodeRow};

mod common;

fn fresh_url(backend: &str) -> (String, Option<tempfile::TempDir>) {
    common::fresh_url(backend, "cl")
}

both_backends!(
    the_network_ca_is_created_once_and_tokens_rotate_with_grace,
    heartbeats_record_the_database_clock,
    a_lease_has_one_holder_and_a_new_fence_per_holder,
    a_fenced_sweep_of_a_lost_lease_changes_nothing,
    files_are_recorded_replaced_and_deleted_with_a_revision,
    the_audit_log_lists_changes_newest_first_with_filters,
    heartbeats_keep_the_reported_config_hash,
    releases_only_grow_and_nodes_log_their_steps,
    update_slots_follow_the_concurrency_and_the_rollout_pauses_and_rolls_back,
);

async fn open(url: &str) -> Db {
    Db::open(url).await.expect("open").0
}

fn token(n: u8) -> NewToken {
    NewToken {
        secret_sha256: format!("{n:064}"),
        ca_key_sealed: vec![n; 40],
        secret_sealed: vec![n + 1; 40],
    }
}

async fn the_network_ca_is_created_once_and_tokens_rotate_with_grace(backend: &str) {
    let (url, _dir) = fresh_url(backend);
    let db = open(&url).await;
    assert_eq!(db.network_ca().await.expect("read"), None);
    let ca = NetworkCa {
        ca_cert_pem: "pem".into(),
        ca_sha256: "ab".repeat(32),
    };
    assert!(db.create_network(&ca, &token(1)).await.expect("create"));
    let other = NetworkCa {
        ca_cert_pem: "other".into(),
        ca_sha256: "cd".repeat(32),
    };
    assert!(
        !db.create_network(&other, &token(2)).await.expect("second"),
        "a second first server must lose"
    );
    assert_eq!(db.network_ca().await.expect("read"), Some(ca));
    let tokens = db.valid_tokens().await.expect("tokens");
    assert_eq!(tokens.len(), 1, "the loser's token is not recorded");
    assert_eq!(tokens[0].ca_key_sealed, vec![1; 40]);

    // Rotation with a grace period keeps both; without one only the new token is valid.
    let until = db.rotate_token(&token(3), 60_000).await.expect("rotate");
    assert!(until > ums_db::now_ms());
    let valid: Vec<_> = db
        .valid_tokens()
        .await
        .expect("tokens")
        .into_iter()
        .map(|t| t.secret_sha256)
        .collect();
    assert_eq!(valid, vec![format!("{:064}", 3), format!("{:064}", 1)]);
    db.rotate_token(&token(4), -1).await.expect("rotate now");
    let valid: Vec<_> = db
        .valid_tokens()
        .await
        .expect("tokens")
        .into_iter()
        .map(|t| t.secret_sha256)
        .collect();
    // Token 3 expired at once; token 1 keeps the grace it was given.
    assert_eq!(valid, vec![format!("{:064}", 4), format!("{:064}", 1)]);
}

async fn heartbeats_record_the_database_clock(backend: &str) {
    let (url, _dir) = fresh_url(backend);
    let db = open(&url).await;
    let mut p = ProcessRow {
        id: "server-a".into(),
        kind: "server".into(),
        host: "node1".into(),
        status: "running".into(),
        mode: "normal".into(),
        clock_ms: ums_db::now_ms() + 120_000,
        ..Default::default()
    };
    db.heartbeat(&p).await.expect("beat");
    p.status = "stopped".into();
    p.clock_ms = ums_db::now_ms();
    let now = db.heartbeat(&p).await.expect("beat again");
    assert!(
        db.set_process_supervisor("server-a", "watchdog-1")
            .await
            .expect("sup")
    );
    db.heartbeat(&p).await.expect("own heartbeat");
    let (rows, db_now) = db.list_processes().await.expect("list");
    assert_eq!(rows.len(), 1, "a heartbeat updates its row");
    assert_eq!(
        rows[0].supervisor_id.as_deref(),
        Some("watchdog-1"),
        "the process's own heartbeat keeps its supervisor"
    );
    assert_eq!(rows[0].status, "stopped");
    assert!(
        rows[0].clock_offset_ms.abs() < 5_000,
        "{}",
        rows[0].clock_offset_ms
    );
    assert!(db_now >= now && db_now - now < 5_000);
    assert!(db.remove_process("server-a").await.expect("rm"));
    assert!(!db.remove_process("server-a").await.expect("rm again"));
}

async fn a_lease_has_one_holder_and_a_new_fence_per_holder(backend: &str) {
    let (url, _dir) = fresh_url(backend);
    let db = open(&url).await;
    let f1 = db.acquire_lease("scheduler", "a", 60_000).await.expect("a");
    assert_eq!(f1, Some(1));
    assert_eq!(
        db.acquire_lease("scheduler", "b", 60_000).await.expect("b"),
        None
    );
    assert_eq!(
        db.acquire_lease("scheduler", "a", 60_000)
            .await
            .expect("renew"),
        Some(1)
    );
    db.release_lease("scheduler", "a").await.expect("release");
    assert_eq!(
        db.acquire_lease("scheduler", "b", 60_000).await.expect("b"),
        Some(2)
    );
    assert_eq!(
        db.lease_holder("scheduler").await.expect("holder"),
        Some(("b".into(), 2))
    );
    // An expired lease passes to the next taker.
    assert_eq!(db.acquire_lease("short", "a", 1).await.expect("a"), Some(1));
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    assert_eq!(
        db.acquire_lease("short", "b", 1_000).await.expect("b"),
        Some(2)
    );

    // Many servers racing: exactly one wins.
    let mut tasks = Vec::new();
    for i in 0..6 {
        let db = db.clone();
        tasks.push(tokio::spawn(async move {
            db.acquire_lease("race", &format!("s{i}"), 60_000).await
        }));
    }
    let mut winners = 0;
    for t in tasks {
        if let Ok(Some(_)) = t.await.expect("join") {
            winners += 1;
        }
    }
    assert_eq!(winners, 1);
}

async fn a_fenced_sweep_of_a_lost_lease_changes_nothing(backend: &str) {
    let (url, _dir) = fresh_url(backend);
    let db = open(&url).await;
    let stale = ProcessRow {
        id: "server-old".into(),
        kind: "server".into(),
        status: "running".into(),
        clock_ms: ums_db::now_ms(),
        ..Default::default()
    };
    db.heartbeat(&stale).await.expect("beat");
    let f = db
        .acquire_lease("scheduler", "a", 1)
        .await
        .expect("a")
        .expect("fence");
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let g = db
        .acquire_lease("scheduler", "b", 60_000)
        .await
        .expect("b")
        .expect("fence");
    assert!(g > f);
    assert_eq!(
        db.scheduler_sweep("scheduler", f, 0, 1)
            .await
            .expect("stale sweep"),
        None,
        "the old holder's fence is refused"
    );
    assert_eq!(
        db.list_processes().await.expect("list").0[0].status,
        "running"
    );
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let (stopped, _) = db
        .scheduler_sweep("scheduler", g, 1, 60_000)
        .await
        .expect("sweep")
        .expect("holder");
    assert_eq!(stopped, 1);
    assert_eq!(
        db.list_processes().await.expect("list").0[0].status,
        "stopped"
    );
}

async fn files_are_recorded_replaced_and_deleted_with_a_revision(backend: &str) {
    let (url, _dir) = fresh_url(backend);
    let db = open(&url).await;
    let (_, rev0) = db.change_counters().await.expect("counters");
    let f = db
        .insert_file("firmware/a.bin", &"1".repeat(64), 10, "s1")
        .await
        .expect("insert");
    let (_, rev1) = db.change_counters().await.expect("counters");
    assert!(rev1 > rev0);
    let g = db
        .insert_file("firmware/a.bin", &"2".repeat(64), 11, "s1")
        .await
        .expect("replace");
    let live = db.list_files(false).await.expect("list");
    assert_eq!(live.iter().map(|f| f.id).collect::<Vec<_>>(), vec![g.id]);
    assert!(db.file(f.id).await.is_err(), "the replaced file is gone");
    db.set_replica(g.id, "s2", "pending", "")
        .await
        .expect("replica");
    db.set_replica(g.id, "s2", "present", "")
        .await
        .expect("replica");
    let replicas = db.file_replicas().await.expect("replicas");
    let of_g: Vec<_> = replicas
        .iter()
        .filter(|r| r.file_id == g.id)
        .map(|r| (r.server_id.as_str(), r.status.as_str()))
        .collect();
    assert_eq!(of_g, vec![("s1", "present"), ("s2", "present")]);
    db.delete_file(g.id).await.expect("delete");
    assert!(
        db.delete_file(g.id).await.is_err(),
        "deleting twice is an error"
    );
    assert!(db.list_files(false).await.expect("list").is_empty());
    assert_eq!(db.list_files(true).await.expect("all").len(), 2);
    let (_, rev2) = db.change_counters().await.expect("counters");
    assert!(rev2 > rev1);
}

async fn the_audit_log_lists_changes_newest_first_with_filters(backend: &str) {
    use ums_db::audit::{AuditFilter, NewAuditEntry};
    let (url, _dir) = fresh_url(backend);
    let db = open(&url).await;
    let entry = |admin: &str, action: &str, target: &str| NewAuditEntry {
        admin: admin.into(),
        action: action.into(),
        target: target.into(),
        detail: "{}".into(),
        source: "127.0.0.1:5000".into(),
    };
    let first = db
        .insert_audit(&entry("alice", "CreateProfile", "profile 1"))
        .await
        .expect("insert");
    db.insert_audit(&entry("bob", "UpdateProfileParams", "profile 1"))
        .await
        .expect("insert");
    db.insert_audit(&entry("alice", "DeleteDevice", "device 100%"))
        .await
        .expect("insert");
    let all = db.list_audit(&AuditFilter::default()).await.expect("list");
    let actions: Vec<&str> = all.iter().map(|r| r.action.as_str()).collect();
    assert_eq!(
        actions,
        ["DeleteDevice", "UpdateProfileParams", "CreateProfile"],
        "newest first"
    );
    assert_eq!(all[2].id, first);
    assert_eq!(all[2].source, "127.0.0.1:5000");
    let by = |f: AuditFilter| {
        let db = db.clone();
        async move {
            db.list_audit(&f)
                .await
                .expect("list")
                .into_iter()
                .map(|r| format!("{} {}", r.admin, r.action))
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        by(AuditFilter {
            admin: Some("alice".into()),
            ..Default::default()
        })
        .await,
        ["alice DeleteDevice", "alice CreateProfile"]
    );
    assert_eq!(
        by(AuditFilter {
            target_contains: Some("profile 1".into()),
            action: Some("UpdateProfileParams".into()),
            ..Default::default()
        })
        .await,
        ["bob UpdateProfileParams"]
    );
    // `%` in the filter is a literal character, not a wildcard.
    assert_eq!(
        by(AuditFilter {
            target_contains: Some("0%".into()),
            ..Default::default()
        })
        .await,
        ["alice DeleteDevice"]
    );
    assert!(
        by(AuditFilter {
            since: Some(all[0].at + 1),
            ..Default::default()
        })
        .await
        .is_empty()
    );
    assert_eq!(
        by(AuditFilter {
            limit: 1,
            ..Default::default()
        })
        .await
        .len(),
        1
    );
}

async fn heartbeats_keep_the_reported_config_hash(backend: &str) {
    let (url, _dir) = fresh_url(backend);
    let db = open(&url).await;
    let mut p = ProcessRow {
        id: "server-a".into(),
        kind: "server".into(),
        status: "running".into(),
        mode: "normal".into(),
        config_hash: Some("abc".into()),
        ..Default::default()
    };
    db.heartbeat(&p).await.expect("beat");
    assert_eq!(
        db.list_processes().await.expect("list").0[0]
            .config_hash
            .as_deref(),
        Some("abc")
    );
    // A heartbeat without a hash (a watchdog reporting its child) keeps the known one.
    p.config_hash = None;
    db.heartbeat(&p).await.expect("beat");
    assert_eq!(
        db.list_processes().await.expect("list").0[0]
            .config_hash
            .as_deref(),
        Some("abc")
    );
}

async fn releases_only_grow_and_nodes_log_their_steps(backend: &str) {
    let (url, _dir) = fresh_url(backend);
    let db = open(&url).await;
    assert_eq!(db.latest_release().await.expect("latest"), None);
    let r = db
        .insert_release(4, "0.4.0", "d4", "{\"m\":4}", "root")
        .await
        .expect("insert");
    assert_eq!(r.revision, 4);
    for revision in [4, 3] {
        let err = db
            .insert_release(revision, "old", "dx", "{}", "root")
            .await
            .expect_err("not above the newest");
        assert!(err.to_string().contains("not above revision 4"), "{err}");
    }
    db.insert_release(5, "0.5.0", "d5", "{\"m\":5}", "root")
        .await
        .expect("insert");
    let latest = db.latest_release().await.expect("latest").expect("one");
    assert_eq!(
        (latest.revision, latest.manifest.as_str()),
        (5, "{\"m\":5}")
    );
    let all: Vec<i64> = db
        .releases(10)
        .await
        .expect("list")
        .iter()
        .map(|r| r.revision)
        .collect();
    assert_eq!(all, [5, 4]);

    let mut node = ReleaseNodeRow {
        node_id: "watchdog/a".into(),
        host: "127.0.0.2".into(),
        roles: "broker,server,watchdog".into(),
        installed_revision: 4,
        target_revision: 5,
        state: "downloading".into(),
        ..Default::default()
    };
    db.report_release_node(&node, Some(("download", "bin/ums-server 24 bytes")))
        .await
        .expect("report");
    node.state = "updated".into();
    node.installed_revision = 5;
    node.target_revision = 0;
    db.report_release_node(&node, Some(("done", "revision 5 installed")))
        .await
        .expect("report");
    db.report_release_node(&node, None).await.expect("report");
    let nodes = db.release_nodes().await.expect("nodes");
    assert_eq!(nodes.len(), 1);
    assert_eq!(
        (nodes[0].installed_revision, nodes[0].state.as_str()),
        (5, "updated")
    );
    let log = db.release_log(Some("watchdog/a"), 10).await.expect("log");
    let steps: Vec<(i64, &str)> = log.iter().map(|e| (e.revision, e.step.as_str())).collect();
    assert_eq!(steps, [(5, "download"), (5, "done")]);
    assert!(
        db.release_log(Some("watchdog/b"), 10)
            .await
            .expect("log")
            .is_empty()
    );
    assert_eq!(db.release_log(None, 1).await.expect("log").len(), 1);
}

async fn update_slots_follow_the_concurrency_and_the_rollout_pauses_and_rolls_back(backend: &str) {
    let (url, _dir) = fresh_url(backend);
    let db = open(&url).await;
    let rollout = db.release_rollout().await.expect("rollout");
    assert_eq!((rollout.paused, rollout.concurrency), (false, 1));

    // One node at a time by default: the second waits, the first keeps its slot.
    assert!(db.acquire_release_slot("wd-a", 1, 60_000).await.expect("a"));
    assert!(!db.acquire_release_slot("wd-b", 1, 60_000).await.expect("b"));
    assert!(
        db.acquire_release_slot("wd-a", 1, 60_000)
            .await
            .expect("a again")
    );
    db.free_release_slot("wd-a").await.expect("free");

    // Two at once: two slots are handed out, not a third; a freed one goes to the next node.
    let set = db.set_release_concurrency(2).await.expect("concurrency");
    assert_eq!(set.concurrency, 2);
    let n = db.release_rollout().await.expect("rollout").concurrency;
    for node in ["wd-a", "wd-b"] {
        assert!(
            db.acquire_release_slot(node, n, 60_000)
                .await
                .expect("slot"),
            "{node}"
        );
    }
    assert!(
        !db.acquire_release_slot("wd-c", n, 60_000)
            .await
            .expect("third")
    );
    // A holder asking again keeps its own slot and takes no second one.
    assert!(
        db.acquire_release_slot("wd-a", n, 60_000)
            .await
            .expect("again")
    );
    assert_eq!(
        db.release_slot_holders().await.expect("holders"),
        ["wd-a", "wd-b"]
    );
    db.renew_release_slot("wd-b", 60_000).await.expect("renew");
    db.free_release_slot("wd-a").await.expect("free");
    assert!(
        db.acquire_release_slot("wd-c", n, 60_000)
            .await
            .expect("freed")
    );
    assert_eq!(
        db.release_slot_holders().await.expect("holders"),
        ["wd-b", "wd-c"]
    );
    for bad in [0, ums_db::network::MAX_CONCURRENCY + 1] {
        let err = db.set_release_concurrency(bad).await.expect_err("refused");
        assert!(
            err.to_string().contains("concurrency must be 1 to"),
            "{err}"
        );
    }
    assert_eq!(db.release_rollout().await.expect("rollout").concurrency, 2);

    let paused = db.set_release_paused(true, "root").await.expect("pause");
    assert!(paused.paused);
    assert_eq!(
        db.release_rollout().await.expect("rollout").paused_by,
        "root"
    );
    assert!(
        !db.set_release_paused(false, "root")
            .await
            .expect("resume")
            .paused
    );

    // Nothing to roll back before a release a node installed, and nothing is written.
    let err = db.roll_back_release("root").await.expect_err("no release");
    assert!(err.to_string().contains("nothing to roll back"), "{err}");
    for r in 1..=3 {
        db.insert_release(
            r,
            &format!("0.{r}.0"),
            "d",
            &format!("{{\"m\":{r}}}"),
            "root",
        )
        .await
        .expect("insert");
    }
    let done = |revision: i64| ReleaseNodeRow {
        node_id: "wd-a".into(),
        installed_revision: revision,
        state: "updated".into(),
        ..Default::default()
    };
    // Revision 2 never reached a node (say it failed): the previous good release is 1.
    for r in [1, 3] {
        db.report_release_node(&done(r), Some(("done", "installed")))
            .await
            .expect("report");
    }
    assert_eq!(
        db.wanted_release()
            .await
            .expect("wanted")
            .map(|(r, b)| (r.revision, b)),
        Some((3, false))
    );
    let back = db.roll_back_release("admin2").await.expect("rollback");
    assert_eq!((back.rollback_to, back.rollback_from), (1, 3));
    assert_eq!(back.rollback_by, "admin2");
    assert_eq!(
        db.wanted_release()
            .await
            .expect("wanted")
            .map(|(r, b)| (r.revision, b)),
        Some((1, true))
    );
    // No older good release left: refused, the rollback to 1 stays.
    let err = db.roll_back_release("root").await.expect_err("none older");
    assert!(err.to_string().contains("older than revision 1"), "{err}");
    assert_eq!(db.release_rollout().await.expect("rollout").rollback_to, 1);
    // A newer upload ends the rollback.
    db.insert_release(4, "0.4.0", "d", "{\"m\":4}", "root")
        .await
        .expect("insert");
    assert_eq!(
        db.wanted_release()
            .await
            .expect("wanted")
            .map(|(r, b)| (r.revision, b)),
        Some((4, false))
    );
}
