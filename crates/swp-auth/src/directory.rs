//! One directory: its configuration, pooled connections with failover across its controllers,
//! and the lookups a login needs.
//!
//! Two pools per directory: *service* connections, bound once with the bind account, run the
//! searches (user, groups, primary group); *bind* connections carry the users' simple binds and
//! nothing else, so a user's identity never leaks into a search. A connection is used by one
//! operation at a time and goes back to its pool when the operation succeeded; a connection that
//! failed is dropped and the operation is retried once on a fresh one, which may be on another
//! controller. Controllers are tried in their configured order, starting with the last one that
//! answered.
//!
//! Simple binds go over TLS only: `ldaps://` URLs, or `ldap://` with StartTLS.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ldap3::adapters::{Adapter, EntriesOnly, PagedResults};
use ldap3::{Ldap, LdapConnAsync, LdapConnSettings, ResultEntry, Scope, SearchEntry};
use tokio::sync::{Semaphore, SemaphorePermit};
use ums_domain::{DirectoryGroup, DirectoryOu, DirectoryUser};
use ums_proto::swp::v1 as pb;

use crate::AuthError;
use crate::escape::{filter_bytes, filter_value, parse_dn};
use crate::login::LoginName;

/// How long nested groups stay deep at most; deeper nesting is ignored.
const MAX_GROUP_LEVELS: u32 = 16;
/// Most groups resolved for one user.
const MAX_GROUPS: usize = 2_000;

/// Directory flavours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    ActiveDirectory,
    Ldap,
}

/// How group membership is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Membership {
    /// The `memberOf` attribute of users and groups (AD; OpenLDAP with the memberof overlay).
    MemberOf,
    /// Search groups whose `member` (or `uniqueMember`) holds the DN (groupOfNames).
    Member,
}

/// A directory's configuration, validated. `Debug` leaves out the bind password.
#[derive(Clone)]
pub struct DirectoryConfig {
    pub id: i64,
    pub revision: i64,
    pub name: String,
    pub kind: Kind,
    pub domain: String,
    pub netbios: String,
    pub urls: Vec<String>,
    pub base_dn: String,
    pub bind_dn: String,
    pub bind_password: String,
    pub ca_pem: String,
    pub starttls: bool,
    pub page_size: i32,
    pub login_attribute: String,
    pub user_filter: String,
    pub membership: Membership,
}

impl std::fmt::Debug for DirectoryConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirectoryConfig")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("urls", &self.urls)
            .field("base_dn", &self.base_dn)
            .field("bind_dn", &self.bind_dn)
            .finish_non_exhaustive()
    }
}

impl DirectoryConfig {
    /// Validates the configuration a server sent.
    pub fn from_proto(d: &pb::Directory) -> Result<Self, AuthError> {
        let bad = |m: String| AuthError::Config(format!("directory `{}`: {m}", d.name));
        let kind = match d.kind.as_str() {
            "ad" | "" => Kind::ActiveDirectory,
            "ldap" => Kind::Ldap,
            other => return Err(bad(format!("unknown kind `{other}`"))),
        };
        if d.urls.is_empty() {
            return Err(bad("no controller URLs".into()));
        }
        for url in &d.urls {
            let tls = url.starts_with("ldaps://") || (url.starts_with("ldap://") && d.starttls);
            if !tls {
                return Err(bad(format!(
                    "`{url}` is not TLS: passwords are only sent over ldaps:// or ldap:// with StartTLS"
                )));
            }
        }
        if d.base_dn.trim().is_empty() || parse_dn(&d.base_dn).is_none() {
            return Err(bad(format!("base DN `{}` is not a DN", d.base_dn)));
        }
        if d.bind_dn.trim().is_empty() || d.bind_password.is_empty() {
            return Err(bad(
                "a bind account (DN and password) is needed to look users up".into(),
            ));
        }
        let membership = match d.group_membership.as_str() {
            "" | "memberof" => Membership::MemberOf,
            "member" => Membership::Member,
            other => {
                return Err(bad(format!(
                    "unknown group membership `{other}`: use memberof or member"
                )));
            }
        };
        let login_attribute = if d.login_attribute.is_empty() {
            "uid".to_owned()
        } else if d
            .login_attribute
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-')
        {
            d.login_attribute.clone()
        } else {
            return Err(bad(format!(
                "login attribute `{}` is not an attribute name",
                d.login_attribute
            )));
        };
        let user_filter = d.user_filter.trim().to_owned();
        let wrapped = user_filter.starts_with('(') && user_filter.ends_with(')');
        if !user_filter.is_empty() && !wrapped {
            return Err(bad(format!(
                "user filter `{user_filter}` must be in parentheses"
            )));
        }
        Ok(Self {
            id: d.id,
            revision: d.revision,
            name: d.name.clone(),
            kind,
            domain: d.domain.trim().to_ascii_lowercase(),
            netbios: d.netbios.trim().to_ascii_lowercase(),
            urls: d.urls.clone(),
            base_dn: d.base_dn.clone(),
            bind_dn: d.bind_dn.clone(),
            bind_password: d.bind_password.clone(),
            ca_pem: d.ca_pem.clone(),
            starttls: d.starttls,
            page_size: i32::try_from(d.page_size.clamp(1, 10_000)).unwrap_or(500),
            login_attribute,
            user_filter,
            membership,
        })
    }

