//! Snapshots: a database filled through the repository functions is exported, imported into a
//! fresh database (of the same backend and of the other one) and exported again, table by table
//! and row by row the same; ids continue where the source's would have.

use std::collections::BTreeMap;

use ums_db::archive::Snapshot;
use ums_db::devices::DeviceUpdate;
use ums_db::network::{NetworkCa, NewToken, ProcessRow};
use ums_db::swp::{DirectoryInput, PrincipalKind, SwpSession};
use ums_db::{Db, DbError};
use ums_domain::{JobKind, ObjectKind, ObjectRef};

use super::{fresh_url, open, reg};

/// Devices in folders (one folder inside another), profiles assigned to folders and devices,
/// jobs, files (one deleted) and their replicas, the network's CA and token, a process and a
/// lease, Shared Workplace data and an administrator with a session. One device is deleted, so
/// the id sequence is ahead of the largest id.
async fn fill(db: &Db) {
    let berlin = db.create_folder("Berlin", None).await.expect("folder");
    let floor = db
        .create_folder("Floor 1", Some(berlin.id))
        .await
        .expect("subfolder");
    let mut devices = Vec::new();
    for n in 1..=4 {
        let r = db
            .register_device(&reg(&format!("00:00:00:00:00:0{n}"), &format!("{n:064}")))
            .await
            .expect("register");
        devices.push(r.device_id);
    }
    db.delete_device(devices[3]).await.expect("delete device");
    for (dev, folder) in [(devices[0], floor.id), (devices[1], berlin.id)] {
        db.update_device(
            dev,
            &DeviceUpdate {
                name: None,
                folder: Some(Some(folder)),
            },
        )
        .await
        .expect("move");
    }
    let base = db
        .create_profile(
            "rdp-base",
            "the base",
            false,
            &[
                ("display.monitors".into(), "2".into()),
                ("sessions.rdp0.server".into(), "ts1.example.com".into()),
            ],
        )
        .await
        .expect("profile");
    let prio = db
        .create_profile(
            "urgent",
            "",
            true,
            &[("system.language".into(), "de".into())],
        )
        .await
        .expect("profile");
    db.assign(
        base.id,
        ObjectRef {
            kind: ObjectKind::Folder,
            id: berlin.id,
        },
    )
    .await
    .expect("assign folder");
    db.assign(
        prio.id,
        ObjectRef {
            kind: ObjectKind::Device,
            id: devices[0],
        },
    )
    .await
    .expect("assign device");
    db.create_jobs(JobKind::Reboot, &devices[..2], ums_db::now_ms())
        .await
        .expect("jobs");
    let kept = db
        .insert_file("firmware/a.bin", &"ab".repeat(32), 1234, "server-a")
        .await
        .expect("file");
    let gone = db
        .insert_file("firmware/old.bin", &"cd".repeat(32), 99, "server-a")
        .await
        .expect("file");
    db.delete_file(gone.id).await.expect("delete file");
    db.set_replica(kept.id, "server-a", "present", "")
        .await
        .expect("replica");
    assert!(
        db.create_network(
            &NetworkCa {
                ca_cert_pem: "-----BEGIN CERTIFICATE-----\nMII\n-----END CERTIFICATE-----\n".into(),
                ca_sha256: "ef".repeat(32),
            },
            &NewToken {
                secret_sha256: "01".repeat(32),
                ca_key_sealed: vec![7; 48],
                secret_sealed: vec![9; 40],
            },
        )
        .await
        .expect("network")
    );
    db.heartbeat(&ProcessRow {
        id: "server-a".into(),
        kind: "server".into(),
        host: "node1".into(),
        status: "running".into(),
        mode: "normal".into(),
        clock_ms: ums_db::now_ms(),
        ..Default::default()
    })
    .await
    .expect("heartbeat");
    db.acquire_lease("scheduler", "server-a", 60_000)
        .await
        .expect("lease");
    let directory = db
        .create_directory(&DirectoryInput {
            name: "corp".into(),
            domain: "corp.example.org".into(),
            urls: vec!["ldaps://dc1.corp.example.org".into()],
            bind_password: "sealed-bind-password".into(),
            ..Default::default()
        })
        .await
        .expect("directory");
    db.assign_principal(base.id, directory.id, PrincipalKind::Group, "Staff")
        .await
        .expect("assign group");
    db.set_swp_device(devices[0], Some(true), Some(true))
        .await
        .expect("licence");
    db.start_swp_session(
        &SwpSession {
            device_id: devices[0],
            directory_id: directory.id,
            login: "alice".into(),
            user_json: "{\"groups\":[\"Staff\"]}".into(),
            token_hash: "02".repeat(32),
            started_at: ums_db::now_ms(),
            tag: 0,
            server_id: "server-a".into(),
            refreshed_at: ums_db::now_ms(),
        },
        7,
    )
    .await
    .expect("session");
    let admin = db
        .create_admin(
            "admin",
            "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA",
            &["*".into()],
        )
        .await
        .expect("admin");
    db.create_session(&"03".repeat(32), admin.id, ums_db::now_ms() + 60_000)
        .await
        .expect("admin session");
}

