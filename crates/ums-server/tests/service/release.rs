//! Software releases through the admin API: a release is stored only when it is signed by a
//! key the server pinned, not expired, newer than the network's, and its files are in the file
//! store exactly as signed.

use sha2::Digest as _;
use tonic::Code;
use ums_proto::admin::v1 as pb;
use ums_release::{FORMAT, FileEntry, Manifest, SignedManifest, SigningKey};

use crate::harness::{self, TestServer, set};

const DAY: i64 = 86_400_000;

fn entry(name: &str, role: &str, content: &[u8]) -> FileEntry {
    FileEntry {
        name: name.into(),
        roles: vec![role.into()],
        size: content.len() as u64,
        sha256: hex::encode(sha2::Sha256::digest(content)),
        mode: 0o755,
    }
}

const SERVER_BIN: &[u8] = b"the server of revision 3";
const BROKER_BIN: &[u8] = b"the broker of revision 3";

fn manifest(revision: u64) -> Manifest {
    let now = ums_db::now_ms();
    Manifest {
        format: FORMAT,
        version: format!("0.{revision}.0"),
        revision,
        created_at_ms: now - DAY,
        expires_at_ms: now + 30 * DAY,
        files: vec![
            entry("bin/ums-broker", "broker", BROKER_BIN),
            entry("bin/ums-server", "server", SERVER_BIN),
        ],
    }
}

fn json(signed: &SignedManifest) -> String {
    signed.to_json()
}

async fn upload(
    admin: &mut harness::Admin,
    manifest: &str,
    check_only: bool,
) -> Result<pb::UploadReleaseResponse, tonic::Status> {
    admin
        .upload_release(pb::UploadReleaseRequest {
            manifest: manifest.to_owned(),
            check_only,
        })
        .await
        .map(|r| r.into_inner())
}

async fn upload_file(admin: &mut harness::Admin, path: &str, content: &[u8]) {
    let chunk = pb::UploadFileChunk {
        path: path.into(),
        size: content.len() as u64,
        sha256: hex::encode(sha2::Sha256::digest(content)),
        data: content.to_vec(),
    };
    admin
        .upload_file(tokio_stream::iter(vec![chunk]))
        .await
        .expect("upload file");
}

/// A fresh release key and a server that pins its public half.
async fn pinned_server() -> (SigningKey, TestServer) {
    let key = SigningKey::generate().expect("key");
    let public = key.public_key().to_string();
    let server = TestServer::start_with(None, |cfg| {
        set(
            cfg,
            "release",
            serde_json::json!({ "public_keys": [public] }),
        )
    })
    .await;
    (key, server)
}