    /// The search filter for a typed login name; every piece of user input is escaped.
    pub fn user_filter_for(&self, name: &LoginName) -> String {
        let domain_matches =
            |d: &str| self.domain.is_empty() || d.eq_ignore_ascii_case(&self.domain);
        let by_name = match (self.kind, name) {
            (Kind::ActiveDirectory, LoginName::Plain(u) | LoginName::DownLevel { user: u, .. }) => {
                format!("(sAMAccountName={})", filter_value(u))
            }
            (Kind::ActiveDirectory, LoginName::Upn { user, domain }) => {
                let upn = filter_value(&format!("{user}@{domain}"));
                if domain_matches(domain) {
                    format!(
                        "(|(userPrincipalName={upn})(sAMAccountName={}))",
                        filter_value(user)
                    )
                } else {
                    format!("(userPrincipalName={upn})")
                }
            }
            (Kind::Ldap, LoginName::Plain(u) | LoginName::DownLevel { user: u, .. }) => {
                format!("({}={})", self.login_attribute, filter_value(u))
            }
            (Kind::Ldap, LoginName::Upn { user, domain }) => {
                if domain_matches(domain) {
                    format!("({}={})", self.login_attribute, filter_value(user))
                } else {
                    format!("(mail={})", filter_value(&format!("{user}@{domain}")))
                }
            }
        };
        let class = match self.kind {
            Kind::ActiveDirectory => "(objectClass=user)",
            Kind::Ldap => "",
        };
        format!("(&{class}{by_name}{})", self.user_filter)
    }

    fn user_attrs(&self) -> Vec<String> {
        let mut attrs: Vec<String> = ["cn", "displayName", "memberOf"]
            .into_iter()
            .map(str::to_owned)
            .collect();
        match self.kind {
            Kind::ActiveDirectory => attrs.extend(
                [
                    "sAMAccountName",
                    "userPrincipalName",
                    "primaryGroupID",
                    "objectSid",
                ]
                .map(str::to_owned),
            ),
            Kind::Ldap => attrs.push(self.login_attribute.clone()),
        }
        attrs
    }
}

/// Limits of the connection pools.
#[derive(Debug, Clone)]
pub struct PoolOptions {
    /// Connections per pool (service and bind pools each).
    pub connections: usize,
    pub connect_timeout: Duration,
    pub op_timeout: Duration,
    /// How long a group's name and parents are cached.
    pub group_ttl: Duration,
}

/// A pool of connections, each used by one operation at a time.
struct Pool {
    idle: Mutex<Vec<Ldap>>,
    permits: Semaphore,
}

impl Pool {
    fn new(size: usize) -> Self {
        Self {
            idle: Mutex::new(Vec::new()),
            permits: Semaphore::new(size.max(1)),
        }
    }

    fn take_idle(&self) -> Option<Ldap> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(mut ldap) = idle.pop() {
            if !ldap.is_closed() {
                return Some(ldap);
            }
        }
        None
    }

    fn put(&self, ldap: Ldap) {
        self.idle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(ldap);
    }

    fn clear(&self) {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

#[derive(Clone)]
struct CachedGroup {
    name: String,
    parents: Vec<String>,
    at: Instant,
}

/// A connected directory.
pub struct Directory {
    pub config: DirectoryConfig,
    options: PoolOptions,
    tls: Option<Arc<rustls::ClientConfig>>,
    service: Pool,
    binds: Pool,
    /// Index of the controller that answered last.
    preferred: AtomicUsize,
    /// Lowercased DN -> name and parent groups.
    groups: Mutex<HashMap<String, CachedGroup>>,
    /// Primary group SID (binary) -> (DN, name).
    primary: Mutex<HashMap<Vec<u8>, (String, String, Instant)>>,
}

/// Which pool an operation runs on.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Service,
    Bind,
}

