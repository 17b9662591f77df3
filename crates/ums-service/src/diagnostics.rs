//! What a process tells about itself for a support bundle: its effective configuration with
//! secrets redacted, and its recent log lines (and, for a watchdog, its children's output),
//! kept in memory in bounded rings so a bundle can be taken from a running network without
//! access to each host's journal.
//!
//! [`crate::init_logging`] tees every formatted log line into the ring named [`OWN_LOG`];
//! [`crate::config_for_main`] records the redacted configuration.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

/// The ring holding the process's own log lines.
pub const OWN_LOG: &str = "log";

/// The most bytes of lines one ring keeps; older lines are dropped first.
pub const RING_BYTES: usize = 256 * 1024;

/// The replacement of a redacted value.
pub const REDACTED: &str = "<redacted>";

/// The last lines written to one log, at most [`RING_BYTES`] of them.
#[derive(Default)]
pub struct RecentLines {
    inner: Mutex<Ring>,
}

#[derive(Default)]
struct Ring {
    lines: VecDeque<String>,
    bytes: usize,
    dropped: u64,
}

impl RecentLines {
    /// Appends one line (a trailing newline is added when missing).
    pub fn push(&self, line: &str) {
        let mut line = line.to_owned();
        if !line.ends_with('\n') {
            line.push('\n');
        }
        // A single line longer than the ring keeps its tail.
        if line.len() > RING_BYTES {
            let mut cut = line.len() - RING_BYTES;
            while !line.is_char_boundary(cut) {
                cut += 1;
            }
            line.drain(..cut);
        }
        let mut ring = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        ring.bytes += line.len();
        ring.lines.push_back(line);
        while ring.bytes > RING_BYTES {
            match ring.lines.pop_front() {
                Some(old) => {
                    ring.bytes -= old.len();
                    ring.dropped += 1;
                }
                None => break,
            }
        }
    }

    /// The lines kept, oldest first, and how many older ones were dropped.
    pub fn snapshot(&self) -> (String, u64) {
        let ring = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let mut text = String::with_capacity(ring.bytes);
        for l in &ring.lines {
            text.push_str(l);
        }
        (text, ring.dropped)
    }
}

fn rings() -> &'static Mutex<BTreeMap<String, Arc<RecentLines>>> {
    static RINGS: OnceLock<Mutex<BTreeMap<String, Arc<RecentLines>>>> = OnceLock::new();
    RINGS.get_or_init(Default::default)
}

/// The ring named `name`, created on first use: [`OWN_LOG`] for the process's own lines, a
/// child's id for a watchdog's copy of that child's output.
pub fn ring(name: &str) -> Arc<RecentLines> {
    let mut rings = rings().lock().unwrap_or_else(|e| e.into_inner());
    rings.entry(name.to_owned()).or_default().clone()
}

fn files() -> &'static Mutex<BTreeMap<String, PathBuf>> {
    static FILES: OnceLock<Mutex<BTreeMap<String, PathBuf>>> = OnceLock::new();
    FILES.get_or_init(Default::default)
}

/// Names a log file whose tail (its last [`RING_BYTES`]) [`logs`] reports under `name`: a
/// watchdog's child writing to a file instead of through the watchdog.
pub fn register_file(name: &str, path: &Path) {
    let mut files = files().lock().unwrap_or_else(|e| e.into_inner());
    files.insert(name.to_owned(), path.to_owned());
}

/// The last `max` bytes of the file at `path`, from the start of a line; `dropped` is 1 when
/// older text was left out.
fn file_tail(path: &Path, max: usize) -> std::io::Result<(String, u64)> {
    use std::io::{Read as _, Seek as _, SeekFrom};
    let mut f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    let start = len.saturating_sub(max as u64);
    f.seek(SeekFrom::Start(start))?;
    let mut buf = Vec::with_capacity(max);
    f.take(max as u64).read_to_end(&mut buf)?;
    let mut text = String::from_utf8_lossy(&buf).into_owned();
    if start > 0 {
        let cut = text.find('\n').map_or(text.len(), |i| i + 1);
        text.drain(..cut);
    }
    Ok((text, u64::from(start > 0)))
}

/// Every ring and registered file: its name, its text and the number of lines dropped from it
/// (for a file: 1 when only its tail is given). Sorted by name.
pub fn logs() -> Vec<(String, String, u64)> {
    let rings: Vec<(String, Arc<RecentLines>)> = rings()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let files: Vec<(String, PathBuf)> = files()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut out: Vec<(String, String, u64)> = rings
        .into_iter()
        .map(|(name, r)| {
            let (text, dropped) = r.snapshot();
            (name, text, dropped)
        })
        .collect();
    for (name, path) in files {
        let (text, dropped) = file_tail(&path, RING_BYTES)
            .unwrap_or_else(|e| (format!("(could not read {}: {e})\n", path.display()), 0));
        out.push((name, text, dropped));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

static CONFIG: OnceLock<String> = OnceLock::new();

/// Records the effective configuration (TOML, already redacted by the service's
/// `ServiceConfig::redacted`); [`redact_toml`] runs over it once more, so a secret a service
/// forgot to redact still does not leave the process. The first call wins.
pub fn set_config(toml_text: &str) {
    let _ = CONFIG.set(redact_toml(toml_text));
}

/// The configuration recorded by [`set_config`] (empty before).
pub fn config() -> &'static str {
    CONFIG.get().map_or("", String::as_str)
}

/// Whether a configuration key names a secret value (not a file that holds one).
fn secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    let names_secret = ["password", "secret", "token", "private_key", "passphrase"]
        .iter()
        .any(|s| key.contains(s));
    let names_path = ["_file", "_path", "_dir"].iter().any(|s| key.ends_with(s));
    names_secret && !names_path
}

