//! A real OpenLDAP server (`slapd`) in a temporary directory, with TLS, for tests and benchmarks
//! of Shared Workplace logins.
//!
//! [`Slapd::start`] writes a `slapd.conf` with two databases, loads a generated directory into
//! both with `slapadd`, and starts `slapd` on two loopback ports: LDAPS, and plain LDAP for
//! StartTLS. Its certificate is issued by a CA generated for the run ([`Slapd::ca_pem`]).
//!
//! * [`AD_SUFFIX`] imitates Active Directory: a small schema with AD's own OIDs for
//!   `sAMAccountName`, `userPrincipalName`, `primaryGroupID`, `objectSid` (binary) and the
//!   object classes `user` and `group`; `memberOf` is kept by the memberof overlay. As in AD, the
//!   primary group does not list its members: only the user's `primaryGroupID` names it.
//! * [`LDAP_SUFFIX`] is a generic directory: `uid`, `inetOrgPerson`, `groupOfNames` with the
//!   memberof overlay.
//!
//! Both have a bind account `cn=svc-ums,ou=Service,<suffix>` with [`SERVICE_PASSWORD`] that may
//! read everything, and a hardened one ([`HARDENED_BIND_CN`]) that may not read
//! `primaryGroupID` and `objectSid`; users may only bind and read themselves. The look-alike
//! also knows AD's account state (`userAccountControl`, `msDS-User-Account-Control-Computed`,
//! `accountExpires`) and the `container` class of `CN=Users`.

use std::fmt::Write as _;
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::process::{output_text, tail_file};
use crate::{ChildGuard, free_port, wait_for_tcp};

/// Suffix of the Active Directory look-alike.
pub const AD_SUFFIX: &str = "dc=ad,dc=example,dc=org";
/// DNS domain (UPN suffix) of the Active Directory look-alike.
pub const AD_DOMAIN: &str = "ad.example.org";
/// NetBIOS name of the Active Directory look-alike.
pub const AD_NETBIOS: &str = "AD";
/// Suffix of the generic LDAP directory.
pub const LDAP_SUFFIX: &str = "dc=example,dc=org";
/// Password of the bind accounts.
pub const SERVICE_PASSWORD: &str = "svc-secret-42";
/// A second bind account, `cn=svc-hardened,ou=Service,<suffix>` with [`SERVICE_PASSWORD`], that
/// may read everything but `primaryGroupID` and `objectSid`, as a hardened Active Directory
/// bind account may.
pub const HARDENED_BIND_CN: &str = "svc-hardened";
/// The domain SID of the Active Directory look-alike.
pub const DOMAIN_SID: &str = "S-1-5-21-1004336348-1177238915-682003330";

