//! Resolving a user: the search for the entry a typed name denotes, the password check, nested
//! groups (cached), the Active Directory primary group from `primaryGroupID` and `objectSid`, and
//! the OUs of the entry's DN.

use std::collections::HashMap;
use std::time::Instant;

use ldap3::{Scope, SearchEntry};
use ums_domain::{DirectoryGroup, DirectoryOu, DirectoryUser};

use super::{Directory, Kind, Membership};
use crate::AuthError;
use crate::escape::{filter_bytes, filter_value, parse_dn};
use crate::login::LoginName;

/// How long nested groups stay deep at most; deeper nesting is ignored.
const MAX_GROUP_LEVELS: u32 = 16;
/// Most groups resolved for one user.
const MAX_GROUPS: usize = 2_000;

#[derive(Clone)]
pub(super) struct CachedGroup {
    name: String,
    parents: Vec<String>,
    at: Instant,
}

impl Directory {
    /// Finds the one user entry a typed name denotes.
    async fn find_user(&self, name: &LoginName) -> Result<Option<SearchEntry>, AuthError> {
        if let LoginName::DownLevel { domain, .. } = name
            && !self.config.has_netbios(domain)
        {
            // The server picks the directory by this name; a caller that sent another
            // directory's still finds nobody, like an unknown user.
            tracing::info!(directory = %self.config.name, domain = %domain, user = %name.user(), "the NetBIOS domain is not this directory's");
            return Ok(None);
        }
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
    ///
    /// An account the directory says may not log in (disabled, locked, expired) is refused
    /// before its password is tried; the log names the user and the state, the caller gets
    /// [`AuthError::Refused`], which reads like a wrong password.
    pub async fn authenticate(
        &self,
        name: &LoginName,
        password: &str,
    ) -> Result<DirectoryUser, AuthError> {
        let Some(entry) = self.find_user(name).await? else {
            tracing::info!(directory = %self.config.name, user = %name.user(), "login refused: unknown user");
            return Err(AuthError::WrongCredentials);
        };
        if self.config.kind == Kind::ActiveDirectory
            && let Some(state) = account_state(&entry, filetime_now())
        {
            tracing::warn!(directory = %self.config.name, user = %name.user(), dn = %entry.dn, state, "login refused: the account is {state}");
            return Err(AuthError::Refused(state.to_owned()));
        }
        if let Err(e) = self.bind_user(&entry.dn, password).await {
            match &e {
                AuthError::WrongCredentials => {
                    tracing::info!(directory = %self.config.name, user = %name.user(), "login refused: wrong password");
                }
                AuthError::Refused(state) => {
                    tracing::warn!(directory = %self.config.name, user = %name.user(), dn = %entry.dn, state = %state, "login refused by the directory: {state}");
                }
                _ => {}
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
            Kind::ActiveDirectory => self.primary_group(&entry, &login).await?,
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
        let base = self.group_base().await;
        let found = self
            .search(&base, Scope::Subtree, &filter, &["cn".to_owned()], true)
            .await?;
        Ok(found.into_iter().map(|e| e.dn).collect())
    }

    /// Where groups are searched: the naming context that holds the base DN (the domain's
    /// root in Active Directory), so groups outside a base DN narrowed to the users' OU are
    /// found. Asked once from the RootDSE; when it does not answer, the base DN's `dc=`
    /// components, else the base DN itself.
    async fn group_base(&self) -> String {
        if let Some(root) = self.root.lock().unwrap_or_else(|p| p.into_inner()).clone() {
            return root;
        }
        let attrs = vec![
            "defaultNamingContext".to_owned(),
            "namingContexts".to_owned(),
        ];
        match self
            .search("", Scope::Base, "(objectClass=*)", &attrs, false)
            .await
        {
            Ok(found) => {
                let candidates: Vec<String> = found
                    .first()
                    .map(|e| {
                        let mut c = attr_values(e, "defaultNamingContext");
                        c.extend(attr_values(e, "namingContexts"));
                        c
                    })
                    .unwrap_or_default();
                let root = naming_context(&self.config.base_dn, &candidates);
                tracing::debug!(directory = %self.config.name, root = %root, "groups are searched from the naming context");
                *self.root.lock().unwrap_or_else(|p| p.into_inner()) = Some(root.clone());
                root
            }
            Err(e) => {
                tracing::debug!(directory = %self.config.name, error = %e, "the RootDSE did not answer: groups are searched from the base DN's domain");
                domain_of(&self.config.base_dn)
            }
        }
    }

    /// Active Directory: the group whose objectSid is the user's domain SID with the user's
    /// primaryGroupID as the last sub-authority, searched from the domain's root.
    ///
    /// A user without a readable `primaryGroupID` or `objectSid` (a bind account not allowed
    /// to read them) logs in without the primary group and the groups it is nested in; the
    /// warning says so, since the settings of those groups are then missing.
    async fn primary_group(
        &self,
        entry: &SearchEntry,
        login: &str,
    ) -> Result<Option<DirectoryGroup>, AuthError> {
        let rid = attr_values(entry, "primaryGroupID");
        let user_sid = sid_bytes(entry, "objectSid");
        let unreadable = match (rid.first(), &user_sid) {
            (None, None) => Some("primaryGroupID and objectSid"),
            (None, Some(_)) => Some("primaryGroupID"),
            (Some(_), None) => Some("objectSid"),
            (Some(_), Some(_)) => None,
        };
        if let Some(attrs) = unreadable {
            tracing::warn!(
                directory = %self.config.name,
                user = %login,
                dn = %entry.dn,
                "the user's {attrs} cannot be read (the bind account may not be allowed to read it): \
                 the primary group and the groups it is nested in are left out of the login"
            );
            return Ok(None);
        }
        let Some(rid) = rid.first().and_then(|v| v.trim().parse::<u32>().ok()) else {
            tracing::warn!(directory = %self.config.name, user = %login, dn = %entry.dn, "the user's primaryGroupID is not a number: the primary group is left out of the login");
            return Ok(None);
        };
        let Some(group_sid) = user_sid.and_then(|sid| sid_with_rid(&sid, rid)) else {
            tracing::warn!(directory = %self.config.name, user = %login, dn = %entry.dn, "the user's objectSid is not a SID: the primary group is left out of the login");
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
                let base = self.group_base().await;
                let found = self
                    .search(&base, Scope::Subtree, &filter, &["cn".to_owned()], false)
                    .await?;
                let Some(e) = found.into_iter().next() else {
                    tracing::warn!(directory = %self.config.name, user = %login, rid, base = %base, "the user's primary group is not found in the domain: it is left out of the login");
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

/// `userAccountControl` bits (MS-ADTS 2.2.16).
const UF_ACCOUNTDISABLE: u32 = 0x2;
const UF_LOCKOUT: u32 = 0x10;
const UF_PASSWORD_EXPIRED: u32 = 0x80_0000;

/// Why an Active Directory account may not log in, from `userAccountControl`,
/// `msDS-User-Account-Control-Computed` (where AD reports a lockout and an expired password)
/// and `accountExpires` (a FILETIME; 0 and the largest value mean never), or `None`.
fn account_state(e: &SearchEntry, now_filetime: i64) -> Option<&'static str> {
    let flags = |attr: &str| {
        attr_values(e, attr)
            .first()
            .and_then(|v| v.trim().parse::<i64>().ok())
            // The attributes are signed 32-bit integers on the wire; the bits are what counts.
            .map_or(0, |v| v as u32)
    };
    let control = flags("userAccountControl") | flags("msDS-User-Account-Control-Computed");
    if control & UF_ACCOUNTDISABLE != 0 {
        return Some("disabled");
    }
    if control & UF_LOCKOUT != 0 {
        return Some("locked");
    }
    let expires = attr_values(e, "accountExpires")
        .first()
        .and_then(|v| v.trim().parse::<i64>().ok())
        .unwrap_or(0);
    if expires > 0 && expires != i64::MAX && expires <= now_filetime {
        return Some("expired");
    }
    if control & UF_PASSWORD_EXPIRED != 0 {
        return Some("password expired");
    }
    None
}

/// Now as a Windows FILETIME: 100 ns intervals since 1601-01-01 UTC.
fn filetime_now() -> i64 {
    const UNIX_EPOCH_AS_FILETIME: i64 = 116_444_736_000_000_000;
    let since_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    UNIX_EPOCH_AS_FILETIME.saturating_add(i64::try_from(since_unix.as_nanos() / 100).unwrap_or(0))
}

/// Normalised RDNs (`attr=value`, lower case), for comparing DNs.
fn dn_key(dn: &str) -> Option<Vec<String>> {
    parse_dn(dn).map(|rdns| {
        rdns.into_iter()
            .map(|r| format!("{}={}", r.attr, r.value.to_lowercase()))
            .collect()
    })
}

/// The longest of the naming contexts the base DN lies in, else the base DN's domain.
fn naming_context(base_dn: &str, candidates: &[String]) -> String {
    let Some(base) = dn_key(base_dn) else {
        return base_dn.to_owned();
    };
    candidates
        .iter()
        .filter_map(|c| dn_key(c).map(|k| (c, k)))
        .filter(|(_, k)| !k.is_empty() && base.ends_with(k))
        .max_by_key(|(_, k)| k.len())
        .map(|(c, _)| c.clone())
        .unwrap_or_else(|| domain_of(base_dn))
}

/// The trailing `dc=` components of a DN (the root of its domain), or the DN itself when it
/// has none.
fn domain_of(dn: &str) -> String {
    let Some(rdns) = parse_dn(dn) else {
        return dn.to_owned();
    };
    let first_dc = rdns
        .iter()
        .rposition(|r| r.attr != "dc")
        .map_or(0, |i| i + 1);
    match rdns.get(first_dc) {
        Some(r) => dn[r.start..].to_owned(),
        None => dn.to_owned(),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(attrs: &[(&str, &str)]) -> SearchEntry {
        SearchEntry {
            dn: "cn=x,dc=ad,dc=example,dc=org".into(),
            attrs: attrs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), vec![(*v).to_owned()]))
                .collect(),
            bin_attrs: HashMap::new(),
        }
    }

    #[test]
    fn account_states() {
        let now = 133_000_000_000_000_000;
        assert_eq!(
            account_state(&entry(&[("userAccountControl", "512")]), now),
            None
        );
        assert_eq!(
            account_state(&entry(&[("userAccountControl", "514")]), now),
            Some("disabled")
        );
        assert_eq!(
            account_state(
                &entry(&[
                    ("userAccountControl", "512"),
                    ("msDS-User-Account-Control-Computed", "16")
                ]),
                now
            ),
            Some("locked")
        );
        let expired = (now - 1).to_string();
        assert_eq!(
            account_state(&entry(&[("accountExpires", &expired)]), now),
            Some("expired")
        );
        let later = (now + 1).to_string();
        assert_eq!(
            account_state(&entry(&[("accountExpires", &later)]), now),
            None
        );
        assert_eq!(account_state(&entry(&[("accountExpires", "0")]), now), None);
        assert_eq!(
            account_state(&entry(&[("accountExpires", "9223372036854775807")]), now),
            None
        );
        assert_eq!(
            account_state(&entry(&[("userAccountControl", "-2147483646")]), now),
            Some("disabled")
        );
        assert!(filetime_now() > now);
    }

    #[test]
    fn groups_are_searched_from_the_naming_context() {
        let contexts = vec![
            "dc=example,dc=org".to_owned(),
            "DC=ad,DC=example,DC=org".to_owned(),
        ];
        assert_eq!(
            naming_context("OU=Staff,OU=Berlin,DC=ad,DC=example,DC=org", &contexts),
            "DC=ad,DC=example,DC=org"
        );
        assert_eq!(
            naming_context("ou=People,dc=example,dc=org", &contexts),
            "dc=example,dc=org"
        );
        // No naming context holds it: the base DN's domain components.
        assert_eq!(
            naming_context("OU=Staff,DC=corp,DC=test", &contexts),
            "DC=corp,DC=test"
        );
        assert_eq!(domain_of("ou=People,o=Example"), "ou=People,o=Example");
        assert_eq!(domain_of("dc=example,dc=org"), "dc=example,dc=org");
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
}
