//! The persistence suite, written once and run against SQLite and a real PostgreSQL started by
//! the harness.

use ums_db::batch::Batcher;
use ums_db::devices::{CheckIn, DeviceUpdate, Registration};
use ums_db::{Db, DbError, MigrateError, SchemaVersion};
use ums_domain::{JobKind, JobState, ObjectKind, ObjectRef};

#[path = "db/archive.rs"]
mod archive;
mod common;
use archive::{
    a_snapshot_moves_between_backends, a_snapshot_restores_every_row, an_import_is_all_or_nothing,
};
#[path = "db/update_mode.rs"]
mod update_mode;
use update_mode::a_journal_replays_once_whatever_cuts_it_off;
#[path = "db/sessions.rs"]
mod sessions;
use sessions::batched_logins_each_get_the_session_they_wrote;

fn fresh_url(backend: &str) -> (String, Option<tempfile::TempDir>) {
    common::fresh_url(backend, "db")
}

both_backends!(
    migrates_once_and_refuses_a_newer_schema,
    concurrent_opens_migrate_once,
    an_older_binary_runs_on_an_expanded_schema_only,
    contract_steps_wait_and_each_step_is_recorded,
    registration_is_idempotent_and_guards_the_credential,
    batched_storm_loses_nothing,
    settings_writes_stamp_what_they_change,
    failed_writes_leave_the_data_as_it_was,
    jobs_are_handed_out_once_and_reported_by_their_device,
    admin_accounts_and_sessions,
    an_assigned_profile_is_deleted_only_with_force,
    a_snapshot_restores_every_row,
    a_snapshot_moves_between_backends,
    an_import_is_all_or_nothing,
    a_journal_replays_once_whatever_cuts_it_off,
    batched_logins_each_get_the_session_they_wrote,
);

async fn open(url: &str) -> Db {
    Db::open(url).await.expect("open").0
}

fn reg(unit: &str, secret: &str) -> Registration {
    Registration {
        unit_id: unit.into(),
        name: format!("tc-{unit}"),
        firmware: "11.10.100".into(),
        secret_hash: secret.into(),
    }
}

async fn migrates_once_and_refuses_a_newer_schema(backend: &str) {
    let (url, _dir) = fresh_url(backend);
    let (db, outcome) = Db::open(&url).await.expect("first open");
    assert_eq!(outcome.from, None);
    assert_eq!(outcome.to, ums_migrations::latest());
    assert_eq!(
        db.schema_version().await.expect("version"),
        Some(ums_migrations::latest())
    );
    db.close().await.expect("close");

    let (db, outcome) = Db::open(&url).await.expect("second open");
    assert!(
        outcome.applied.is_empty(),
        "nothing to apply the second time"
    );
    // Pretend a newer server migrated this database.
    let newer = SchemaVersion::new(ums_migrations::latest().major + 1, 0);
    db.debug_set_schema_version(newer)
        .await
        .expect("set version");
    db.close().await.expect("close");

    let err = Db::open(&url)
        .await
        .expect_err("newer schema must be refused");
    let msg = err.to_string();
    assert!(
        matches!(err, DbError::Migrate(MigrateError::NewerSchema { .. })),
        "{msg}"
    );
    assert!(
        msg.contains(&newer.to_string()) && msg.contains(&ums_migrations::latest().to_string()),
        "{msg}"
    );
}

/// A newer release expanded the schema: this build still opens it (a server restarted mid-way
/// through a rolling upgrade comes back); once a contract step is recorded it is refused,
/// naming the versions and the step.
async fn an_older_binary_runs_on_an_expanded_schema_only(backend: &str) {
    let (url, _dir) = fresh_url(backend);
    let known = ums_migrations::latest();
    let (db, _) = Db::open(&url).await.expect("first open");
    let expanded = SchemaVersion::new(known.major, known.minor + 1);
    db.debug_record_step(expanded, ums_db::Phase::Expand)
        .await
        .expect("record expand");
    db.close().await.expect("close");

    let (db, outcome) = Db::open(&url).await.expect("an expanded schema opens");
    assert!(outcome.ahead, "{outcome:?}");
    assert_eq!(outcome.to, expanded);
    assert!(outcome.applied.is_empty());
    assert_eq!(
        db.schema_version().await.expect("version"),
        Some(expanded),
        "never downgraded"
    );
    let contracted = SchemaVersion::new(known.major, known.minor + 2);
    db.debug_record_step(contracted, ums_db::Phase::Contract)
        .await
        .expect("record contract");
    db.close().await.expect("close");

    let err = Db::open(&url)
        .await
        .expect_err("a contracted schema is refused");
    let msg = err.to_string();
    assert!(
        matches!(err, DbError::Migrate(MigrateError::NewerSchema { .. })),
        "{msg}"
    );
    assert!(
        msg.contains(&contracted.to_string())
            && msg.contains(&known.to_string())
            && msg.contains("contract"),
        "{msg}"
    );
}