fn refused(r: Result<pb::UploadReleaseResponse, tonic::Status>, code: Code, text: &str) {
    match r {
        Ok(r) => panic!("stored a release that should be refused ({text}): {r:?}"),
        Err(s) => {
            assert_eq!(s.code(), code, "{}", s.message());
            assert!(
                s.message().contains(text),
                "`{}` lacks `{text}`",
                s.message()
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_complete_release_signed_by_a_pinned_key_is_stored() {
    let (key, server) = pinned_server().await;
    let mut admin = server.admin();

    let status = admin
        .release_status(pb::ReleaseStatusRequest {})
        .await
        .expect("status")
        .into_inner();
    assert_eq!(status.revision, 0);

    let good = json(&ums_release::sign(manifest(3), &key).expect("sign"));
    let check = upload(&mut admin, &good, true).await.expect("check");
    let missing: Vec<_> = check
        .missing
        .iter()
        .map(|f| f.store_path.as_str())
        .collect();
    assert_eq!(
        missing,
        ["releases/3/bin/ums-broker", "releases/3/bin/ums-server"]
    );
    assert!(!check.stored);

    // Files missing: refused, nothing stored.
    refused(
        upload(&mut admin, &good, false).await,
        Code::FailedPrecondition,
        "not in the file store",
    );
    // A tampered file (its content is not what was signed) does not count as uploaded.
    upload_file(&mut admin, "releases/3/bin/ums-server", b"tampered server").await;
    upload_file(&mut admin, "releases/3/bin/ums-broker", BROKER_BIN).await;
    let check = upload(&mut admin, &good, true).await.expect("check");
    let missing: Vec<_> = check.missing.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(missing, ["bin/ums-server"]);
    refused(
        upload(&mut admin, &good, false).await,
        Code::FailedPrecondition,
        "releases/3/bin/ums-server",
    );

    // Signed by another key, unsigned, changed after signing, expired: refused.
    let other = SigningKey::generate().expect("key");
    let by_other = json(&ums_release::sign(manifest(3), &other).expect("sign"));
    refused(
        upload(&mut admin, &by_other, true).await,
        Code::InvalidArgument,
        "none of the pinned release keys",
    );
    let mut unsigned = ums_release::sign(manifest(3), &key).expect("sign");
    unsigned.signatures.clear();
    refused(
        upload(&mut admin, &json(&unsigned), false).await,
        Code::InvalidArgument,
        "unsigned",
    );
    let mut changed = ums_release::sign(manifest(3), &key).expect("sign");
    changed.signed.files[1].sha256 = hex::encode(sha2::Sha256::digest(b"tampered server"));
    refused(
        upload(&mut admin, &json(&changed), false).await,
        Code::InvalidArgument,
        "changed after signing",
    );
    let mut old = manifest(3);
    old.created_at_ms -= 40 * DAY;
    old.expires_at_ms -= 40 * DAY;
    refused(
        upload(
            &mut admin,
            &json(&ums_release::sign(old, &key).expect("sign")),
            false,
        )
        .await,
        Code::FailedPrecondition,
        "expired",
    );
    refused(
        upload(&mut admin, "{\"signed\": 1}", true).await,
        Code::InvalidArgument,
        "not valid",
    );

    // The right file, then the release is stored and its revision is the network's.
    upload_file(&mut admin, "releases/3/bin/ums-server", SERVER_BIN).await;
    let stored = upload(&mut admin, &good, false).await.expect("store");
    assert!(stored.stored);
    assert_eq!(stored.revision, 3);
    let status = admin
        .release_status(pb::ReleaseStatusRequest {})
        .await
        .expect("status")
        .into_inner();
    assert_eq!(status.revision, 3);
    assert_eq!(status.version, "0.3.0");
    assert_eq!(status.releases.len(), 1);
    assert_eq!(status.releases[0].files, 2);
    assert_eq!(
        status.releases[0].size,
        (SERVER_BIN.len() + BROKER_BIN.len()) as u64
    );

    // The same revision again, or an older one: refused.
    refused(
        upload(&mut admin, &good, false).await,
        Code::FailedPrecondition,
        "already released",
    );
    let older = json(&ums_release::sign(manifest(2), &key).expect("sign"));
    refused(
        upload(&mut admin, &older, true).await,
        Code::FailedPrecondition,
        "older than revision 3",
    );

    // The audit log names the release.
    let audit = admin
        .list_audit(pb::ListAuditRequest {
            action: "UploadRelease".into(),
            ..Default::default()
        })
        .await
        .expect("audit")
        .into_inner();
    assert!(
        audit.entries.iter().any(|e| e.target == "release 3"),
        "{:?}",
        audit.entries
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_without_a_pinned_key_stores_no_release() {
    let server = TestServer::start(None).await;
    let mut admin = server.admin();
    let key = SigningKey::generate().expect("key");
    let signed = json(&ums_release::sign(manifest(1), &key).expect("sign"));
    refused(
        upload(&mut admin, &signed, true).await,
        Code::FailedPrecondition,
        "[release] public_keys",
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_pinned_key_stops_the_start_with_its_name() {
    let err = TestServer::try_start_with(None, |cfg| {
        set(
            cfg,
            "release",
            serde_json::json!({ "public_keys": ["ssh-ed25519 AAAA"] }),
        )
    })
    .await
    .err()
    .expect("a bad key refuses the start");
    let text = format!("{err:#}");
    assert!(text.contains("release.public_keys"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn administrators_pause_resume_configure_and_roll_back_the_rollout_with_clear_refusals() {
    let (key, server) = pinned_server().await;
    let mut admin = server.admin();
    let rollout = |s: pb::ReleaseStatusResponse| s.rollout.expect("rollout");
    let status = admin
        .release_status(pb::ReleaseStatusRequest {})
        .await
        .expect("status")
        .into_inner();
    let r = rollout(status);
    assert_eq!((r.paused, r.concurrency, r.rollback_to), (false, 1, 0));

    // Nothing to roll back yet: refused with what to do, nothing changed.
    let err = admin
        .rollback_release(pb::RollbackReleaseRequest {})
        .await
        .expect_err("no release");
    assert_eq!(err.code(), Code::FailedPrecondition, "{}", err.message());
    assert!(
        err.message().contains("nothing to roll back"),
        "{}",
        err.message()
    );

    for bad in [0, 101] {
        let err = admin
            .configure_release(pb::ConfigureReleaseRequest { concurrency: bad })
            .await
            .expect_err("refused");
        assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
        assert!(
            err.message().contains("concurrency must be 1 to 100"),
            "{}",
            err.message()
        );
    }
    let r = admin
        .configure_release(pb::ConfigureReleaseRequest { concurrency: 2 })
        .await
        .expect("configure")
        .into_inner();
    assert_eq!(r.concurrency, 2);

    let r = admin
        .pause_release(pb::PauseReleaseRequest {})
        .await
        .expect("pause")
        .into_inner();
    assert!(r.paused);
    assert_eq!(r.paused_by, "admin");
    let status = admin
        .release_status(pb::ReleaseStatusRequest {})
        .await
        .expect("status")
        .into_inner();
    let r = rollout(status);
    assert!(r.paused && r.concurrency == 2, "{r:?}");
    let r = admin
        .resume_release(pb::ResumeReleaseRequest {})
        .await
        .expect("resume")
        .into_inner();
    assert!(!r.paused && r.paused_by.is_empty(), "{r:?}");

    // A stored release that no node installed before it: nothing older to roll back to.
    upload_file(&mut admin, "releases/3/bin/ums-server", SERVER_BIN).await;
    upload_file(&mut admin, "releases/3/bin/ums-broker", BROKER_BIN).await;
    let good = json(&ums_release::sign(manifest(3), &key).expect("sign"));
    upload(&mut admin, &good, false).await.expect("store");
    let err = admin
        .rollback_release(pb::RollbackReleaseRequest {})
        .await
        .expect_err("nothing older");
    assert_eq!(err.code(), Code::FailedPrecondition, "{}", err.message());
    assert!(
        err.message()
            .contains("no release older than revision 3 was installed by a node"),
        "{}",
        err.message()
    );
    let status = admin
        .release_status(pb::ReleaseStatusRequest {})
        .await
        .expect("status")
        .into_inner();
    assert_eq!((status.revision, status.newest_revision), (3, 3));
    assert!(!status.rolling_back);

    // Every change is an administrator's in the audit log; the refused ones are not.
    let audit = admin
        .list_audit(pb::ListAuditRequest::default())
        .await
        .expect("audit")
        .into_inner();
    let actions: Vec<&str> = audit.entries.iter().map(|e| e.action.as_str()).collect();
    for a in ["PauseRelease", "ResumeRelease", "ConfigureRelease"] {
        assert_eq!(
            actions.iter().filter(|x| **x == a).count(),
            1,
            "{a}: {actions:?}"
        );
    }
    assert!(!actions.contains(&"RollbackRelease"), "{actions:?}");
    server.stop().await;
}
