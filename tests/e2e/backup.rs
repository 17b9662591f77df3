//! `ums-server backup` and `ums-server restore` as an administrator runs them: a server on the
//! embedded database with devices, folders, profiles assigned to folders and to a device, and an
//! uploaded file is backed up; the archive is restored into a fresh data directory and a fresh
//! PostgreSQL database (the way from a single node to an HA network's database), a server
//! started on it serves the same data, and the device checks in there with its old secret.
//! Corrupt and truncated archives, an archive of another schema version and a target that holds
//! data are refused, the target left as it was.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use sha2::Digest;
use ums_testkit::bin_path;

use crate::harness::{Server, text};

/// `ums-server ARGS` on the data directory `data` (and `database_url`, else the embedded one).
fn ums_server(data: &Path, database_url: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = Command::new(bin_path("ums-server"));
    cmd.args(args)
        .env("UMS_DATA_DIR", data)
        .env("UMS_LOG__LEVEL", "warn")
        .env_remove("UMS_DATABASE_URL")
        .env_remove("UMS_CONFIG")
        .stdin(Stdio::null());
    if let Some(url) = database_url {
        cmd.env("UMS_DATABASE_URL", url);
    }
    cmd.output().expect("run ums-server")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The schema and row count a database holds, to show a refused restore left it alone.
async fn database_state(url: &str) -> (Option<String>, usize) {
    let db = ums_db::Db::connect(url).await.expect("connect");
    let version = db.schema_version().await.expect("version");
    let rows = match version {
        Some(_) => db
            .data_row_counts()
            .await
            .expect("counts")
            .values()
            .sum::<u64>() as usize,
        None => 0,
    };
    db.close().await.expect("close");
    (version.map(|v| v.to_string()), rows)
}

/// Devices as the admin API lists them, without `online`, which depends on the clock.
fn devices(ctl: &crate::harness::Umsctl) -> Vec<serde_json::Value> {
    let mut list = ctl.json(&["devices", "list"])["devices"]
        .as_array()
        .expect("devices")
        .clone();
    for d in &mut list {
        d.as_object_mut().expect("device").remove("online");
    }
    list
}

/// Files as the admin API lists them, without the replicas (which name the servers).
fn files(ctl: &crate::harness::Umsctl) -> Vec<serde_json::Value> {
    let mut list = ctl.json(&["files", "list"])["files"]
        .as_array()
        .expect("files")
        .clone();
    for f in &mut list {
        f.as_object_mut().expect("file").remove("replicas");
    }
    list
}

fn settings_of(s: &ums_proto::device::v1::GetSettingsResponse) -> Vec<(String, String)> {
    let mut v: Vec<_> = s
        .settings
        .iter()
        .map(|s| (s.key.clone(), s.value.clone()))
        .collect();
    v.sort();
    v
}

fn copy_with(archive: &Path, to: PathBuf, change: impl FnOnce(&mut Vec<u8>)) -> PathBuf {
    let mut bytes = std::fs::read(archive).expect("read archive");
    change(&mut bytes);
    std::fs::write(&to, bytes).expect("write copy");
    to
}

#[tokio::test]
async fn a_backup_restores_into_a_fresh_data_directory_and_database() {
    let a = Server::start(None);
    let a_data = a.data.path().join("data");
    let ctl = a.umsctl();
    let password = a.admin_password();

    // Devices, folders, profiles on folders and on a device, and a file.
    let mut dev = a.device().await;
    let reg = dev
        .register("00:11:22:33:44:55", "reception")
        .await
        .expect("register");
    let mut other = a.device().await;
    other
        .register("00:11:22:33:44:66", "kiosk")
        .await
        .expect("register");
    let site = ctl.json(&["folders", "create", "Berlin"])["id"]
        .as_i64()
        .expect("folder id");
    let floor = ctl.json(&[
        "folders",
        "create",
        "Floor 1",
        "--parent",
        &site.to_string(),
    ])["id"]
        .as_i64()
        .expect("folder id");
    let base = ctl.json(&[
        "profiles",
        "create",
        "rdp-base",
        "sessions.rdp0.server=ts1.example.com",
        "display.monitors=2",
    ])["id"]
        .as_i64()
        .expect("profile id");
    let near = ctl.json(&["profiles", "create", "floor", "display.monitors=3"])["id"]
        .as_i64()
        .expect("profile id");
    let own = ctl.json(&["profiles", "create", "reception", "system.language=de"])["id"]
        .as_i64()
        .expect("profile id");
    let device_id = reg.device_id.to_string();
    ctl.ok(&["assign", &base.to_string(), "--folder", &site.to_string()]);
    ctl.ok(&["assign", &near.to_string(), "--folder", &floor.to_string()]);
    ctl.ok(&["assign", &own.to_string(), "--device", &device_id]);
    ctl.ok(&[
        "devices",
        "move",
        &device_id,
        "--folder",
        &floor.to_string(),
    ]);
    let mut content = vec![0u8; 700 * 1024 + 3];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut content);
    let sha = hex::encode(sha2::Sha256::digest(&content));
    let local = a.data.path().join("firmware.bin");
    std::fs::write(&local, &content).expect("write file");
    let file_id = ctl.json(&[
        "files",
        "upload",
        local.to_str().expect("path"),
        "--as",
        "firmware/12.01.bin",
    ])["id"]
        .as_i64()
        .expect("file id");
    let checked = dev.check_in("idle", 0).await.expect("check in");
    let settings = dev.get_settings().await.expect("settings");
    assert!(
        settings_of(&settings).contains(&("display.monitors".into(), "3".into())),
        "{settings:?}"
    );

    let before_devices = devices(&ctl);
    let before_folders = ctl.json(&["folders", "list"]);
    let before_profiles = ctl.json(&["profiles", "list"]);
    let before_assignments = ctl.json(&["assignments"]);
    let before_files = files(&ctl);
    let before_explain = ctl.json(&["settings", "explain", &device_id]);

    // The default archive: under the data directory, named by time and schema, mode 0600,
    // taken while the server runs.
    let schema = ums_migrations::latest().to_string();
    let out = ums_server(&a_data, None, &["backup"]);
    assert!(out.status.success(), "backup failed: {}", text(&out));
    let backups: Vec<PathBuf> = std::fs::read_dir(a_data.join("backups"))
        .expect("backups dir")
        .map(|e| e.expect("entry").path())
        .collect();
    assert_eq!(backups.len(), 1, "{backups:?}");
    let name = backups[0]
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    assert!(
        name.starts_with("ums-") && name.ends_with(&format!("-schema{schema}.umsbak")),
        "{name}"
    );
    let summary = stdout(&out);
    assert!(summary.contains(&name), "{summary}");
    assert!(summary.contains("1 files (716803 bytes)"), "{summary}");
    assert!(
        summary
            .lines()
            .any(|l| l.split_whitespace().eq(["devices", "2"])),
        "{summary}"
    );
    let mode = std::fs::metadata(&backups[0])
        .expect("stat")
        .permissions()
        .mode();
    assert_eq!(
        mode & 0o777,
        0o600,
        "the archive holds sealed secrets and hashes"
    );

    let work = tempfile::tempdir().expect("work dir");
    let archive = work.path().join("ums.umsbak");
    let out = ums_server(
        &a_data,
        None,
        &["backup", "--output", archive.to_str().expect("path")],
    );
    assert!(out.status.success(), "backup failed: {}", text(&out));
    let again = ums_server(
        &a_data,
        None,
        &["backup", "--output", archive.to_str().expect("path")],
    );
    assert!(!again.status.success(), "an archive is never overwritten");
    assert!(stderr(&again).contains("exists"), "{}", text(&again));
    drop(ctl);
    drop(a.child);

    // A fresh data directory with the network token (it opens the sealed CA key), and a fresh
    // PostgreSQL database.
    let url = ums_testkit::shared_database("e2e_backup").expect("postgres");
    let b = tempfile::tempdir().expect("data dir");
    let b_data = b.path().join("data");
    std::fs::create_dir_all(&b_data).expect("data dir");
    std::fs::copy(a_data.join("network-token"), b_data.join("network-token")).expect("token");
    let blob = b_data.join("files").join(&sha[..2]).join(&sha);

    // A corrupt archive (one byte of the file changed) and a truncated one are refused before
    // anything is written.
    let len = std::fs::metadata(&archive).expect("stat").len() as usize;
    let corrupt = copy_with(&archive, work.path().join("corrupt.umsbak"), |b| {
        b[len - 1000] ^= 0x55;
    });
    let out = ums_server(
        &b_data,
        Some(&url),
        &["restore", corrupt.to_str().expect("path")],
    );
    assert!(
        !out.status.success(),
        "a corrupt archive restored: {}",
        text(&out)
    );
    let err = stderr(&out);
    assert!(
        err.contains("is corrupt") && err.contains(&format!("files/{sha}")),
        "{err}"
    );
    let truncated = copy_with(&archive, work.path().join("cut.umsbak"), |b| {
        b.truncate(len / 2);
    });
    let out = ums_server(
        &b_data,
        Some(&url),
        &["restore", truncated.to_str().expect("path")],
    );
    assert!(
        !out.status.success(),
        "a truncated archive restored: {}",
        text(&out)
    );
    assert!(stderr(&out).contains("is truncated"), "{}", text(&out));
    assert_eq!(
        database_state(&url).await,
        (None, 0),
        "the target is untouched"
    );
    assert!(!blob.exists(), "no file was written");

    // An archive of another schema version: a database a newer server migrated.
    let newer = tempfile::tempdir().expect("dir");
    let newer_version = ums_migrations::SchemaVersion::new(
        ums_migrations::latest().major,
        ums_migrations::latest().minor + 1,
    );
    {
        let (db, _) = ums_db::Db::open(&ums_db::sqlite_url(newer.path()))
            .await
            .expect("open");
        db.debug_set_schema_version(newer_version)
            .await
            .expect("set version");
        db.close().await.expect("close");
    }
    let newer_archive = work.path().join("newer.umsbak");
    let out = ums_server(
        newer.path(),
        None,
        &["backup", "--output", newer_archive.to_str().expect("path")],
    );
    assert!(
        out.status.success(),
        "backup of a newer schema: {}",
        text(&out)
    );
    let out = ums_server(
        &b_data,
        Some(&url),
        &["restore", newer_archive.to_str().expect("path")],
    );
    assert!(
        !out.status.success(),
        "another schema restored: {}",
        text(&out)
    );
    let err = stderr(&out);
    assert!(
        err.contains(&format!("schema version {newer_version}"))
            && err.contains(&format!("schema version {schema}")),
        "{err}"
    );
    assert_eq!(
        database_state(&url).await,
        (None, 0),
        "the target is untouched"
    );

    // The restore.
    let out = ums_server(
        &b_data,
        Some(&url),
        &["restore", archive.to_str().expect("path")],
    );
    assert!(out.status.success(), "restore failed: {}", text(&out));
    let summary = stdout(&out);
    assert!(summary.contains("1 files (716803 bytes)"), "{summary}");
    assert!(
        !summary.contains("put the token"),
        "the token is in place: {summary}"
    );
    let restored = std::fs::read(&blob).expect("the file is in the store");
    assert_eq!(hex::encode(sha2::Sha256::digest(&restored)), sha);
    let (_, rows) = database_state(&url).await;

    // Restoring onto data is refused without --force, and changes nothing.
    let out = ums_server(
        &b_data,
        Some(&url),
        &["restore", archive.to_str().expect("path")],
    );
    assert!(
        !out.status.success(),
        "a second restore without --force: {}",
        text(&out)
    );
    let err = stderr(&out);
    assert!(
        err.contains("not empty") && err.contains("--force"),
        "{err}"
    );
    assert!(err.contains("2 devices"), "{err}");
    assert_eq!(database_state(&url).await, (Some(schema.clone()), rows));
    let out = ums_server(
        &b_data,
        Some(&url),
        &["restore", archive.to_str().expect("path"), "--force"],
    );
    assert!(
        out.status.success(),
        "restore --force failed: {}",
        text(&out)
    );
    assert!(stdout(&out).contains("its data replaced"), "{}", text(&out));
    assert_eq!(database_state(&url).await, (Some(schema.clone()), rows));

    // A server on the restored data serves the same devices, folders, profiles, assignments,
    // settings and file; the old administrator's password still works.
    let server = Server::start_in(b, Some(&url));
    let ctl = server.umsctl_with_password(&password);
    assert_eq!(devices(&ctl), before_devices);
    assert_eq!(ctl.json(&["folders", "list"]), before_folders);
    assert_eq!(ctl.json(&["profiles", "list"]), before_profiles);
    assert_eq!(ctl.json(&["assignments"]), before_assignments);
    assert_eq!(files(&ctl), before_files);
    assert_eq!(
        ctl.json(&["settings", "explain", &device_id]),
        before_explain
    );

    // The device checks in with its old secret and gets the same settings and file.
    let mut dev_b = ums_devsim::DeviceClient::connect(&server.device_url, &server.ca_pem())
        .await
        .expect("connect");
    dev_b.set_secret(dev.secret().to_vec());
    dev_b.set_device_id(Some(reg.device_id));
    let again = dev_b
        .check_in("idle", checked.settings_revision)
        .await
        .expect("check in with the old secret");
    assert!(!again.settings_changed, "the same revision: {again:?}");
    let settings_b = dev_b.get_settings().await.expect("settings");
    assert_eq!(settings_b.revision, settings.revision);
    assert_eq!(settings_of(&settings_b), settings_of(&settings));
    let mut got = Vec::new();
    dev_b
        .download_file(file_id, &mut got, None)
        .await
        .expect("download");
    assert_eq!(hex::encode(sha2::Sha256::digest(&got)), sha);

    let mut impostor = ums_devsim::DeviceClient::connect(&server.device_url, &server.ca_pem())
        .await
        .expect("connect");
    impostor.set_device_id(Some(reg.device_id));
    assert!(
        impostor.check_in("idle", 0).await.is_err(),
        "another secret is refused"
    );
}

