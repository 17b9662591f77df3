//! The config file: server address, CA file, user name and session token.
//!
//! It is a flat TOML table of strings (`server`, `ca`, `username`, `token`), written with mode
//! 0600 because it holds a session token. It never holds a password.

use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use anyhow::Context as _;

/// What `umsctl` remembers between runs.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Config {
    /// Admin API address.
    pub server: Option<String>,
    /// CA file path.
    pub ca: Option<String>,
    /// Session token from the last login.
    pub token: Option<String>,
    /// Name of the administrator who logged in.
    pub username: Option<String>,
}

/// The config file path: `--config`, else `$XDG_CONFIG_HOME/umsctl/config.toml`, else
/// `~/.config/umsctl/config.toml`.
pub fn default_path() -> anyhow::Result<PathBuf> {
    let non_empty = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(dir) = non_empty("XDG_CONFIG_HOME") {
        return Ok(PathBuf::from(dir).join("umsctl").join("config.toml"));
    }
    if let Some(home) = non_empty("HOME") {
        return Ok(PathBuf::from(home)
            .join(".config")
            .join("umsctl")
            .join("config.toml"));
    }
    anyhow::bail!("cannot find the config directory: set XDG_CONFIG_HOME or HOME, or pass --config")
}

impl Config {
    /// Reads the config file; a missing file is an empty config.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(err) => {
                return Err(err).with_context(|| format!("cannot read {}", path.display()));
            }
        };
        Self::parse(&text).with_context(|| format!("invalid config file {}", path.display()))
    }

    /// Parses the config text. Unknown keys are ignored.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let mut config = Self::default();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (key, value) = line
                .split_once('=')
                .with_context(|| format!("line {}: expected key = \"value\"", n + 1))?;
            let value = parse_string(value.trim())
                .with_context(|| format!("line {}: expected a quoted string", n + 1))?;
            let slot = match key.trim().trim_matches('"') {
                "server" => &mut config.server,
                "ca" => &mut config.ca,
                "token" => &mut config.token,
                "username" => &mut config.username,
                _ => continue,
            };
            *slot = Some(value);
        }
        Ok(config)
    }

    /// The config as TOML text.
    pub fn render(&self) -> String {
        let mut out = String::from("# written by umsctl; holds a session token, keep it private\n");
        for (key, value) in [
            ("server", &self.server),
            ("ca", &self.ca),
            ("username", &self.username),
            ("token", &self.token),
        ] {
            if let Some(value) = value {
                out.push_str(&format!("{key} = {}\n", quote(value)));
            }
        }
        out
    }

    /// Writes the config file with mode 0600, creating its directory with mode 0700.
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)
            .with_context(|| format!("cannot write {}", path.display()))?;
        // An existing file keeps its mode on open: tighten it.
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("cannot set the mode of {}", path.display()))?;
        file.write_all(self.render().as_bytes())
            .with_context(|| format!("cannot write {}", path.display()))?;
        Ok(())
    }
}

/// A TOML basic string.
fn quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Parses a TOML basic (`"..."`) or literal (`'...'`) string, with an optional trailing comment.
fn parse_string(text: &str) -> anyhow::Result<String> {
    let mut chars = text.chars();
    let quote = chars.next().context("missing value")?;
    let mut out = String::new();
    match quote {
        '\'' => loop {
            match chars.next() {
                Some('\'') => break,
                Some(c) => out.push(c),
                None => anyhow::bail!("unterminated string"),
            }
        },
        '"' => loop {
            match chars.next() {
                Some('"') => break,
                Some('\\') => match chars.next() {
                    Some('"') => out.push('"'),
                    Some('\\') => out.push('\\'),
                    Some('n') => out.push('\n'),
                    Some('r') => out.push('\r'),
                    Some('t') => out.push('\t'),
                    Some(u @ ('u' | 'U')) => {
                        let len = if u == 'u' { 4 } else { 8 };
                        let hex: String = chars.by_ref().take(len).collect();
                        let code = u32::from_str_radix(&hex, 16)
                            .ok()
                            .and_then(char::from_u32)
                            .context("invalid unicode escape")?;
                        out.push(code);
                    }
                    _ => anyhow::bail!("invalid escape"),
                },
                Some(c) => out.push(c),
                None => anyhow::bail!("unterminated string"),
            }
        },
        _ => anyhow::bail!("expected a quoted string"),
    }
    let rest = chars.as_str().trim();
    if !rest.is_empty() && !rest.starts_with('#') {
        anyhow::bail!("unexpected text after the value");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let config = Config {
            server: Some("https://h:8443".into()),
            ca: Some("/tmp/a \"b\"\\c.pem".into()),
            token: Some("tok\u{1}en".into()),
            username: None,
        };
        assert_eq!(Config::parse(&config.render()).expect("parse"), config);
    }

    #[test]
    fn parses_hand_written_files() {
        let config = Config::parse(
            "# c\n\nserver = 'https://x:1' # note\n\"username\" = \"r\\u00e9mi\"\nother = \"x\"\n",
        )
        .expect("parse");
        assert_eq!(config.server.as_deref(), Some("https://x:1"));
        assert_eq!(config.username.as_deref(), Some("rémi"));
        assert!(Config::parse("server = https://x").is_err());
        assert!(Config::parse("server = \"x").is_err());
        assert!(Config::parse("server").is_err());
    }

    #[test]
    fn saves_with_private_mode() {
        let dir = std::env::temp_dir().join(format!("umsctl-test-{}", std::process::id()));
        let path = dir.join("sub").join("config.toml");
        let config = Config {
            token: Some("t".into()),
            ..Config::default()
        };
        config.save(&path).expect("save");
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(Config::load(&path).expect("load"), config);
        assert_eq!(
            Config::load(&dir.join("missing")).expect("load"),
            Config::default()
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