/// Each table's rows in one order, whatever order the backend returned them in.
fn by_table(s: &Snapshot) -> BTreeMap<String, (Vec<String>, Vec<String>)> {
    s.tables
        .iter()
        .map(|t| {
            let mut rows: Vec<String> = t
                .rows
                .iter()
                .map(|r| serde_json::to_string(r).expect("json"))
                .collect();
            rows.sort();
            (t.name.clone(), (t.columns.clone(), rows))
        })
        .collect()
}

fn assert_same(a: &Snapshot, b: &Snapshot) {
    assert_eq!(a.schema_version, b.schema_version);
    let (a_tables, b_tables) = (by_table(a), by_table(b));
    assert_eq!(
        a_tables.keys().collect::<Vec<_>>(),
        b_tables.keys().collect::<Vec<_>>()
    );
    for (name, (cols, rows)) in &a_tables {
        let (b_cols, b_rows) = &b_tables[name];
        assert_eq!(cols, b_cols, "columns of {name}");
        assert_eq!(rows, b_rows, "rows of {name}");
    }
}

async fn export(db: &Db) -> Snapshot {
    db.export_snapshot(|_, _| {}).await.expect("export")
}

pub async fn a_snapshot_restores_every_row(backend: &str) {
    let (url, _dir) = fresh_url(backend);
    let source = open(&url).await;
    fill(&source).await;
    let snapshot = export(&source).await;
    let counts = snapshot.row_counts();
    for (table, n) in [
        ("devices", 3),
        ("folders", 2),
        ("profiles", 2),
        ("profile_params", 3),
        ("assignments", 2),
        ("jobs", 2),
        ("files", 2),
        ("file_replicas", 2),
        ("cluster", 1),
        ("network_tokens", 1),
        ("swp_directories", 1),
        ("swp_principals", 1),
        ("swp_assignments", 1),
        ("swp_devices", 1),
        ("swp_sessions", 1),
        ("admins", 1),
        ("admin_sessions", 1),
    ] {
        assert_eq!(counts.get(table), Some(&n), "{table} in {counts:?}");
    }
    assert!(
        snapshot.table("schema_version").is_none(),
        "the schema's own tables are not data"
    );
    let folders = snapshot.table("folders").expect("folders");
    let ids: Vec<_> = folders.column("id").expect("id").collect();
    let parents: Vec<_> = folders.column("parent_id").expect("parent").collect();
    assert!(
        parents[0].is_null() && parents[1] == ids[0],
        "parents first"
    );

    let (target_url, _target_dir) = fresh_url(backend);
    let target = open(&target_url).await;
    let mut written = Vec::new();
    target
        .import_snapshot(&snapshot, false, |t, n| written.push((t.to_owned(), n)))
        .await
        .expect("import");
    assert_eq!(
        written.len(),
        snapshot.tables.len(),
        "progress for every table"
    );
    let copy = export(&target).await;
    assert_same(&snapshot, &copy);
    assert_eq!(
        snapshot
            .tables
            .iter()
            .map(|t| (&t.name, &t.next_ids))
            .collect::<Vec<_>>(),
        copy.tables
            .iter()
            .map(|t| (&t.name, &t.next_ids))
            .collect::<Vec<_>>(),
        "every sequence continues where it was"
    );

    // What the repository reads is the same, and the next device gets the id the source would
    // give it: not the deleted device's.
    assert_eq!(
        format!(
            "{:?}",
            source
                .list_devices(None, 0, 100)
                .await
                .expect("list")
                .devices
        ),
        format!(
            "{:?}",
            target
                .list_devices(None, 0, 100)
                .await
                .expect("list")
                .devices
        )
    );
    let next_src = source
        .register_device(&reg("00:00:00:00:00:05", "s5"))
        .await
        .expect("register")
        .device_id;
    let next_dst = target
        .register_device(&reg("00:00:00:00:00:05", "s5"))
        .await
        .expect("register")
        .device_id;
    assert_eq!(next_src, next_dst);
    assert_eq!(next_dst, 5, "ids continue after the deleted device 4");
    let folder = target.create_folder("Hamburg", None).await.expect("folder");
    assert_eq!(folder.id, 3);
}