/// An LDAP result code that means the server cannot serve now: try another connection.
fn transient(rc: u32) -> bool {
    matches!(rc, 51 | 52 | 80 | 81)
}

impl Directory {
    pub fn new(config: DirectoryConfig, options: PoolOptions) -> Result<Self, AuthError> {
        let tls = if config.ca_pem.trim().is_empty() {
            None
        } else {
            let certs = ums_tls::parse_certs(&config.ca_pem).map_err(|e| {
                AuthError::Config(format!("directory `{}`: CA certificate: {e}", config.name))
            })?;
            let mut roots = rustls::RootCertStore::empty();
            for c in certs {
                roots.add(c).map_err(|e| {
                    AuthError::Config(format!("directory `{}`: CA certificate: {e}", config.name))
                })?;
            }
            Some(Arc::new(
                rustls::ClientConfig::builder()
                    .with_root_certificates(roots)
                    .with_no_client_auth(),
            ))
        };
        Ok(Self {
            service: Pool::new(options.connections),
            binds: Pool::new(options.connections),
            options,
            tls,
            config,
            preferred: AtomicUsize::new(0),
            groups: Mutex::new(HashMap::new()),
            primary: Mutex::new(HashMap::new()),
        })
    }

    fn pool(&self, role: Role) -> &Pool {
        match role {
            Role::Service => &self.service,
            Role::Bind => &self.binds,
        }
    }

    /// Opens a connection, trying the controllers in order from the preferred one. Service
    /// connections are bound with the bind account.
    async fn connect(&self, role: Role) -> Result<Ldap, AuthError> {
        let urls = &self.config.urls;
        let start = self.preferred.load(Ordering::Relaxed) % urls.len();
        let mut failures = Vec::new();
        for k in 0..urls.len() {
            let i = (start + k) % urls.len();
            let url = &urls[i];
            match self.connect_one(url, role).await {
                Ok(ldap) => {
                    if i != start {
                        tracing::warn!(directory = %self.config.name, %url, "failed over to another controller");
                    }
                    self.preferred.store(i, Ordering::Relaxed);
                    return Ok(ldap);
                }
                Err(ConnectError::Refused(m)) => return Err(AuthError::Config(m)),
                Err(ConnectError::Unreachable(m)) => failures.push(format!("{url}: {m}")),
            }
        }
        tracing::warn!(directory = %self.config.name, failures = %failures.join("; "), "directory unreachable");
        Err(AuthError::Unavailable(format!(
            "directory `{}` is unreachable: {}",
            self.config.name,
            failures.join("; ")
        )))
    }

    async fn connect_one(&self, url: &str, role: Role) -> Result<Ldap, ConnectError> {
        let mut settings = LdapConnSettings::new()
            .set_conn_timeout(self.options.connect_timeout)
            .set_starttls(url.starts_with("ldap://") && self.config.starttls);
        if let Some(tls) = &self.tls {
            settings = settings.set_config(tls.clone());
        }
        let (conn, mut ldap) = LdapConnAsync::with_settings(settings, url)
            .await
            .map_err(|e| ConnectError::Unreachable(e.to_string()))?;
        let directory = self.config.name.clone();
        tokio::spawn(async move {
            if let Err(e) = conn.drive().await {
                tracing::debug!(%directory, error = %e, "directory connection ended");
            }
        });
        if role == Role::Service {
            let res = ldap
                .with_timeout(self.options.op_timeout)
                .simple_bind(&self.config.bind_dn, &self.config.bind_password)
                .await
                .map_err(|e| ConnectError::Unreachable(e.to_string()))?;
            match res.rc {
                0 => {}
                rc if transient(rc) => {
                    return Err(ConnectError::Unreachable(format!(
                        "bind account: result {rc} {}",
                        res.text
                    )));
                }
                rc => {
                    tracing::error!(directory = %self.config.name, rc, text = %res.text, "the directory refused the bind account");
                    return Err(ConnectError::Refused(format!(
                        "directory `{}` refused the bind account `{}` (result {rc}): check its DN and password",
                        self.config.name, self.config.bind_dn
                    )));
                }
            }
        }
        Ok(ldap)
    }

