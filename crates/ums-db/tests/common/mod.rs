//! What every persistence suite shares: a fresh database of either backend, and the macro that
//! runs one test function on both.

use std::sync::atomic::{AtomicUsize, Ordering};

/// A fresh, empty database URL of the given backend ("sqlite" or "postgres"); the temporary
/// directory of a SQLite database lives as long as the returned guard.
pub fn fresh_url(backend: &str, prefix: &str) -> (String, Option<tempfile::TempDir>) {
    static N: AtomicUsize = AtomicUsize::new(0);
    match backend {
        "sqlite" => {
            let dir = tempfile::tempdir().expect("tempdir");
            let url = ums_db::sqlite_url(dir.path());
            (url, Some(dir))
        }
        _ => {
            let n = N.fetch_add(1, Ordering::SeqCst);
            let url = ums_testkit::shared_database(&format!("{prefix}{n}")).expect("postgres");
            (url, None)
        }
    }
}

/// Runs each named `async fn name(backend: &str)` once on SQLite and once on PostgreSQL.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite { $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name("sqlite").await } )* }
        mod postgres { $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name("postgres").await } )* }
    };
}