pub async fn a_snapshot_moves_between_backends(backend: &str) {
    let other = if backend == "sqlite" {
        "postgres"
    } else {
        "sqlite"
    };
    let (url, _dir) = fresh_url(backend);
    let source = open(&url).await;
    fill(&source).await;
    let snapshot = export(&source).await;

    let (there_url, _there_dir) = fresh_url(other);
    let there = open(&there_url).await;
    there
        .import_snapshot(&snapshot, false, |_, _| {})
        .await
        .expect("import into the other backend");
    let moved = export(&there).await;
    assert_eq!(moved.backend, other);
    assert_same(&snapshot, &moved);

    let (back_url, _back_dir) = fresh_url(backend);
    let back = open(&back_url).await;
    back.import_snapshot(&moved, false, |_, _| {})
        .await
        .expect("import back");
    assert_same(&snapshot, &export(&back).await);
    let id = there
        .register_device(&reg("00:00:00:00:00:05", "s5"))
        .await
        .expect("register")
        .device_id;
    assert!(id > 3, "ids continue on {other}: got {id}");
}

pub async fn an_import_is_all_or_nothing(backend: &str) {
    let (url, _dir) = fresh_url(backend);
    let source = open(&url).await;
    fill(&source).await;
    let snapshot = export(&source).await;

    // A database that holds data is refused, and keeps its data.
    let (target_url, _target_dir) = fresh_url(backend);
    let target = open(&target_url).await;
    target
        .register_device(&reg("aa:aa:aa:aa:aa:aa", "own"))
        .await
        .expect("register");
    let before = export(&target).await;
    let err = target
        .import_snapshot(&snapshot, false, |_, _| {})
        .await
        .expect_err("a database with data is refused");
    assert!(
        matches!(&err, DbError::Conflict(m) if m.contains("not empty") && m.contains("1 devices")),
        "{err}"
    );
    assert_same(&before, &export(&target).await);

    // Another schema version is refused, naming both.
    let mut other = snapshot.clone();
    other.schema_version = "9.9".into();
    let err = target
        .import_snapshot(&other, true, |_, _| {})
        .await
        .expect_err("another schema is refused");
    let msg = err.to_string();
    assert!(
        msg.contains("9.9") && msg.contains(&ums_db::latest_schema().to_string()),
        "{msg}"
    );

    // A value that does not fit, in the last table written: nothing of the import stays,
    // even when it was to replace the data.
    let mut bad = snapshot.clone();
    let last = bad.tables.last_mut().expect("tables");
    let row = vec![serde_json::json!("not a number"); last.columns.len()];
    last.rows.push(row);
    assert!(
        target.import_snapshot(&bad, true, |_, _| {}).await.is_err(),
        "a bad value fails the import"
    );
    assert_same(&before, &export(&target).await);

    // With replace the data is the snapshot's.
    target
        .import_snapshot(&snapshot, true, |_, _| {})
        .await
        .expect("replace");
    assert_same(&snapshot, &export(&target).await);
    assert!(
        target
            .list_devices(None, 0, 100)
            .await
            .expect("list")
            .devices
            .iter()
            .all(|d| d.unit_id != "aa:aa:aa:aa:aa:aa"),
        "the replaced device is gone"
    );
}