    /// A connection of `role` and the permit that holds its place in the pool.
    async fn checkout(&self, role: Role) -> Result<(Ldap, SemaphorePermit<'_>), AuthError> {
        let pool = self.pool(role);
        let permit = pool
            .permits
            .acquire()
            .await
            .map_err(|_| AuthError::Unavailable("shutting down".into()))?;
        let ldap = match pool.take_idle() {
            Some(l) => l,
            None => self.connect(role).await?,
        };
        Ok((ldap, permit))
    }

    /// Searches with a service connection; retried once on a fresh connection when the
    /// connection fails. An absent base is an empty result.
    async fn search(
        &self,
        base: &str,
        scope: Scope,
        filter: &str,
        attrs: &[String],
        paged: bool,
    ) -> Result<Vec<SearchEntry>, AuthError> {
        let mut last = String::new();
        for _ in 0..2 {
            let (mut ldap, _permit) = self.checkout(Role::Service).await?;
            let outcome = if paged {
                let adapters: Vec<Box<dyn Adapter<'_, String, Vec<String>>>> = vec![
                    Box::new(EntriesOnly::new()),
                    Box::new(PagedResults::new(self.config.page_size)),
                ];
                run_stream(
                    &mut ldap,
                    adapters,
                    base,
                    scope,
                    filter,
                    attrs,
                    self.options.op_timeout,
                )
                .await
            } else {
                let adapters: Vec<Box<dyn Adapter<'_, String, Vec<String>>>> =
                    vec![Box::new(EntriesOnly::new())];
                run_stream(
                    &mut ldap,
                    adapters,
                    base,
                    scope,
                    filter,
                    attrs,
                    self.options.op_timeout,
                )
                .await
            };
            match outcome {
                Ok((entries, 0)) | Ok((entries, 32)) => {
                    self.service.put(ldap);
                    return entries
                        .into_iter()
                        .map(construct)
                        .collect::<Result<Vec<_>, _>>();
                }
                Ok((_, rc)) if transient(rc) => last = format!("result {rc}"),
                Ok((_, rc)) => {
                    self.service.put(ldap);
                    return Err(AuthError::Config(format!(
                        "directory `{}` refused a search under `{base}` (result {rc})",
                        self.config.name
                    )));
                }
                Err(e) => last = e,
            }
            // The connection failed: drop it and try a fresh one.
        }
        Err(AuthError::Unavailable(format!(
            "directory `{}` failed during a search: {last}",
            self.config.name
        )))
    }

    /// A simple bind as `dn` with `password` on a bind connection.
    async fn bind_user(&self, dn: &str, password: &str) -> Result<(), AuthError> {
        let mut last = String::new();
        for _ in 0..2 {
            let (mut ldap, _permit) = self.checkout(Role::Bind).await?;
            match ldap
                .with_timeout(self.options.op_timeout)
                .simple_bind(dn, password)
                .await
            {
                Ok(res) if res.rc == 0 => {
                    self.binds.put(ldap);
                    return Ok(());
                }
                Ok(res) if transient(res.rc) => last = format!("result {}", res.rc),
                Ok(res) => {
                    self.binds.put(ldap);
                    return Err(bind_refusal(res.rc, &res.text));
                }
                Err(e) => last = e.to_string(),
            }
        }
        Err(AuthError::Unavailable(format!(
            "directory `{}` failed during a bind: {last}",
            self.config.name
        )))
    }

    /// Drops every pooled connection (after the directory went away, for instance).
    pub fn reset(&self) {
        self.service.clear();
        self.binds.clear();
    }

    /// Finds the one user entry a typed name denotes.
    async fn find_user(&self, name: &LoginName) -> Result<Option<SearchEntry>, AuthError> {
        let filter = self.config.user_filter_for(name);
        let mut found = self
            .search(
                &self.config.base_dn,
                Scope::Subtree,
                &filter,
                &self.config.user_attrs(),
                false,
            )
            .await?;
        match found.len() {
            0 => Ok(None),
            1 => Ok(found.pop()),
            n => {
                tracing::warn!(directory = %self.config.name, user = %name.user(), matches = n, "user name is ambiguous");
                Ok(None)
            }
        }
    }

    /// Checks a password and resolves the user. The password was checked for emptiness by the
    /// caller.
    pub async fn authenticate(
        &self,
        name: &LoginName,
        password: &str,
    ) -> Result<DirectoryUser, AuthError> {
        let Some(entry) = self.find_user(name).await? else {
            tracing::info!(directory = %self.config.name, user = %name.user(), "login refused: unknown user");
            return Err(AuthError::WrongCredentials);
        };
        if let Err(e) = self.bind_user(&entry.dn, password).await {
            if matches!(e, AuthError::WrongCredentials) {
                tracing::info!(directory = %self.config.name, user = %name.user(), "login refused: wrong password");
            }
            return Err(e);
        }
        self.resolve(entry).await
    }

    /// Resolves a user without a password (read with the bind account).
    pub async fn lookup(&self, name: &LoginName) -> Result<DirectoryUser, AuthError> {
        let entry = self.find_user(name).await?.ok_or_else(|| {
            AuthError::NotFound(format!(
                "user `{}` not found in directory `{}`",
                name.user(),
                self.config.name
            ))
        })?;
        self.resolve(entry).await
    }

    /// Groups (nested, with the primary group) and OUs of a user entry.
    async fn resolve(&self, entry: SearchEntry) -> Result<DirectoryUser, AuthError> {
        let first = |a: &str| -> String {
            entry
                .attrs
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(a))
                .and_then(|(_, v)| v.first().cloned())
                .unwrap_or_default()
        };
        let login = match self.config.kind {
            Kind::ActiveDirectory => first("sAMAccountName"),
            Kind::Ldap => first(&self.config.login_attribute),
        };
        let display_name = match first("displayName") {
            d if d.is_empty() => first("cn"),
            d => d,
        };

        let primary_group = match self.config.kind {
            Kind::ActiveDirectory => self.primary_group(&entry).await?,
            Kind::Ldap => None,
        };
        let direct: Vec<String> = match self.config.membership {
            Membership::MemberOf => attr_values(&entry, "memberOf"),
            Membership::Member => self.groups_with_member(&entry.dn).await?,
        };

        // Breadth first through the nesting: level 1 are the direct groups and the primary group.
        let mut levels: HashMap<String, (u32, String)> = HashMap::new();
        let mut frontier: Vec<String> = direct;
        if let Some(p) = &primary_group {
            frontier.push(p.dn.clone());
        }
        let mut level = 1;
        while !frontier.is_empty() && level <= MAX_GROUP_LEVELS && levels.len() < MAX_GROUPS {
            let mut next = Vec::new();
            for dn in frontier {
                let key = dn.to_lowercase();
                if levels.contains_key(&key) {
                    continue;
                }
                let group = self.group(&dn).await?;
                levels.insert(key, (level, dn.clone()));
                next.extend(group.parents);
            }
            frontier = next;
            level += 1;
        }
        let mut groups = Vec::with_capacity(levels.len());
        for (lvl, dn) in levels.into_values() {
            let name = self.group(&dn).await?.name;
            groups.push(DirectoryGroup {
                name,
                dn,
                level: lvl,
            });
        }
        groups.sort_by(|a, b| a.level.cmp(&b.level).then_with(|| a.name.cmp(&b.name)));

        Ok(DirectoryUser {
            login,
            ous: ous_of(&entry.dn),
            dn: entry.dn,
            display_name,
            primary_group,
            groups,
        })
    }

    /// Name and parent groups of a group, cached.
    async fn group(&self, dn: &str) -> Result<CachedGroup, AuthError> {
        let key = dn.to_lowercase();
        if let Some(g) = self.cached_group(&key) {
            return Ok(g);
        }
        let (name, parents) = match self.config.membership {
            Membership::MemberOf => {
                let attrs = vec!["cn".to_owned(), "memberOf".to_owned()];
                let found = self
                    .search(dn, Scope::Base, "(objectClass=*)", &attrs, false)
                    .await?;
                match found.first() {
                    Some(e) => (
                        attr_values(e, "cn")
                            .into_iter()
                            .next()
                            .unwrap_or_else(|| rdn_value(dn)),
                        attr_values(e, "memberOf"),
                    ),
                    None => (rdn_value(dn), Vec::new()),
                }
            }
            Membership::Member => {
                let attrs = vec!["cn".to_owned()];
                let found = self
                    .search(dn, Scope::Base, "(objectClass=*)", &attrs, false)
                    .await?;
                let name = found
                    .first()
                    .and_then(|e| attr_values(e, "cn").into_iter().next())
                    .unwrap_or_else(|| rdn_value(dn));
                (name, self.groups_with_member(dn).await?)
            }
        };
        let g = CachedGroup {
            name,
            parents,
            at: Instant::now(),
        };
        self.groups
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, g.clone());
        Ok(g)
    }

    fn cached_group(&self, key: &str) -> Option<CachedGroup> {
        let groups = self.groups.lock().unwrap_or_else(|p| p.into_inner());
        groups
            .get(key)
            .filter(|g| g.at.elapsed() < self.options.group_ttl)
            .cloned()
    }

    /// DNs of the groups that list `dn` as a member (groupOfNames, groupOfUniqueNames, AD
    /// group), with paged results.
    async fn groups_with_member(&self, dn: &str) -> Result<Vec<String>, AuthError> {
        let v = filter_value(dn);
        let filter = format!(
            "(&(|(objectClass=groupOfNames)(objectClass=groupOfUniqueNames)(objectClass=group))(|(member={v})(uniqueMember={v})))"
        );
        let found = self
            .search(
                &self.config.base_dn,
                Scope::Subtree,
                &filter,
                &["cn".to_owned()],
                true,
            )
            .await?;
        Ok(found.into_iter().map(|e| e.dn).collect())
    }

    /// Active Directory: the group whose objectSid is the user's domain SID with the user's
    /// primaryGroupID as the last sub-authority.
    async fn primary_group(
        &self,
        entry: &SearchEntry,
    ) -> Result<Option<DirectoryGroup>, AuthError> {
        let Some(rid) = attr_values(entry, "primaryGroupID")
            .first()
            .and_then(|v| v.trim().parse::<u32>().ok())
        else {
            return Ok(None);
        };
        let Some(user_sid) = sid_bytes(entry, "objectSid") else {
            return Ok(None);
        };
        let Some(group_sid) = sid_with_rid(&user_sid, rid) else {
            return Ok(None);
        };
        let cached = self
            .primary
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&group_sid)
            .filter(|(_, _, at)| at.elapsed() < self.options.group_ttl)
            .cloned();
        let (dn, name) = match cached {
            Some((dn, name, _)) => (dn, name),
            None => {
                let filter = format!("(objectSid={})", filter_bytes(&group_sid));
                let found = self
                    .search(
                        &self.config.base_dn,
                        Scope::Subtree,
                        &filter,
                        &["cn".to_owned()],
                        false,
                    )
                    .await?;
                let Some(e) = found.into_iter().next() else {
                    tracing::warn!(directory = %self.config.name, rid, "primary group not found");
                    return Ok(None);
                };
                let name = attr_values(&e, "cn")
                    .into_iter()
                    .next()
                    .unwrap_or_else(|| rdn_value(&e.dn));
                self.primary
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(group_sid, (e.dn.clone(), name.clone(), Instant::now()));
                (e.dn, name)
            }
        };
        Ok(Some(DirectoryGroup { name, dn, level: 1 }))
    }
}