/// `ums-server ARGS` on the embedded database of `data` as the next release (a test-only
/// expand step and contract step).
fn ums_server_next(data: &Path, args: &[&str]) -> Output {
    Command::new(bin_path("ums-server"))
        .args(args)
        .env("UMS_DATA_DIR", data)
        .env("UMS_LOG__LEVEL", "warn")
        .env("UMS_TEST_SCHEMA_NEXT", "minor")
        .env_remove("UMS_DATABASE_URL")
        .env_remove("UMS_CONFIG")
        .stdin(Stdio::null())
        .output()
        .expect("run ums-server")
}

#[tokio::test]
async fn a_migration_of_a_database_that_holds_data_backs_it_up_first() {
    let released = ums_migrations::latest();
    let contracted = ums_migrations::SchemaVersion::new(released.major, released.minor + 2);
    // The first start creates the schema of a fresh database: nothing to back up.
    let Server {
        mut child, data, ..
    } = {
        let a = Server::start(None);
        let mut dev = a.device().await;
        dev.register("00:11:22:33:44:77", "lobby")
            .await
            .expect("register");
        a
    };
    child.stop();
    let data = data.path().join("data");
    let backups = data.join("backups");
    assert!(!backups.exists(), "a fresh database was backed up");
    let url = ums_db::sqlite_url(&data);
    assert_eq!(database_state(&url).await.0, Some(released.to_string()));

    // The backup cannot be written (its directory is a file): the migration is refused,
    // saying why and how to go on, and the schema stays as it was.
    std::fs::write(&backups, b"not a directory").expect("write");
    let out = ums_server_next(&data, &["migrate"]);
    let err = stderr(&out);
    assert!(!out.status.success(), "{}", stdout(&out));
    assert!(
        err.contains(&format!(
            "the backup before migrating schema {released} -> {contracted} failed"
        )) && err.contains(&backups.display().to_string())
            && err.contains("backup_before_migrate = false"),
        "{err}"
    );
    assert_eq!(database_state(&url).await.0, Some(released.to_string()));

    // With the directory back, the migration writes the backup first, then migrates.
    std::fs::remove_file(&backups).expect("remove");
    let out = ums_server_next(&data, &["migrate"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains(&format!("migrated the schema to {contracted}")),
        "{}",
        stdout(&out)
    );
    let archives = || -> Vec<PathBuf> {
        let mut list: Vec<PathBuf> = std::fs::read_dir(&backups)
            .expect("backups")
            .map(|e| e.expect("entry").path())
            .collect();
        list.sort();
        list
    };
    let list = archives();
    assert_eq!(list.len(), 1, "{list:?}");
    let archive = &list[0];
    let name = archive.file_name().expect("name").to_string_lossy();
    assert!(
        name.starts_with("ums-")
            && name.ends_with(&format!("-schema{released}-before-{contracted}.umsbak")),
        "{name}"
    );
    let mode = std::fs::metadata(archive)
        .expect("archive")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    assert_eq!(database_state(&url).await.0, Some(contracted.to_string()));

    // The update log records the backup, where `umsctl update plan` finds the last one.
    let db = ums_db::Db::connect(&url).await.expect("connect");
    let log = db.update_log(20).await.expect("log");
    db.close().await.expect("close");
    assert!(
        log.iter().any(|r| r.step == "backup"
            && r.outcome == "ok"
            && r.detail.contains(&archive.display().to_string())),
        "{log:#?}"
    );

    // Nothing left to migrate: no backup.
    let out = ums_server_next(&data, &["migrate"]);
    assert!(stdout(&out).contains("nothing to do"), "{}", stdout(&out));
    assert_eq!(archives().len(), 1);

    // The archive is the database before the migration: the released server restores it into
    // a fresh data directory, with the device.
    let fresh = tempfile::tempdir().expect("dir");
    let out = ums_server(
        fresh.path(),
        None,
        &["restore", archive.to_str().expect("path")],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains(&format!("schema {released}")),
        "{}",
        stdout(&out)
    );
    let restored = ums_db::Db::connect(&ums_db::sqlite_url(fresh.path()))
        .await
        .expect("connect");
    assert_eq!(restored.count_devices().await.expect("devices"), 1);
    restored.close().await.expect("close");
}