/// With contract steps held back nothing beyond the first one runs; the history records each
/// applied step with its phase, binary and process.
async fn contract_steps_wait_and_each_step_is_recorded(backend: &str) {
    let (url, _dir) = fresh_url(backend);
    let db = Db::connect(&url).await.expect("connect");
    let opts = ums_db::RunOptions {
        contract: false,
        binary_version: "9.9.9".into(),
        applied_by: "server/test".into(),
        stop_at_major: false,
    };
    let outcome = db.migrate(&opts).await.expect("migrate");
    // The released steps are all expand steps: everything applies.
    assert_eq!(outcome.to, ums_migrations::latest());
    assert!(outcome.pending.is_empty(), "{outcome:?}");
    let history = db.schema_history().await.expect("history");
    assert_eq!(history.len(), ums_migrations::migrations().len());
    assert!(
        history
            .iter()
            .all(|h| h.phase == Some(ums_db::Phase::Expand) && h.name.is_some()),
        "{history:?}"
    );
    let last = history.last().expect("a step");
    assert_eq!(last.binary_version.as_deref(), Some("9.9.9"));
    assert_eq!(last.applied_by.as_deref(), Some("server/test"));
    db.log_update_step("server/test", "migrate", "1.3 -> 1.4", true)
        .await
        .expect("log");
    let log = db.update_log(10).await.expect("log");
    assert_eq!(log.len(), 1);
    assert_eq!(
        (log[0].step.as_str(), log[0].outcome.as_str()),
        ("migrate", "ok")
    );
    assert!(db.last_update_step("backup").await.expect("last").is_none());
}

async fn concurrent_opens_migrate_once(backend: &str) {
    let (url, _dir) = fresh_url(backend);
    let opens = (0..4).map(|_| {
        let url = url.clone();
        tokio::spawn(async move { Db::open(&url).await.map(|(_, o)| o.applied.len()) })
    });
    let mut applied = 0;
    for h in opens {
        applied += h.await.expect("join").expect("open");
    }
    assert_eq!(
        applied,
        ums_migrations::migrations().len(),
        "each migration ran exactly once"
    );
}

async fn registration_is_idempotent_and_guards_the_credential(backend: &str) {
    let (url, _dir) = fresh_url(backend);
    let db = open(&url).await;
    let first = db
        .register_device(&reg("AABBCCDDEEFF", "s1"))
        .await
        .expect("register");
    assert!(first.created);
    let again = db
        .register_device(&reg("AABBCCDDEEFF", "s1"))
        .await
        .expect("again");
    assert_eq!((again.device_id, again.created), (first.device_id, false));

    let err = db
        .register_device(&reg("AABBCCDDEEFF", "other"))
        .await
        .expect_err("impostor");
    assert!(matches!(err, DbError::CredentialMismatch(_)), "{err}");
    assert_eq!(
        db.device_secret_hash(first.device_id).await.expect("hash"),
        Some(Some("s1".into()))
    );

    db.reset_device_credential(first.device_id)
        .await
        .expect("reset");
    let replaced = db
        .register_device(&reg("AABBCCDDEEFF", "s2"))
        .await
        .expect("after reset");
    assert_eq!(
        (replaced.device_id, replaced.created),
        (first.device_id, false)
    );
    assert_eq!(
        db.device_secret_hash(first.device_id).await.expect("hash"),
        Some(Some("s2".into()))
    );
    assert_eq!(db.count_devices().await.expect("count"), 1);
}