/// Replaces every string value under a key that names a secret with [`REDACTED`], and the
/// password of every URL with `userinfo` (`postgres://user:secret@host`). Text that is not TOML
/// is returned with URL passwords redacted only.
pub fn redact_toml(text: &str) -> String {
    match text.parse::<toml::Table>() {
        Ok(mut table) => {
            redact_table(&mut table);
            toml::to_string_pretty(&table).unwrap_or_else(|_| redact_urls(text))
        }
        Err(_) => redact_urls(text),
    }
}

fn redact_table(table: &mut toml::Table) {
    for (key, value) in table.iter_mut() {
        redact_value(secret_key(key), value);
    }
}

fn redact_value(secret: bool, value: &mut toml::Value) {
    match value {
        toml::Value::String(s) if secret && !s.is_empty() => *s = REDACTED.to_owned(),
        toml::Value::String(s) => *s = redact_urls(s),
        toml::Value::Table(t) => redact_table(t),
        toml::Value::Array(a) => a.iter_mut().for_each(|v| redact_value(secret, v)),
        _ => {}
    }
}

/// `scheme://user:password@host` → `scheme://user:<redacted>@host`, for every URL in `text`.
pub fn redact_urls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        // The authority ends at the first '/', whitespace or quote; a password sits between
        // the first ':' and the last '@' in it.
        let end = tail
            .find(|c: char| c == '/' || c == '"' || c == '\'' || c.is_whitespace())
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        match (authority.find(':'), authority.rfind('@')) {
            (Some(colon), Some(at)) if colon < at => {
                out.push_str(&authority[..=colon]);
                out.push_str(REDACTED);
                out.push_str(&authority[at..]);
            }
            _ => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

/// The `MakeWriter` behind the log tee: every formatted event is one write of one line.
#[derive(Clone, Copy, Default)]
pub(crate) struct OwnLogWriter;

pub(crate) struct LineWriter(Arc<RecentLines>);

impl std::io::Write for LineWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.push(&String::from_utf8_lossy(buf));
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for OwnLogWriter {
    type Writer = LineWriter;

    fn make_writer(&'a self) -> Self::Writer {
        static OWN: OnceLock<Arc<RecentLines>> = OnceLock::new();
        LineWriter(OWN.get_or_init(|| ring(OWN_LOG)).clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ring_keeps_the_newest_lines_within_its_size() {
        let r = RecentLines::default();
        let line = "x".repeat(1023);
        for _ in 0..(RING_BYTES / 1024 + 10) {
            r.push(&line);
        }
        r.push("the last line");
        let (text, dropped) = r.snapshot();
        assert!(text.len() <= RING_BYTES, "{}", text.len());
        assert!(text.ends_with("the last line\n"));
        assert_eq!(dropped, 11);
    }

    #[test]
    fn secrets_and_url_passwords_are_redacted_but_paths_to_them_kept() {
        let text = r#"
database_url = "postgres://ums:s3cret@db.example:5432/ums"
[network]
token_file = "/etc/ums/network.token"
token = "UMS1abc::deadbeef"
[ldap]
bind_password = "hunter2"
servers = ["ldaps://reader:pw@dc1", "ldaps://dc2"]
"#;
        let out = redact_toml(text);
        for secret in ["s3cret", "deadbeef", "hunter2", ":pw@"] {
            assert!(!out.contains(secret), "{secret} left in:\n{out}");
        }
        assert!(out.contains("/etc/ums/network.token"), "{out}");
        assert!(
            out.contains("postgres://ums:<redacted>@db.example:5432/ums"),
            "{out}"
        );
        assert!(out.contains("ldaps://dc2"), "{out}");
    }

    #[test]
    fn a_log_file_is_reported_by_its_tail_from_a_line_start() {
        let dir = std::env::temp_dir().join(format!("ums-diag-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("test file");
        let path = dir.join("child.log");
        let mut text = String::new();
        for i in 0..10 {
            text.push_str(&format!("line {i}\n"));
        }
        std::fs::write(&path, &text).expect("test file");
        let (tail, dropped) = file_tail(&path, 20).expect("test file");
        assert_eq!((tail.as_str(), dropped), ("line 8\nline 9\n", 1));
        assert_eq!(file_tail(&path, 4096).expect("test file"), (text, 0));
        std::fs::remove_dir_all(&dir).expect("test file");
    }

    #[test]
    fn url_redaction_leaves_text_without_credentials_alone() {
        let s = "see https://example.org/a:b@c and postgres://u@h/db";
        assert_eq!(redact_urls(s), s);
    }
}
