//! A real Active Directory for tests: a Samba AD domain controller provisioned in a temporary
//! directory and run in the foreground as a child of the test, on one loopback address.
//!
//! [`SambaDc::start`] provisions the domain [`SAMBA_DOMAIN`] (NetBIOS [`AD_NETBIOS`]) with
//! `samba-tool domain provision`, loads a [`TestDirectory`] into it with `samba-tool` (OUs,
//! groups, nesting, users, primary groups, disabled accounts), and starts `samba` with only its
//! LDAP service, listening on `<host>:389` and `<host>:636` (LDAPS with a certificate issued
//! for `<host>` by a CA generated for the run). Samba's LDAP ports cannot be changed, so each
//! running DC needs an address of its own (`127.0.0.x`).
//!
//! Samba needs root (it binds ports below 1024); `cargo xtask test` installs it (Debian's
//! `samba`, `samba-ad-dc`, `samba-ad-provision`).

use std::fs;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::ldap::{AD_NETBIOS, TestDirectory};
use crate::process::{output_text, tail_file};
use crate::{ChildGuard, wait_for_tcp};

/// The DNS domain (realm, lower case) of the test domain.
pub const SAMBA_DOMAIN: &str = "samba.example.org";
/// The domain's naming context.
pub const SAMBA_SUFFIX: &str = "DC=samba,DC=example,DC=org";
/// Password of the domain's `Administrator`, the bind account of the tests.
pub const SAMBA_ADMIN_PASSWORD: &str = "Admin-pw-1";

/// The paths of `samba` and `samba-tool`, or `None` when Samba is not installed.
pub fn samba_path() -> Option<(PathBuf, PathBuf)> {
    let find = |name: &str, dirs: &[&str]| {
        dirs.iter()
            .map(|d| Path::new(d).join(name))
            .find(|p| p.is_file())
    };
    let samba = find(
        "samba",
        &["/usr/sbin", "/usr/local/sbin", "/usr/local/samba/sbin"],
    )?;
    let tool = find(
        "samba-tool",
        &["/usr/bin", "/usr/local/bin", "/usr/local/samba/bin"],
    )?;
    // `samba-tool domain provision` needs the AD schema files of `samba-ad-provision`.
    let schema = Path::new("/usr/share/samba/setup/ad-schema");
    if samba.starts_with("/usr/sbin") && !schema.is_dir() {
        return None;
    }
    Some((samba, tool))
}

/// A running Samba AD DC. Dropping it stops samba and removes its directory.
pub struct SambaDc {
    child: Option<ChildGuard>,
    dir: tempfile::TempDir,
    tool: PathBuf,
    host: String,
    ca_pem: String,
}

impl std::fmt::Debug for SambaDc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SambaDc")
            .field("dir", &self.dir.path())
            .field("host", &self.host)
            .finish_non_exhaustive()
    }
}

impl SambaDc {
    /// Provisions a domain, loads `data` and starts the DC on `host` (a loopback address no
    /// other DC uses).
    pub fn start(host: &str, data: &TestDirectory) -> anyhow::Result<SambaDc> {
        let (samba, tool) = samba_path().context(
            "Samba not found: install the `samba`, `samba-ad-dc` and `samba-ad-provision` packages (cargo xtask test does)",
        )?;
        let ip: IpAddr = host
            .parse()
            .context("the DC's host must be an IP address")?;
        if !ip.is_loopback() {
            bail!("the DC listens on loopback addresses only, not {host}");
        }
        let dir = tempfile::Builder::new()
            .prefix("ums-samba-")
            .tempdir()
            .context("create the Samba directory")?;
        let d = dir.path();
        let started = Instant::now();

        let realm = SAMBA_DOMAIN.to_ascii_uppercase();
        let mut provision = Command::new(&tool);
        provision
            .args(["domain", "provision"])
            .arg(format!("--targetdir={}", d.join("dc").display()))
            .arg(format!("--realm={realm}"))
            .arg(format!("--domain={AD_NETBIOS}"))
            .args(["--server-role=dc", "--dns-backend=NONE"])
            .arg(format!("--adminpass={SAMBA_ADMIN_PASSWORD}"))
            .arg(format!("--option=interfaces={host}/8"))
            .arg("--option=bind interfaces only=yes")
            .stdin(Stdio::null());
        run(&mut provision, "samba-tool domain provision")?;

        // Only the LDAP service, on this address, with a certificate for it.
        ums_tls::install_crypto_provider();
        let ca = ums_tls::CertAuthority::generate("UMS test Samba CA")?;
        let cert = ca.issue_server(&[host.to_owned()])?;
        let tls = d.join("tls");
        fs::create_dir_all(&tls)?;
        fs::write(tls.join("ca.pem"), &ca.cert_pem)?;
        fs::write(tls.join("cert.pem"), &cert.cert_pem)?;
        write_private(&tls.join("key.pem"), cert.key_pem.as_bytes())?;
        let conf = d.join("dc/etc/smb.conf");
        let text = fs::read_to_string(&conf).context("read the provisioned smb.conf")?;
        fs::write(
            &conf,
            rewrite_conf(
                &text,
                &[
                    ("server services", "ldap".to_owned()),
                    ("interfaces", format!("{host}/8")),
                    ("bind interfaces only", "yes".to_owned()),
                    ("log file", d.join("samba.log").display().to_string()),
                    ("tls enabled", "yes".to_owned()),
                    ("tls cafile", tls.join("ca.pem").display().to_string()),
                    ("tls certfile", tls.join("cert.pem").display().to_string()),
                    ("tls keyfile", tls.join("key.pem").display().to_string()),
                ],
            ),
        )?;

        let dc = SambaDc {
            child: None,
            tool,
            host: host.to_owned(),
            ca_pem: ca.cert_pem,
            dir,
        };
        dc.load(data)?;
        let mut dc = dc;
        dc.spawn(&samba, started)?;
        Ok(dc)
    }

