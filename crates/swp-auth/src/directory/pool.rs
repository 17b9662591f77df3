//! The two connection pools of a directory (searches bound with the bind account; users' simple
//! binds), failover across its controllers, and the search and bind operations with their retry
//! on a fresh connection.

use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::time::Duration;

use ldap3::adapters::{Adapter, EntriesOnly, PagedResults};
use ldap3::{Ldap, LdapConnAsync, LdapConnSettings, ResultEntry, Scope, SearchEntry};
use tokio::sync::{Semaphore, SemaphorePermit};

use super::Directory;
use crate::AuthError;

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
pub(super) struct Pool {
    idle: Mutex<Vec<Ldap>>,
    permits: Semaphore,
}

impl Pool {
    pub(super) fn new(size: usize) -> Self {
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
    pub(super) async fn search(
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
    pub(super) async fn bind_user(&self, dn: &str, password: &str) -> Result<(), AuthError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ad_bind_refusals_say_why() {
        let text = "80090308: LdapErr: DSID-0C09042A, comment: AcceptSecurityContext error, data 775, v3839";
        let refused = bind_refusal(49, text);
        assert!(
            matches!(&refused, AuthError::Refused(r) if r == "the account is locked"),
            "{refused:?}"
        );
        // The device reads what a wrong password gives.
        assert_eq!(refused.to_string(), "wrong user name or password");
        assert!(matches!(
            bind_refusal(49, "invalid credentials"),
            AuthError::WrongCredentials
        ));
    }
}