enum ConnectError {
    /// Try the next controller.
    Unreachable(String),
    /// The configuration is wrong: the next controller will say the same.
    Refused(String),
}

/// Runs a search stream to its end: the raw entries and the result code.
async fn run_stream<'a>(
    ldap: &mut Ldap,
    adapters: Vec<Box<dyn Adapter<'a, String, Vec<String>>>>,
    base: &str,
    scope: Scope,
    filter: &str,
    attrs: &[String],
    timeout: Duration,
) -> Result<(Vec<ResultEntry>, u32), String> {
    let mut stream = ldap
        .with_timeout(timeout)
        .streaming_search_with(adapters, base, scope, filter, attrs.to_vec())
        .await
        .map_err(|e| e.to_string())?;
    let mut entries = Vec::new();
    loop {
        match stream.next().await {
            Ok(Some(e)) => entries.push(e),
            Ok(None) => break,
            Err(e) => return Err(e.to_string()),
        }
    }
    let res = stream.finish().await;
    Ok((entries, res.rc))
}

/// Parses an entry; ldap3 panics on malformed BER, which must not take the service down.
fn construct(e: ResultEntry) -> Result<SearchEntry, AuthError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| SearchEntry::construct(e)))
        .map_err(|_| AuthError::Unavailable("the directory sent a malformed entry".into()))
}