    /// Runs `samba-tool <args>` against the DC's database; its output.
    pub fn samba_tool(&self, args: &[&str]) -> anyhow::Result<String> {
        let d = self.dir.path().join("dc");
        let mut cmd = Command::new(&self.tool);
        cmd.args(args)
            .arg(format!("--configfile={}", d.join("etc/smb.conf").display()))
            .arg(format!("-H{}", d.join("private/sam.ldb").display()))
            .stdin(Stdio::null());
        run(&mut cmd, &format!("samba-tool {}", args.join(" ")))
    }

    /// OUs, groups and their nesting, users with their groups, primary groups and disabled
    /// accounts (`userAccountControl` with bit 2). Groups without OUs go to `CN=Users`.
    fn load(&self, data: &TestDirectory) -> anyhow::Result<()> {
        // Passwords of the test users are simple.
        self.samba_tool(&[
            "domain",
            "passwordsettings",
            "set",
            "--complexity=off",
            "--min-pwd-length=1",
            "--history-length=0",
            "--min-pwd-age=0",
        ])?;
        let mut ous: Vec<Vec<String>> = Vec::new();
        for path in data
            .users
            .iter()
            .map(|u| &u.ous)
            .chain(data.groups.iter().map(|g| &g.ous))
        {
            for i in 1..=path.len() {
                let p = path[..i].to_vec();
                if !ous.contains(&p) {
                    ous.push(p);
                }
            }
        }
        ous.sort_by_key(Vec::len);
        for path in &ous {
            self.samba_tool(&["ou", "add", &ou_dn(path)])?;
        }
        for g in &data.groups {
            if g.name.eq_ignore_ascii_case("Domain Users") {
                continue;
            }
            let mut args = vec!["group".to_owned(), "add".to_owned(), g.name.clone()];
            if !g.ous.is_empty() {
                args.push(format!("--groupou={}", ou_dn(&g.ous)));
            }
            self.samba_tool(&args.iter().map(String::as_str).collect::<Vec<_>>())?;
        }
        for u in &data.users {
            let (given, surname) = u
                .display_name
                .split_once(' ')
                .unwrap_or((u.display_name.as_str(), ""));
            let mut args = vec![
                "user".to_owned(),
                "create".to_owned(),
                u.login.clone(),
                u.password.clone(),
                format!("--given-name={given}"),
            ];
            if !surname.is_empty() {
                args.push(format!("--surname={surname}"));
            }
            if !u.ous.is_empty() {
                args.push(format!("--userou={}", ou_dn(&u.ous)));
            }
            self.samba_tool(&args.iter().map(String::as_str).collect::<Vec<_>>())?;
        }
        for g in &data.groups {
            let members: Vec<&str> = data
                .users
                .iter()
                .filter(|u| u.groups.contains(&g.name) || u.primary_group.as_ref() == Some(&g.name))
                .map(|u| u.login.as_str())
                .chain(
                    data.groups
                        .iter()
                        .filter(|c| c.member_of.contains(&g.name))
                        .map(|c| c.name.as_str()),
                )
                .collect();
            if members.is_empty() || g.name.eq_ignore_ascii_case("Domain Users") {
                continue;
            }
            self.samba_tool(&["group", "addmembers", &g.name, &members.join(",")])?;
        }
        for u in &data.users {
            if let Some(p) = &u.primary_group
                && !p.eq_ignore_ascii_case("Domain Users")
            {
                self.samba_tool(&["user", "setprimarygroup", &u.login, p])?;
                // Only her primary group: out of Domain Users, if Samba made her a member when
                // the primary group changed (an error here means she was not one).
                let _ = self.samba_tool(&["group", "removemembers", "Domain Users", &u.login]);
            }
            let control = u
                .extra
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("userAccountControl"))
                .and_then(|(_, v)| v.parse::<i64>().ok())
                .unwrap_or(0);
            if control & 2 != 0 {
                self.samba_tool(&["user", "disable", &u.login])?;
            }
        }
        Ok(())
    }

    fn spawn(&mut self, samba: &Path, started: Instant) -> anyhow::Result<()> {
        let log = self.dir.path().join("samba.out");
        let log_file = fs::File::create(&log)?;
        let mut cmd = Command::new(samba);
        cmd.args(["--interactive", "--model=single"])
            .arg(format!(
                "--configfile={}",
                self.dir.path().join("dc/etc/smb.conf").display()
            ))
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file);
        let mut child = ChildGuard::new(cmd.spawn().context("spawn samba")?);
        let ip: IpAddr = self.host.parse()?;
        let deadline = Instant::now() + Duration::from_secs(60);
        for port in [636, 389] {
            while wait_for_tcp(SocketAddr::new(ip, port), Duration::from_millis(200)).is_err() {
                if let Ok(Some(status)) = child.try_wait() {
                    bail!("samba exited ({status}):\n{}", tail_file(&log, 30));
                }
                if Instant::now() > deadline {
                    bail!(
                        "samba did not listen on {}:{port} within 60 s:\n{}",
                        self.host,
                        tail_file(&log, 30)
                    );
                }
            }
        }
        eprintln!(
            "Samba AD DC for {SAMBA_DOMAIN} on {} ready after {:.1} s",
            self.host,
            started.elapsed().as_secs_f64()
        );
        self.child = Some(child);
        Ok(())
    }

    /// `ldaps://<host>:636`
    pub fn ldaps_url(&self) -> String {
        format!("ldaps://{}:636", self.host)
    }

    /// The PEM of the CA that signed the DC's certificate.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The DN of the domain's Administrator.
    pub fn admin_dn(&self) -> String {
        format!("CN=Administrator,CN=Users,{SAMBA_SUFFIX}")
    }

    /// The last lines of samba's output.
    pub fn log_tail(&self, lines: usize) -> String {
        tail_file(&self.dir.path().join("samba.out"), lines)
    }
}