async fn batched_storm_loses_nothing(backend: &str) {
    let (url, _dir) = fresh_url(backend);
    let db = open(&url).await;
    let batcher = Batcher::start(db.clone());
    let tasks: Vec<_> = (0..600)
        .map(|i| {
            let b = batcher.clone();
            tokio::spawn(async move {
                let r = b
                    .register(reg(&format!("unit-{i}"), &format!("secret-{i}")))
                    .await?;
                let c = b
                    .check_in(CheckIn {
                        device_id: r.device_id,
                        firmware: "11.10.200".into(),
                        state: "idle".into(),
                        at: 1_000 + i,
                        applied_revision: i,
                    })
                    .await?;
                Ok::<_, DbError>((r, c))
            })
        })
        .collect();
    let mut ids = std::collections::HashSet::new();
    for t in tasks {
        let (r, c) = t.await.expect("join").expect("register and check in");
        assert!(r.created);
        assert!(c.is_some(), "a registered device checks in");
        ids.insert(r.device_id);
    }
    assert_eq!(ids.len(), 600);
    assert_eq!(db.count_devices().await.expect("count"), 600);
    let page = db.list_devices(None, 0, 10_000).await.expect("list");
    assert!(
        page.devices
            .iter()
            .all(|d| d.firmware == "11.10.200" && d.last_contact.is_some())
    );
    // Each device's applied revision is the one it reported (unit-{i} reported i).
    for d in &page.devices {
        let i: i64 = d.unit_id["unit-".len()..].parse().expect("unit number");
        assert_eq!(d.applied_revision, Some(i), "{}", d.unit_id);
    }
    // The single-item path records it too.
    let first = &page.devices[0];
    db.check_in(&CheckIn {
        device_id: first.id,
        firmware: "11.10.200".into(),
        state: "idle".into(),
        at: 5_000,
        applied_revision: 77,
    })
    .await
    .expect("check in alone");
    let d = db.get_device(first.id).await.expect("device");
    assert_eq!(
        (d.applied_revision, d.last_contact),
        (Some(77), Some(5_000))
    );
    // A check-in of an unknown device is answered, not an error of the batch.
    let unknown = batcher
        .check_in(CheckIn {
            device_id: 999_999,
            firmware: "x".into(),
            state: "idle".into(),
            at: 1,
            applied_revision: 0,
        })
        .await
        .expect("unknown device");
    assert_eq!(unknown, None);
    // One refused registration in a batch does not fail the others.
    let (bad, good) = tokio::join!(
        batcher.register(reg("unit-1", "wrong")),
        batcher.register(reg("unit-new", "s"))
    );
    assert!(matches!(bad, Err(DbError::CredentialMismatch(_))));
    assert!(good.expect("good registration").created);
    // A new unit twice in one batch: the same secret is a repeat, another secret an impostor.
    let (x, y, z) = tokio::join!(
        batcher.register(reg("dup", "s1")),
        batcher.register(reg("dup", "s1")),
        batcher.register(reg("dup", "s2")),
    );
    let (x, y) = (x.expect("first"), y.expect("repeat"));
    assert_eq!(x.device_id, y.device_id);
    assert!(matches!(z, Err(DbError::CredentialMismatch(_))), "{z:?}");
    assert_eq!(
        db.device_secret_hash(x.device_id).await.expect("hash"),
        Some(Some("s1".into()))
    );
}

async fn settings_writes_stamp_what_they_change(backend: &str) {
    let (url, _dir) = fresh_url(backend);
    let db = open(&url).await;
    let dev = db
        .register_device(&reg("D1", "s"))
        .await
        .expect("register")
        .device_id;
    let top = db.create_folder("Site", None).await.expect("folder");
    let sub = db
        .create_folder("Floor 1", Some(top.id))
        .await
        .expect("sub");
    let moved = db
        .update_device(
            dev,
            &DeviceUpdate {
                name: None,
                folder: Some(Some(sub.id)),
            },
        )
        .await
        .expect("move");
    assert_eq!(moved.folder_id, Some(sub.id));
    let p = db
        .create_profile(
            "rdp",
            "",
            false,
            &[("sessions.rdp0.server".into(), "ts1".into())],
        )
        .await
        .expect("profile");
    let before = db.load_settings_model().await.expect("model").folders[&top.id].rev;
    db.assign(
        p.id,
        ObjectRef {
            kind: ObjectKind::Folder,
            id: top.id,
        },
    )
    .await
    .expect("assign");
    db.assign(
        p.id,
        ObjectRef {
            kind: ObjectKind::Folder,
            id: top.id,
        },
    )
    .await
    .expect("assign twice is a no-op");
    let model = db.load_settings_model().await.expect("model");
    assert!(
        model.folders[&top.id].rev > before,
        "assignment stamps the folder"
    );
    assert_eq!(model.folder_profiles[&top.id], vec![p.id]);
    assert_eq!(model.profiles[&p.id].0.params.len(), 1);

    let updated = db
        .update_profile_params(
            p.id,
            &[("display.monitors".into(), "2".into())],
            &["sessions.rdp0.server".into()],
        )
        .await
        .expect("update params");
    assert_eq!(
        updated.params.keys().collect::<Vec<_>>(),
        vec!["display.monitors"]
    );
    assert!(updated.rev > p.rev);

    let listed = db
        .list_assignments(
            None,
            Some(ObjectRef {
                kind: ObjectKind::Folder,
                id: top.id,
            }),
        )
        .await
        .expect("list");
    assert_eq!(listed.len(), 1);
    db.unassign(
        p.id,
        ObjectRef {
            kind: ObjectKind::Folder,
            id: top.id,
        },
    )
    .await
    .expect("unassign");
    assert!(
        db.list_assignments(Some(p.id), None)
            .await
            .expect("list")
            .is_empty()
    );
    db.delete_profile(p.id, false)
        .await
        .expect("delete an unassigned profile");
    assert!(matches!(
        db.get_profile(p.id).await,
        Err(DbError::NotFound(_))
    ));
}