/// What a refused user bind means. Active Directory says why in the diagnostic text
/// (`data 775` and the like); other directories answer 49 for every refusal.
fn bind_refusal(rc: u32, text: &str) -> AuthError {
    if rc == 49 {
        let data = text
            .split("data ")
            .nth(1)
            .map(|d| {
                d.chars()
                    .take_while(char::is_ascii_hexdigit)
                    .collect::<String>()
            })
            .unwrap_or_default();
        let reason = match data.as_str() {
            "775" => Some("the account is locked"),
            "533" => Some("the account is disabled"),
            "701" => Some("the account has expired"),
            "532" => Some("the password has expired"),
            "773" => Some("the password must be changed"),
            "530" | "531" => Some("the account may not log in at this time or on this device"),
            _ => None,
        };
        return match reason {
            Some(r) => AuthError::Refused(r.to_owned()),
            None => AuthError::WrongCredentials,
        };
    }
    if rc == 53 {
        return AuthError::Refused(format!(
            "the directory is unwilling to log the user in: {text}"
        ));
    }
    AuthError::Refused(format!("the directory refused the login (result {rc})"))
}

fn attr_values(e: &SearchEntry, attr: &str) -> Vec<String> {
    e.attrs
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(attr))
        .map(|(_, v)| v.clone())
        .unwrap_or_default()
}

