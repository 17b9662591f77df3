//! Shared Workplace logins through the batch writer: a storm of logins on many devices, two
//! logins at once on one device, and a device that does not exist, each answered with the
//! session it wrote, on both backends.

use std::collections::HashMap;

use ums_db::DbError;
use ums_db::batch::Batcher;
use ums_db::devices::CheckIn;
use ums_db::swp::{DirectoryInput, MAX_TAG, SwpSession};

use super::{fresh_url, open, reg};

fn session(device_id: i64, directory_id: i64, login: &str) -> SwpSession {
    SwpSession {
        device_id,
        directory_id,
        login: login.into(),
        user_json: format!("{{\"login\":\"{login}\"}}"),
        token_hash: String::new(),
        started_at: 1_000 + device_id,
        tag: 0,
        server_id: "server-a".into(),
        refreshed_at: 0,
    }
}

pub async fn batched_logins_each_get_the_session_they_wrote(backend: &str) {
    let (url, _dir) = fresh_url(backend);
    let db = open(&url).await;
    let directory = db
        .create_directory(&DirectoryInput {
            name: "corp".into(),
            domain: "corp.example.org".into(),
            urls: vec!["ldaps://dc1.corp.example.org".into()],
            bind_password: "sealed".into(),
            ..Default::default()
        })
        .await
        .expect("directory");
    let mut devices = Vec::new();
    for i in 0..150 {
        let r = db
            .register_device(&reg(&format!("unit-{i}"), &format!("secret-{i}")))
            .await
            .expect("register");
        devices.push(r.device_id);
    }
    let batcher = Batcher::start(db.clone());

    // Every device logs a user in at once; the first ten log a second user in at the same
    // moment, so both logins of a device can meet in one batch.
    let mut tasks = Vec::new();
    for (i, &id) in devices.iter().enumerate() {
        let logins: &[&str] = if i < 10 {
            &["alice", "bob"]
        } else {
            &["carol"]
        };
        for login in logins {
            let b = batcher.clone();
            let s = session(id, directory.id, login);
            let seed = rand_seed(id, login);
            tasks.push(tokio::spawn(async move {
                (id, b.start_swp_session(s, seed).await)
            }));
        }
    }
    let missing = batcher
        .start_swp_session(session(999_999, directory.id, "dave"), 3)
        .await;
    assert!(
        matches!(missing, Err(DbError::NotFound(ref what)) if what.contains("999999")),
        "a login on a device that does not exist: {missing:?}"
    );

    let mut answers: HashMap<i64, Vec<SwpSession>> = HashMap::new();
    for t in tasks {
        let (id, answer) = t.await.expect("join");
        let s = answer.expect("login recorded");
        assert_eq!(s.device_id, id);
        assert!((1..=MAX_TAG).contains(&s.tag), "tag {} out of range", s.tag);
        answers.entry(id).or_default().push(s);
    }
    for &id in &devices {
        let mine = &answers[&id];
        let stored = db
            .swp_session(id)
            .await
            .expect("read")
            .expect("a session is stored");
        // What is stored is one of the sessions a login was answered with, whole.
        let same = mine
            .iter()
            .find(|s| s.tag == stored.tag)
            .unwrap_or_else(|| panic!("device {id}: stored tag {} was never answered", stored.tag));
        assert_eq!(
            (same.login.as_str(), same.started_at),
            (stored.login.as_str(), stored.started_at)
        );
        if mine.len() == 2 {
            assert_ne!(
                mine[0].tag, mine[1].tag,
                "device {id}: two logins, two tags"
            );
        }
        // The device's check-in tells every server the same session.
        let checked = batcher
            .check_in(CheckIn {
                device_id: id,
                firmware: "12.1.0".into(),
                state: "idle".into(),
                at: 9_000,
                applied_revision: 0,
            })
            .await
            .expect("check in")
            .expect("device exists");
        assert_eq!(checked.swp_session, Some(stored.tag), "device {id}");
    }
    assert_eq!(
        db.list_swp_sessions(None).await.expect("list").len(),
        devices.len()
    );

    // A new login always changes the tag, even from a seed that would give the same one.
    let id = devices[20];
    let before = db.swp_session(id).await.expect("read").expect("session");
    let seed = before.tag - 1; // the seed the stored tag would be made from
    let again = batcher
        .start_swp_session(session(id, directory.id, "erin"), seed)
        .await
        .expect("login again");
    assert_ne!(again.tag, before.tag);
    assert_eq!(
        db.swp_session(id)
            .await
            .expect("read")
            .expect("session")
            .login,
        "erin"
    );
}

fn rand_seed(id: i64, login: &str) -> i64 {
    id * 7_919 + login.len() as i64
}