async fn failed_writes_leave_the_data_as_it_was(backend: &str) {
    let (url, _dir) = fresh_url(backend);
    let db = open(&url).await;
    let top = db.create_folder("Site", None).await.expect("folder");
    let dev = db
        .register_device(&reg("D1", "s"))
        .await
        .expect("register")
        .device_id;
    db.update_device(
        dev,
        &DeviceUpdate {
            name: None,
            folder: Some(Some(top.id)),
        },
    )
    .await
    .expect("move");

    let err = db
        .delete_folder(top.id)
        .await
        .expect_err("non-empty folder");
    assert!(err.to_string().contains("not empty"), "{err}");
    assert_eq!(db.list_folders().await.expect("list").len(), 1);

    let err = db
        .create_folder("Site", None)
        .await
        .expect_err("duplicate sibling");
    assert!(matches!(err, DbError::Conflict(_)));
    assert!(matches!(
        db.create_folder("x", Some(4242)).await,
        Err(DbError::NotFound(_))
    ));

    db.create_profile("p", "", false, &[])
        .await
        .expect("profile");
    let err = db
        .create_profile("p", "", false, &[])
        .await
        .expect_err("duplicate profile");
    assert!(matches!(err, DbError::Conflict(_)), "{err}");
    assert_eq!(db.list_profiles().await.expect("list").len(), 1);

    // A job batch naming an unknown device creates no job at all.
    let err = db
        .create_jobs(JobKind::Reboot, &[dev, 777], 0)
        .await
        .expect_err("unknown device");
    assert!(matches!(err, DbError::NotFound(_)));
    assert!(
        db.list_jobs(None, None, 100)
            .await
            .expect("jobs")
            .is_empty()
    );
    assert_eq!(db.get_device(dev).await.expect("device").next_job_at, None);
}

async fn jobs_are_handed_out_once_and_reported_by_their_device(backend: &str) {
    let (url, _dir) = fresh_url(backend);
    let db = open(&url).await;
    let a = db
        .register_device(&reg("A", "s"))
        .await
        .expect("a")
        .device_id;
    let b = db
        .register_device(&reg("B", "s"))
        .await
        .expect("b")
        .device_id;
    let now = ums_db::now_ms();
    let ids = db
        .create_jobs(JobKind::Reboot, &[a], now - 1)
        .await
        .expect("job");
    db.create_jobs(JobKind::ApplySettings, &[a], now + 3_600_000)
        .await
        .expect("later job");
    assert_eq!(
        db.get_device(a).await.expect("a").next_job_at,
        Some(now - 1)
    );
    assert_eq!(db.count_due_jobs(a, now).await.expect("due"), 1);

    let fetched = db.fetch_due_jobs(a, now).await.expect("fetch");
    assert_eq!(fetched.iter().map(|j| j.id).collect::<Vec<_>>(), ids);
    assert!(
        db.fetch_due_jobs(a, now).await.expect("again").is_empty(),
        "handed out once"
    );
    assert_eq!(
        db.get_device(a).await.expect("a").next_job_at,
        Some(now + 3_600_000)
    );

    let err = db
        .report_job_result(b, ids[0], true, "ok")
        .await
        .expect_err("other device");
    assert!(matches!(err, DbError::NotFound(_)));
    db.report_job_result(a, ids[0], false, "disk full")
        .await
        .expect("report");
    let jobs = db
        .list_jobs(Some(a), Some(JobState::Failed), 10)
        .await
        .expect("list");
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].result, "disk full");
    // The same report again, as a device retries when the answer to the first was lost: it
    // changes nothing and is not refused. A different outcome is.
    db.report_job_result(a, ids[0], false, "disk full")
        .await
        .expect("the same report again");
    assert!(matches!(
        db.report_job_result(a, ids[0], true, "").await,
        Err(DbError::Conflict(_))
    ));
}