/// A SID attribute as bytes, whether it came as binary, as text that happened to be valid
/// UTF-8, or in the string form `S-1-5-21-...`.
fn sid_bytes(e: &SearchEntry, attr: &str) -> Option<Vec<u8>> {
    if let Some((_, v)) = e
        .bin_attrs
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(attr))
    {
        return v.first().cloned();
    }
    let text = attr_values(e, attr).into_iter().next()?;
    if text.starts_with("S-") {
        return sid_from_string(&text);
    }
    Some(text.into_bytes())
}

/// `S-1-5-21-1-2-3-500` -> binary SID.
pub fn sid_from_string(s: &str) -> Option<Vec<u8>> {
    let mut parts = s.strip_prefix("S-")?.split('-');
    let revision: u8 = parts.next()?.parse().ok()?;
    let authority: u64 = parts.next()?.parse().ok()?;
    let subs: Vec<u32> = parts.map(|p| p.parse().ok()).collect::<Option<_>>()?;
    let mut out = vec![revision, u8::try_from(subs.len()).ok()?];
    out.extend_from_slice(&authority.to_be_bytes()[2..]);
    for s in subs {
        out.extend_from_slice(&s.to_le_bytes());
    }
    Some(out)
}

/// Replaces the last sub-authority (the RID) of a binary SID.
fn sid_with_rid(sid: &[u8], rid: u32) -> Option<Vec<u8>> {
    let count = usize::from(*sid.get(1)?);
    if count == 0 || sid.len() != 8 + 4 * count {
        return None;
    }
    let mut out = sid.to_vec();
    out[sid.len() - 4..].copy_from_slice(&rid.to_le_bytes());
    Some(out)
}

/// The value of the first RDN of a DN (a group's name when it has no cn).
fn rdn_value(dn: &str) -> String {
    parse_dn(dn)
        .and_then(|r| r.into_iter().next())
        .map(|r| r.value)
        .unwrap_or_else(|| dn.to_owned())
}

/// The OUs a DN sits in, closest first.
pub fn ous_of(dn: &str) -> Vec<DirectoryOu> {
    let Some(rdns) = parse_dn(dn) else {
        return Vec::new();
    };
    rdns.iter()
        .skip(1)
        .filter(|r| r.attr == "ou")
        .map(|r| DirectoryOu {
            name: r.value.clone(),
            dn: dn[r.start..].to_owned(),
        })
        .collect()
}

/// Every directory a server has sent, connected on first use and replaced when its revision
/// changes.
#[derive(Default)]
pub struct Directories {
    map: Mutex<HashMap<i64, Arc<Directory>>>,
}