/// The AD look-alike schema, with Active Directory's OIDs.
const AD_SCHEMA: &str = r#"
attributetype ( 1.2.840.113556.1.4.221 NAME 'sAMAccountName'
    EQUALITY caseIgnoreMatch SUBSTR caseIgnoreSubstringsMatch
    SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
attributetype ( 1.2.840.113556.1.4.656 NAME 'userPrincipalName'
    EQUALITY caseIgnoreMatch SUBSTR caseIgnoreSubstringsMatch
    SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
attributetype ( 1.2.840.113556.1.4.98 NAME 'primaryGroupID'
    EQUALITY integerMatch
    SYNTAX 1.3.6.1.4.1.1466.115.121.1.27 SINGLE-VALUE )
attributetype ( 1.2.840.113556.1.4.146 NAME 'objectSid'
    EQUALITY octetStringMatch
    SYNTAX 1.3.6.1.4.1.1466.115.121.1.40 SINGLE-VALUE )
attributetype ( 1.2.840.113556.1.4.8 NAME 'userAccountControl'
    EQUALITY integerMatch
    SYNTAX 1.3.6.1.4.1.1466.115.121.1.27 SINGLE-VALUE )
attributetype ( 1.2.840.113556.1.4.1460 NAME 'msDS-User-Account-Control-Computed'
    EQUALITY integerMatch
    SYNTAX 1.3.6.1.4.1.1466.115.121.1.27 SINGLE-VALUE )
attributetype ( 1.2.840.113556.1.4.159 NAME 'accountExpires'
    EQUALITY integerMatch
    SYNTAX 1.3.6.1.4.1.1466.115.121.1.27 SINGLE-VALUE )
objectclass ( 1.2.840.113556.1.5.9 NAME 'user'
    SUP inetOrgPerson STRUCTURAL
    MAY ( sAMAccountName $ userPrincipalName $ primaryGroupID $ objectSid $
          userAccountControl $ msDS-User-Account-Control-Computed $ accountExpires ) )
objectclass ( 1.2.840.113556.1.3.23 NAME 'container'
    SUP top STRUCTURAL
    MUST cn )
objectclass ( 1.2.840.113556.1.5.8 NAME 'group'
    SUP top STRUCTURAL
    MUST cn
    MAY ( member $ sAMAccountName $ objectSid $ description ) )
"#;

/// Returns the path of `slapd`, or `None` when it is not installed.
pub fn slapd_path() -> Option<PathBuf> {
    [
        "/usr/sbin/slapd",
        "/usr/local/sbin/slapd",
        "/usr/local/libexec/slapd",
    ]
    .iter()
    .map(PathBuf::from)
    .chain(
        std::env::var_os("PATH")
            .map(|p| {
                std::env::split_paths(&p)
                    .map(|d| d.join("slapd"))
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default(),
    )
    .find(|p| p.is_file())
}

/// Directory of the slapd modules (`back_mdb`, `memberof`).
fn module_dir() -> Option<PathBuf> {
    [
        "/usr/lib/ldap",
        "/usr/lib/x86_64-linux-gnu/ldap",
        "/usr/lib/openldap",
        "/usr/local/libexec/openldap",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|d| d.join("back_mdb.la").exists() || d.join("back_mdb.so").exists())
}

/// A group of the generated directory.
#[derive(Debug, Clone)]
pub struct TestGroup {
    pub name: String,
    /// OU path below the suffix, top first, e.g. `["Groups"]`.
    pub ous: Vec<String>,
    /// A container directly below the suffix the group sits in instead of the OUs, as
    /// Active Directory's `CN=Users` (`Some("Users")`).
    pub container: Option<String>,
    /// Names of the groups this group is a member of.
    pub member_of: Vec<String>,
    /// AD: relative id of the group's SID.
    pub rid: u32,
}

/// A user of the generated directory.
#[derive(Debug, Clone)]
pub struct TestUser {
    /// sAMAccountName / uid.
    pub login: String,
    pub display_name: String,
    pub password: String,
    /// OU path below the suffix, top first, e.g. `["Berlin", "Sales"]`.
    pub ous: Vec<String>,
    /// Names of the groups the user is directly a member of.
    pub groups: Vec<String>,
    /// AD: the primary group's name (its RID becomes primaryGroupID).
    pub primary_group: Option<String>,
    /// AD: relative id of the user's SID.
    pub rid: u32,
    /// AD: further attributes of the entry, e.g. `("userAccountControl", "514")`.
    pub extra: Vec<(String, String)>,
}

/// The content of the generated directory, loaded into both databases.
#[derive(Debug, Clone, Default)]
pub struct TestDirectory {
    pub groups: Vec<TestGroup>,
    pub users: Vec<TestUser>,
}

impl TestDirectory {
    /// A small organisation with nested groups, OUs and primary groups:
    ///
    /// * `alice` (Berlin/Sales): groups `sales`, primary group `Domain Users`; `sales` is in
    ///   `staff`, `staff` is in `everyone` (three levels).
    /// * `bob` (Berlin): groups `it`, `staff`; primary group `Domain Users`.
    /// * `carol` (Munich): no groups but her primary group `Contractors`.
    /// * `o'hara (ext)`, a login with characters that mean something to LDAP filters, in Munich.
    ///
    /// Every user's password is `<login>-pw-1`.
    pub fn sample() -> TestDirectory {
        let g = |name: &str, member_of: &[&str], rid: u32| TestGroup {
            name: name.into(),
            ous: vec!["Groups".into()],
            container: None,
            member_of: member_of.iter().map(|s| (*s).to_owned()).collect(),
            rid,
        };
        let u = |login: &str, display: &str, ous: &[&str], groups: &[&str], primary: &str, rid| {
            TestUser {
                login: login.into(),
                display_name: display.into(),
                password: format!("{login}-pw-1"),
                ous: ous.iter().map(|s| (*s).to_owned()).collect(),
                groups: groups.iter().map(|s| (*s).to_owned()).collect(),
                primary_group: Some(primary.to_owned()),
                rid,
                extra: Vec::new(),
            }
        };
        TestDirectory {
            groups: vec![
                g("Domain Users", &[], 513),
                g("Contractors", &["everyone"], 1200),
                g("everyone", &[], 1201),
                g("staff", &["everyone"], 1202),
                g("sales", &["staff"], 1203),
                g("it", &["staff"], 1204),
            ],
            users: vec![
                u(
                    "alice",
                    "Alice Smith",
                    &["Berlin", "Sales"],
                    &["sales"],
                    "Domain Users",
                    1101,
                ),
                u(
                    "bob",
                    "Bob Jones",
                    &["Berlin"],
                    &["it", "staff"],
                    "Domain Users",
                    1102,
                ),
                u(
                    "carol",
                    "Carol White",
                    &["Munich"],
                    &[],
                    "Contractors",
                    1103,
                ),
                u(
                    "o'hara (ext)",
                    "Pat O'Hara",
                    &["Munich"],
                    &[],
                    "Domain Users",
                    1104,
                ),
            ],
        }
    }

    /// [`TestDirectory::sample`] laid out as Active Directory keeps it by default: every group
    /// in the container `CN=Users` below the domain's root, the users in their OUs.
    pub fn in_users_container() -> TestDirectory {
        let mut d = TestDirectory::sample();
        for g in &mut d.groups {
            g.ous.clear();
            g.container = Some("Users".into());
        }
        d
    }

    /// `n` users `user00000` ... with password `<login>-pw-1`, spread over 10 OUs and 50 groups
    /// (each user in two groups, every group nested in one of five department groups), for
    /// benchmarks.
    pub fn many(n: usize) -> TestDirectory {
        let mut groups = vec![TestGroup {
            name: "Domain Users".into(),
            ous: vec!["Groups".into()],
            container: None,
            member_of: vec![],
            rid: 513,
        }];
        for d in 0..5u32 {
            groups.push(TestGroup {
                name: format!("dept{d}"),
                ous: vec!["Groups".into()],
                container: None,
                member_of: vec![],
                rid: 2000 + d,
            });
        }
        for t in 0..50u32 {
            groups.push(TestGroup {
                name: format!("team{t:02}"),
                ous: vec!["Groups".into()],
                container: None,
                member_of: vec![format!("dept{}", t % 5)],
                rid: 3000 + t,
            });
        }
        let users = (0..n)
            .map(|i| {
                let login = format!("user{i:05}");
                TestUser {
                    display_name: format!("User {i}"),
                    password: format!("{login}-pw-1"),
                    ous: vec![format!("Site{}", i % 10), "Staff".into()],
                    groups: vec![
                        format!("team{:02}", i % 50),
                        format!("team{:02}", (i + 7) % 50),
                    ],
                    primary_group: Some("Domain Users".into()),
                    rid: 100_000 + u32::try_from(i).unwrap_or(0),
                    extra: Vec::new(),
                    login,
                }
            })
            .collect();
        TestDirectory { groups, users }
    }

    /// The LDIF of one database. `ad` selects the AD look-alike's object classes and attributes.
    pub fn ldif(&self, suffix: &str, ad: bool) -> String {
        let mut out = String::new();
        let top = suffix
            .split(',')
            .next()
            .and_then(|r| r.split_once('='))
            .map(|(_, v)| v)
            .unwrap_or("example");
        let _ = write!(
            out,
            "dn: {suffix}\nobjectClass: dcObject\nobjectClass: organization\no: {top}\ndc: {top}\n\n"
        );
        // Every OU on every path, parents first.
        let mut ous: Vec<Vec<String>> = vec![vec!["Service".into()], vec!["Groups".into()]];
        for path in self
            .users
            .iter()
            .map(|u| &u.ous)
            .chain(self.groups.iter().map(|g| &g.ous))
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
            let name = path.last().cloned().unwrap_or_default();
            let _ = write!(
                out,
                "dn: {}\nobjectClass: organizationalUnit\nou: {name}\n\n",
                dn_in(suffix, path, "ou", &name)
            );
        }
        // Containers (AD's `CN=Users`).
        let mut containers: Vec<&str> = self
            .groups
            .iter()
            .filter_map(|g| g.container.as_deref())
            .collect();
        containers.sort_unstable();
        containers.dedup();
        for c in containers {
            let _ = write!(
                out,
                "dn: cn={},{suffix}\nobjectClass: container\ncn: {c}\n\n",
                escape_dn(c)
            );
        }
        // The bind accounts.
        for cn in ["svc-ums", HARDENED_BIND_CN] {
            let _ = write!(
                out,
                "dn: cn={cn},ou=Service,{suffix}\nobjectClass: inetOrgPerson\ncn: {cn}\nsn: service\nuserPassword: {SERVICE_PASSWORD}\n\n"
            );
        }

        let group_dn = |name: &str| -> String {
            let g = self.groups.iter().find(|g| g.name == name);
            match g.and_then(|g| g.container.as_deref()) {
                Some(c) => format!("cn={},cn={},{suffix}", escape_dn(name), escape_dn(c)),
                None => {
                    let path = g.map(|g| g.ous.clone()).unwrap_or_default();
                    dn_in(suffix, &path, "cn", name)
                }
            }
        };
        let user_dn = |u: &TestUser| dn_in(suffix, &u.ous, "cn", &u.display_name);
        // Members and memberOf, computed here because slapadd bypasses the overlay.
        for g in &self.groups {
            let dn = group_dn(&g.name);
            if ad {
                let _ = writeln!(out, "dn: {dn}\nobjectClass: group\ncn: {}", g.name);
                let _ = writeln!(out, "sAMAccountName: {}", g.name);
                let _ = writeln!(out, "objectSid:: {}", b64(&sid(g.rid)));
            } else {
                let _ = writeln!(out, "dn: {dn}\nobjectClass: groupOfNames\ncn: {}", g.name);
            }
            let mut members: Vec<String> = self
                .users
                .iter()
                .filter(|u| u.groups.contains(&g.name))
                .map(user_dn)
                .collect();
            members.extend(
                self.groups
                    .iter()
                    .filter(|c| c.member_of.contains(&g.name))
                    .map(|c| group_dn(&c.name)),
            );
            if members.is_empty() && !ad {
                // groupOfNames needs a member; an empty group lists the empty DN, as is usual.
                members.push(String::new());
            }
            for m in members {
                let _ = writeln!(out, "member: {m}");
            }
            for parent in &g.member_of {
                let _ = writeln!(out, "memberOf: {}", group_dn(parent));
            }
            out.push('\n');
        }
        for u in &self.users {
            let dn = user_dn(u);
            let sn = u.display_name.rsplit(' ').next().unwrap_or(&u.display_name);
            if ad {
                let _ = writeln!(out, "dn: {dn}\nobjectClass: user");
                let _ = writeln!(out, "sAMAccountName: {}", u.login);
                let _ = writeln!(out, "userPrincipalName: {}@{AD_DOMAIN}", u.login);
                let _ = writeln!(out, "objectSid:: {}", b64(&sid(u.rid)));
                if let Some(p) = &u.primary_group
                    && let Some(g) = self.groups.iter().find(|g| &g.name == p)
                {
                    let _ = writeln!(out, "primaryGroupID: {}", g.rid);
                }
                for (attr, value) in &u.extra {
                    let _ = writeln!(out, "{attr}: {value}");
                }
            } else {
                let _ = writeln!(out, "dn: {dn}\nobjectClass: inetOrgPerson");
                let _ = writeln!(out, "uid: {}", u.login);
                let _ = writeln!(out, "mail: {}@example.org", u.login);
            }
            let _ = writeln!(
                out,
                "cn: {}\nsn: {sn}\ndisplayName: {}",
                u.display_name, u.display_name
            );
            let _ = writeln!(out, "userPassword: {}", u.password);
            for g in &u.groups {
                let _ = writeln!(out, "memberOf: {}", group_dn(g));
            }
            out.push('\n');
        }
        out
    }
}

/// A DN `<attr>=<name>,ou=<deepest>,...,ou=<top>,<suffix>` with the values escaped.
fn dn_in(suffix: &str, ous: &[String], attr: &str, name: &str) -> String {
    let mut dn = format!("{attr}={}", escape_dn(name));
    let path: &[String] = if attr == "ou" && !ous.is_empty() {
        &ous[..ous.len() - 1]
    } else {
        ous
    };
    for ou in path.iter().rev() {
        let _ = write!(dn, ",ou={}", escape_dn(ou));
    }
    let _ = write!(dn, ",{suffix}");
    dn
}

fn escape_dn(v: &str) -> String {
    let mut out = String::new();
    for (i, c) in v.chars().enumerate() {
        if matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';' | '=') || (i == 0 && c == '#') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The binary SID of a relative id in [`DOMAIN_SID`].
pub fn sid(rid: u32) -> Vec<u8> {
    let subs: Vec<u32> = DOMAIN_SID
        .trim_start_matches("S-1-5-")
        .split('-')
        .filter_map(|p| p.parse().ok())
        .chain(std::iter::once(rid))
        .collect();
    let mut out = vec![1u8, u8::try_from(subs.len()).unwrap_or(0), 0, 0, 0, 0, 0, 5];
    for s in subs {
        out.extend_from_slice(&s.to_le_bytes());
    }
    out
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A running slapd. Dropping it stops the server and removes its directory.
pub struct Slapd {
    child: Option<ChildGuard>,
    dir: tempfile::TempDir,
    /// LDAPS port.
    pub ldaps_port: u16,
    /// Plain LDAP port (for StartTLS).
    pub ldap_port: u16,
    ca_pem: String,
}

impl std::fmt::Debug for Slapd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slapd")
            .field("dir", &self.dir.path())
            .field("ldaps_port", &self.ldaps_port)
            .field("ldap_port", &self.ldap_port)
            .finish_non_exhaustive()
    }
}

impl Slapd {
    /// Generates the configuration, a CA and server certificate, loads `data` into both
    /// databases and starts slapd on free loopback ports.
    pub fn start(data: &TestDirectory) -> anyhow::Result<Slapd> {
        let slapd = slapd_path()
            .context("slapd not found: install the `slapd` package (cargo xtask test does)")?;
        let modules = module_dir().context("slapd modules (back_mdb) not found")?;
        let dir = tempfile::Builder::new()
            .prefix("ums-slapd-")
            .tempdir()
            .context("create the slapd directory")?;
        let d = dir.path();

        ums_tls::install_crypto_provider();
        let ca = ums_tls::CertAuthority::generate("UMS test directory CA")?;
        let cert = ca.issue_server(&["127.0.0.1".into(), "localhost".into()])?;
        fs::write(d.join("ca.pem"), &ca.cert_pem)?;
        fs::write(d.join("server.pem"), &cert.cert_pem)?;
        fs::write(d.join("server-key.pem"), &cert.key_pem)?;
        fs::write(d.join("ad.schema"), AD_SCHEMA)?;
        for db in ["ad-db", "ldap-db"] {
            fs::create_dir_all(d.join(db))?;
        }
        fs::write(d.join("slapd.conf"), config(d, &modules))?;

        for (suffix, ad, file) in [
            (AD_SUFFIX, true, "ad.ldif"),
            (LDAP_SUFFIX, false, "ldap.ldif"),
        ] {
            let ldif = d.join(file);
            fs::write(&ldif, data.ldif(suffix, ad))?;
            let slapadd = slapd.with_file_name("slapadd");
            let mut cmd = Command::new(if slapadd.is_file() {
                slapadd
            } else {
                PathBuf::from("slapadd")
            });
            cmd.arg("-f")
                .arg(d.join("slapd.conf"))
                .args(["-b", suffix, "-q", "-l"])
                .arg(&ldif)
                .stdin(Stdio::null());
            let out = cmd.output().context("run slapadd")?;
            if !out.status.success() {
                bail!(
                    "slapadd of {suffix} failed ({}):\n{}",
                    out.status,
                    output_text(&out)
                );
            }
        }

        let mut s = Slapd {
            child: None,
            ldaps_port: 0,
            ldap_port: 0,
            ca_pem: ca.cert_pem,
            dir,
        };
        let mut last = None;
        for _ in 0..3 {
            s.ldaps_port = free_port();
            s.ldap_port = free_port();
            match s.spawn(&slapd) {
                Ok(()) => return Ok(s),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("slapd did not start")))
    }

    fn spawn(&mut self, slapd: &Path) -> anyhow::Result<()> {
        let log = self.dir.path().join("slapd.log");
        let log_file = fs::File::create(&log)?;
        let urls = format!(
            "ldaps://127.0.0.1:{}/ ldap://127.0.0.1:{}/",
            self.ldaps_port, self.ldap_port
        );
        let mut cmd = Command::new(slapd);
        cmd.arg("-f")
            .arg(self.dir.path().join("slapd.conf"))
            .args(["-h", &urls, "-d", "0"])
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file);
        let mut child = ChildGuard::new(cmd.spawn().context("spawn slapd")?);
        let deadline = Instant::now() + Duration::from_secs(30);
        for port in [self.ldaps_port, self.ldap_port] {
            while wait_for_tcp(
                SocketAddr::from(([127, 0, 0, 1], port)),
                Duration::from_millis(100),
            )
            .is_err()
            {
                if let Ok(Some(status)) = child.try_wait() {
                    bail!("slapd exited ({status}):\n{}", tail_file(&log, 30));
                }
                if Instant::now() > deadline {
                    bail!("slapd did not listen within 30 s:\n{}", tail_file(&log, 30));
                }
            }
        }
        self.child = Some(child);
        Ok(())
    }

    /// `ldaps://127.0.0.1:PORT`
    pub fn ldaps_url(&self) -> String {
        format!("ldaps://127.0.0.1:{}", self.ldaps_port)
    }

    /// `ldap://127.0.0.1:PORT`, for StartTLS.
    pub fn ldap_url(&self) -> String {
        format!("ldap://127.0.0.1:{}", self.ldap_port)
    }

    /// The PEM of the CA that signed slapd's certificate.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// Stops slapd (the directory goes down); [`Slapd::restart`] brings it back on the same
    /// ports.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.stop();
        }
    }

    /// Starts slapd again after [`Slapd::stop`].
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        let slapd = slapd_path().context("slapd not found")?;
        self.spawn(&slapd)
    }

    /// Whether slapd is running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// The last lines of slapd's log.
    pub fn log_tail(&self, lines: usize) -> String {
        tail_file(&self.dir.path().join("slapd.log"), lines)
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Issues an identity for `swp-auth` (kind "swp-auth", valid for 127.0.0.1) from the CA of a
/// server's data directory (`<tls_dir>/ca.pem`, `ca-key.pem`) and saves it in `out`, as joining
/// the network would.
pub fn issue_swp_auth_identity(tls_dir: &Path, id: &str, out: &Path) -> anyhow::Result<()> {
    ums_tls::install_crypto_provider();
    let (ca, _) = ums_tls::CertAuthority::load_or_create(tls_dir, "UMS device communication CA")?;
    let identity = ca.issue_node(
        ums_tls::ComponentKind::SwpAuth,
        id,
        &["127.0.0.1".to_owned(), "localhost".to_owned()],
    )?;
    identity.save(out)?;
    Ok(())
}

fn config(dir: &Path, modules: &Path) -> String {
    let d = dir.display();
    let mut c = format!(
        r#"include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
include {d}/ad.schema

modulepath {modules}
moduleload back_mdb
moduleload memberof

pidfile {d}/slapd.pid
argsfile {d}/slapd.args
threads 8

TLSCACertificateFile {d}/ca.pem
TLSCertificateFile {d}/server.pem
TLSCertificateKeyFile {d}/server-key.pem

"#,
        modules = modules.display()
    );
    for (suffix, db, group_oc) in [
        (AD_SUFFIX, "ad-db", "group"),
        (LDAP_SUFFIX, "ldap-db", "groupOfNames"),
    ] {
        let _ = write!(
            c,
            r#"database mdb
suffix "{suffix}"
rootdn "cn=admin,{suffix}"
rootpw admin-secret
directory {d}/{db}
maxsize 1073741824
index objectClass eq
index cn,uid,mail eq
index sAMAccountName,userPrincipalName eq
index objectSid eq
index member,memberOf eq
access to attrs=userPassword
    by dn.exact="cn=svc-ums,ou=Service,{suffix}" none
    by anonymous auth
    by self auth
    by * none
access to attrs=primaryGroupID,objectSid
    by dn.exact="cn=svc-ums,ou=Service,{suffix}" read
    by self read
    by * none
access to *
    by dn.exact="cn=svc-ums,ou=Service,{suffix}" read
    by dn.exact="cn={HARDENED_BIND_CN},ou=Service,{suffix}" read
    by self read
    by * none
overlay memberof
memberof-group-oc {group_oc}
memberof-member-ad member
memberof-memberof-ad memberOf

"#
        );
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldif_has_memberof_and_sids() {
        let d = TestDirectory::sample();
        let ad = d.ldif(AD_SUFFIX, true);
        assert!(ad.contains(
            "dn: cn=Alice Smith,ou=Sales,ou=Berlin,dc=ad,dc=example,dc=org\nobjectClass: user"
        ));
        assert!(ad.contains("memberOf: cn=sales,ou=Groups,dc=ad,dc=example,dc=org"));
        assert!(ad.contains("primaryGroupID: 513"));
        assert!(ad.contains("dn: ou=Sales,ou=Berlin,dc=ad,dc=example,dc=org"));
        let ldap = d.ldif(LDAP_SUFFIX, false);
        assert!(ldap.contains("uid: o'hara (ext)"));
        assert_eq!(sid(513).len(), 28);
    }
}