async fn admin_accounts_and_sessions(backend: &str) {
    let (url, _dir) = fresh_url(backend);
    let db = open(&url).await;
    let admin = db
        .create_admin("admin", "hash", &["*".into()])
        .await
        .expect("admin");
    assert!(matches!(
        db.create_admin("admin", "h", &[]).await,
        Err(DbError::Conflict(_))
    ));
    assert!(
        matches!(db.delete_admin("admin").await, Err(DbError::Conflict(_))),
        "last admin stays"
    );

    let now = ums_db::now_ms();
    db.create_session("tok", admin.id, now + 60_000)
        .await
        .expect("session");
    let (who, _) = db
        .session_admin("tok", now)
        .await
        .expect("lookup")
        .expect("valid");
    assert_eq!(who.username, "admin");
    db.create_session("other", admin.id, now + 60_000)
        .await
        .expect("session");
    db.delete_session("other").await.expect("logout");
    assert!(
        db.session_admin("other", now)
            .await
            .expect("lookup")
            .is_none(),
        "a logged-out session is refused"
    );
    db.delete_session("never-issued")
        .await
        .expect("an unknown session is no error");
    assert!(
        db.session_admin("tok", now)
            .await
            .expect("lookup")
            .is_some(),
        "another session of the administrator stays"
    );
    assert!(
        db.session_admin("tok", now + 120_000)
            .await
            .expect("lookup")
            .is_none(),
        "expired"
    );
    db.set_admin_password("admin", "hash2")
        .await
        .expect("passwd");
    assert!(
        db.session_admin("tok", now)
            .await
            .expect("lookup")
            .is_none(),
        "password change ends sessions"
    );
}

async fn an_assigned_profile_is_deleted_only_with_force(backend: &str) {
    let (url, _dir) = fresh_url(backend);
    let db = open(&url).await;
    let dev = db
        .register_device(&reg("D1", "s"))
        .await
        .expect("register")
        .device_id;
    let berlin = db.create_folder("Berlin", None).await.expect("folder");
    let p = db
        .create_profile(
            "rdp-base",
            "",
            false,
            &[("display.monitors".into(), "2".into())],
        )
        .await
        .expect("profile");
    let directory = db
        .create_directory(&ums_db::swp::DirectoryInput {
            name: "corp".into(),
            domain: "corp.example.org".into(),
            urls: vec!["ldaps://dc1.corp.example.org".into()],
            ..Default::default()
        })
        .await
        .expect("directory");
    for target in [
        ObjectRef {
            kind: ObjectKind::Device,
            id: dev,
        },
        ObjectRef {
            kind: ObjectKind::Folder,
            id: berlin.id,
        },
    ] {
        db.assign(p.id, target).await.expect("assign");
    }
    db.assign_principal(
        p.id,
        directory.id,
        ums_db::swp::PrincipalKind::User,
        "alice",
    )
    .await
    .expect("assign to a user");

    let err = db
        .delete_profile(p.id, false)
        .await
        .expect_err("an assigned profile is refused");
    let msg = err.to_string();
    assert!(matches!(err, DbError::Conflict(_)), "{msg}");
    for place in [
        format!("device {dev}"),
        format!("folder {} \"Berlin\"", berlin.id),
        "user alice (directory corp)".to_owned(),
    ] {
        assert!(msg.contains(&place), "{place} missing: {msg}");
    }
    assert!(
        db.get_profile(p.id).await.is_ok(),
        "the refusal changed nothing"
    );
    assert_eq!(
        db.list_assignments(Some(p.id), None)
            .await
            .expect("list")
            .len(),
        2
    );

    db.delete_profile(p.id, true)
        .await
        .expect("force deletes it anyway");
    assert!(matches!(
        db.get_profile(p.id).await,
        Err(DbError::NotFound(_))
    ));
    assert!(
        db.list_assignments(Some(p.id), None)
            .await
            .expect("list")
            .is_empty()
    );
    assert!(
        db.list_principal_assignments(Some(p.id))
            .await
            .expect("list")
            .is_empty()
    );
}
