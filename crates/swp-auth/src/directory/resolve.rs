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

#[cfg(test)]
mod tests {
    use super::*;

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