impl Drop for SambaDc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.stop();
        }
    }
}

/// `OU=<deepest>,...,OU=<top>`, relative to the domain, for `samba-tool`.
fn ou_dn(path: &[String]) -> String {
    path.iter()
        .rev()
        .map(|o| format!("OU={o}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// `smb.conf` with the given `[global]` parameters set (replaced where present).
fn rewrite_conf(text: &str, set: &[(&str, String)]) -> String {
    let key = |line: &str| {
        line.split_once('=')
            .map(|(k, _)| k.trim().to_ascii_lowercase())
    };
    let mut out = String::new();
    for line in text.lines() {
        if key(line).is_some_and(|k| set.iter().any(|(s, _)| *s == k)) {
            continue;
        }
        out.push_str(line);
        out.push('\n');
        if line.trim().eq_ignore_ascii_case("[global]") {
            for (k, v) in set {
                out.push_str(&format!("\t{k} = {v}\n"));
            }
        }
    }
    out
}

fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("write {}", path.display()))?;
    f.write_all(bytes)?;
    Ok(())
}

fn run(cmd: &mut Command, what: &str) -> anyhow::Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("could not run {what}"))?;
    let text = output_text(&out);
    if !out.status.success() {
        bail!("{what} failed ({}):\n{text}", out.status);
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conf_parameters_are_replaced_in_global() {
        let text = "# c\n[global]\n\tinterfaces = lo\n\tworkgroup = AD\n[netlogon]\n\tpath = /x\n";
        let out = rewrite_conf(
            text,
            &[
                ("interfaces", "127.0.0.23/8".into()),
                ("tls enabled", "yes".into()),
            ],
        );
        assert_eq!(
            out,
            "# c\n[global]\n\tinterfaces = 127.0.0.23/8\n\ttls enabled = yes\n\tworkgroup = AD\n[netlogon]\n\tpath = /x\n"
        );
        assert_eq!(
            ou_dn(&["Berlin".into(), "Sales".into()]),
            "OU=Sales,OU=Berlin"
        );
    }
}
