//! A directory's configuration as a server sends it, validated, and the search filter and
//! attributes it gives for a user.

use ums_proto::swp::v1 as pb;

use crate::AuthError;
use crate::escape::{filter_value, parse_dn};
use crate::login::LoginName;

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

    /// Whether `DOMAIN` of a `DOMAIN\user` login names this directory: its NetBIOS name or its
    /// DNS domain. A directory configured with neither takes any.
    pub fn has_netbios(&self, domain: &str) -> bool {
        (self.netbios.is_empty() && self.domain.is_empty())
            || domain.eq_ignore_ascii_case(&self.netbios)
            || domain.eq_ignore_ascii_case(&self.domain)
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

    pub(super) fn user_attrs(&self) -> Vec<String> {
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
                    "userAccountControl",
                    "msDS-User-Account-Control-Computed",
                    "accountExpires",
                ]
                .map(str::to_owned),
            ),
            Kind::Ldap => attrs.push(self.login_attribute.clone()),
        }
        attrs
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
        assert!(ad.has_netbios("ad.example.org"));
        assert!(!ad.has_netbios("OTHER"));
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
}