impl Directories {
    pub fn get(
        &self,
        cfg: &pb::Directory,
        options: &PoolOptions,
    ) -> Result<Arc<Directory>, AuthError> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(d) = map.get(&cfg.id)
            && d.config.revision == cfg.revision
        {
            return Ok(d.clone());
        }
        let d = Arc::new(Directory::new(
            DirectoryConfig::from_proto(cfg)?,
            options.clone(),
        )?);
        map.insert(cfg.id, d.clone());
        Ok(d)
    }

    /// Ids of the directories in use.
    pub fn ids(&self) -> HashSet<i64> {
        self.map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .copied()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(kind: &str) -> pb::Directory {
        pb::Directory {
            id: 1,
            revision: 1,
            name: "corp".into(),
            kind: kind.into(),
            domain: "ad.example.org".into(),
            urls: vec!["ldaps://dc1:636".into()],
            base_dn: "dc=ad,dc=example,dc=org".into(),
            bind_dn: "cn=svc,dc=ad,dc=example,dc=org".into(),
            bind_password: "pw".into(),
            ..Default::default()
        }
    }

    #[test]
    fn plain_ldap_urls_are_refused_without_starttls() {
        let mut d = config("ad");
        d.urls = vec!["ldap://dc1:389".into()];
        let err = DirectoryConfig::from_proto(&d).expect_err("plain");
        assert!(err.to_string().contains("not TLS"), "{err}");
        d.starttls = true;
        DirectoryConfig::from_proto(&d).expect("starttls");
        let mut d = config("ad");
        d.bind_password.clear();
        assert!(DirectoryConfig::from_proto(&d).is_err());
    }

    #[test]
    fn filters_escape_user_input() {
        let ad = DirectoryConfig::from_proto(&config("ad")).expect("ad");
        let f = |s: &str| ad.user_filter_for(&LoginName::parse(s).expect("name"));
        assert_eq!(f("alice"), "(&(objectClass=user)(sAMAccountName=alice))");
        assert_eq!(
            f("alice@AD.example.org"),
            "(&(objectClass=user)(|(userPrincipalName=alice@AD.example.org)(sAMAccountName=alice)))"
        );
        assert_eq!(
            f("alice@other.org"),
            "(&(objectClass=user)(userPrincipalName=alice@other.org))"
        );
        assert_eq!(f("AD\\bob"), "(&(objectClass=user)(sAMAccountName=bob))");
        assert_eq!(
            f("*)(objectClass=*"),
            "(&(objectClass=user)(sAMAccountName=\\2a\\29\\28objectClass=\\2a))"
        );
        let mut l = config("ldap");
        l.user_filter = "(objectClass=inetOrgPerson)".into();
        let ldap = DirectoryConfig::from_proto(&l).expect("ldap");
        assert_eq!(
            ldap.user_filter_for(&LoginName::parse("carol").expect("n")),
            "(&(uid=carol)(objectClass=inetOrgPerson))"
        );
    }

    #[test]
    fn sids_and_ous() {
        let sid = sid_from_string("S-1-5-21-1004336348-1177238915-682003330-1104").expect("sid");
        assert_eq!(sid.len(), 8 + 4 * 5);
        assert_eq!(&sid[..8], &[1, 5, 0, 0, 0, 0, 0, 5]);
        let group = sid_with_rid(&sid, 513).expect("rid");
        assert_eq!(
            group,
            sid_from_string("S-1-5-21-1004336348-1177238915-682003330-513").expect("sid")
        );
        let ous = ous_of("CN=Alice,OU=Sales,OU=Berlin,DC=ad,DC=example,DC=org");
        assert_eq!(
            ous,
            vec![
                DirectoryOu {
                    name: "Sales".into(),
                    dn: "OU=Sales,OU=Berlin,DC=ad,DC=example,DC=org".into()
                },
                DirectoryOu {
                    name: "Berlin".into(),
                    dn: "OU=Berlin,DC=ad,DC=example,DC=org".into()
                },
            ]
        );
    }

    #[test]
    fn ad_bind_refusals_say_why() {
        let text = "80090308: LdapErr: DSID-0C09042A, comment: AcceptSecurityContext error, data 775, v3839";
        assert_eq!(
            bind_refusal(49, text).to_string(),
            "login refused: the account is locked"
        );
        assert!(matches!(
            bind_refusal(49, "invalid credentials"),
            AuthError::WrongCredentials
        ));
    }
}
