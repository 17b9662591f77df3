//! Update mode's local copy and journal: check-ins and job results a server took while it
//! served from its copy reach the shared database, a replay cut off and repeated changes nothing
//! twice, and a newer check-in the shared database got meanwhile is not overwritten.

use ums_db::devices::CheckIn;
use ums_db::update_mode::LocalCopy;
use ums_db::{Db, DbError, RunOptions};
use ums_domain::{JobKind, JobState};

use super::{fresh_url, open, reg};

fn check_in(device_id: i64, at: i64, applied_revision: i64) -> CheckIn {
    CheckIn {
        device_id,
        firmware: "12.1.0".into(),
        state: "update-mode".into(),
        at,
        applied_revision,
    }
}

/// What a user checks of the shared database after the update: each device's last contact,
/// applied revision, firmware; every job's state and result; and every table's row count.
async fn observed(db: &Db, ids: &[i64]) -> String {
    let mut out = String::new();
    for id in ids {
        let d = db.get_device(*id).await.expect("device");
        out.push_str(&format!(
            "device {id}: contact {:?} applied {:?} firmware {} next job {:?}\n",
            d.last_contact, d.applied_revision, d.firmware, d.next_job_at
        ));
    }
    for j in db.list_jobs(None, None, 100).await.expect("jobs") {
        out.push_str(&format!(
            "job {}: {} {:?} `{}`\n",
            j.id, j.state, j.finished_at, j.result
        ));
    }
    out.push_str(&format!(
        "{:?}",
        db.data_row_counts().await.expect("counts")
    ));
    out
}

pub async fn a_journal_replays_once_whatever_cuts_it_off(backend: &str) {
    let (url, _dir) = fresh_url(backend);
    let shared = open(&url).await;
    let a = shared
        .register_device(&reg("00:00:00:00:0a:01", &"a".repeat(64)))
        .await
        .expect("a")
        .device_id;
    let b = shared
        .register_device(&reg("00:00:00:00:0a:02", &"b".repeat(64)))
        .await
        .expect("b")
        .device_id;
    let now = ums_db::now_ms();
    let jobs = shared
        .create_jobs(JobKind::Reboot, &[a], now - 1)
        .await
        .expect("job");

    let dir = tempfile::tempdir().expect("dir");
    let copy_dir = dir.path().join("update-mode");
    let target = ums_db::schema::latest();
    let copy = LocalCopy::take(
        &shared,
        &copy_dir,
        target,
        &RunOptions::default(),
        |_, _| {},
    )
    .await
    .expect("take the copy");
    assert_eq!(copy.target, target);
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(copy_dir.join("copy.db"))
            .expect("copy file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "the copy holds credential hashes");
    }

    // Served from the copy: a known device with its own secret registers again, a stranger
    // and a wrong secret do not.
    assert_eq!(
        copy.registered(&reg("00:00:00:00:0a:01", &"a".repeat(64)))
            .await
            .expect("known"),
        Some(a)
    );
    assert_eq!(
        copy.registered(&reg("00:00:00:00:0a:09", &"c".repeat(64)))
            .await
            .expect("stranger"),
        None
    );
    assert!(matches!(
        copy.registered(&reg("00:00:00:00:0a:02", &"x".repeat(64)))
            .await,
        Err(DbError::CredentialMismatch(_))
    ));

    let row = copy
        .check_in(&check_in(a, now + 10, 7))
        .await
        .expect("check-in")
        .expect("known device");
    assert_eq!(row.next_job_at, Some(now - 1));
    copy.check_in(&check_in(b, now + 20, 8))
        .await
        .expect("check-in b");
    assert!(
        copy.check_in(&check_in(9_999, now, 1))
            .await
            .expect("unknown")
            .is_none()
    );
    let fetched = copy.db().fetch_due_jobs(a, now).await.expect("fetch");
    assert_eq!(fetched.iter().map(|j| j.id).collect::<Vec<_>>(), jobs);
    copy.report_job_result(a, jobs[0], true, "rebooted")
        .await
        .expect("result");
    assert!(matches!(
        copy.report_job_result(a, jobs[0], true, "again").await,
        Err(DbError::Conflict(_))
    ));
    assert_eq!(copy.pending().await.expect("pending"), 3);

    // Meanwhile device b reached a server on the shared database, later than its journaled
    // check-in: the replay must not take it back.
    shared
        .check_in(&CheckIn {
            firmware: "12.2.0".into(),
            ..check_in(b, now + 1_000, 9)
        })
        .await
        .expect("direct check-in");

    // Cut off after the first batch...
    let first = copy.replay(&shared, 1, Some(1)).await.expect("first batch");
    assert_eq!((first.entries, first.left), (1, 2));
    let d = shared.get_device(a).await.expect("a");
    assert_eq!(
        (d.last_contact, d.applied_revision),
        (Some(now + 10), Some(7))
    );
    // ...and cut off once more after the shared database committed but before the copy
    // recorded it: the whole journal is replayed again.
    let rest = copy.replay(&shared, 2, None).await.expect("rest");
    assert_eq!((rest.entries, rest.left), (2, 0));
    let once = observed(&shared, &[a, b]).await;
    copy.debug_forget_replayed().await.expect("forget");
    let again = copy.replay(&shared, 500, None).await.expect("again");
    assert_eq!(again.entries, 3);
    assert_eq!(observed(&shared, &[a, b]).await, once, "nothing twice");

    let d = shared.get_device(a).await.expect("a");
    assert_eq!(d.last_contact, Some(now + 10));
    assert_eq!(d.applied_revision, Some(7));
    assert_eq!(d.firmware, "12.1.0");
    assert_eq!(d.next_job_at, None, "the finished job is no longer due");
    let d = shared.get_device(b).await.expect("b");
    assert_eq!(
        d.last_contact,
        Some(now + 1_000),
        "the newer check-in stays"
    );
    assert_eq!(d.firmware, "12.2.0");
    let done = shared
        .list_jobs(Some(a), Some(JobState::Done), 10)
        .await
        .expect("jobs");
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].result, "rebooted");

    // The copy outlives a restart until it is removed.
    copy.close().await.expect("close");
    let reopened = LocalCopy::open(&copy_dir)
        .await
        .expect("open")
        .expect("a copy");
    assert_eq!(reopened.target, target);
    assert_eq!(reopened.pending().await.expect("pending"), 0);
    reopened.remove().await.expect("remove");
    assert!(!copy_dir.exists());
    assert!(LocalCopy::open(&copy_dir).await.expect("open").is_none());
}
