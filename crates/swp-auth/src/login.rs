//! What a user typed on the device: the login name in its three spellings, and the password,
//! checked before anything reaches the directory.

use crate::AuthError;

/// Longest user name accepted (userPrincipalName allows 1024, nobody types that much).
const MAX_NAME: usize = 256;
/// Longest password accepted, in bytes.
const MAX_PASSWORD: usize = 1024;

/// A login name as typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginName {
    /// `alice`
    Plain(String),
    /// `alice@ad.example.org`: user part and domain.
    Upn { user: String, domain: String },
    /// `AD\alice`: NetBIOS domain and user part.
    DownLevel { domain: String, user: String },
}

impl LoginName {
    /// Parses a typed name. Surrounding spaces are dropped; an empty name, control characters
    /// and overlong names are refused. Characters that mean something to LDAP are allowed here
    /// and escaped wherever the name is used.
    pub fn parse(input: &str) -> Result<Self, AuthError> {
        let name = input.trim();
        if name.is_empty() {
            return Err(AuthError::Invalid("user name is empty".into()));
        }
        if name.chars().count() > MAX_NAME {
            return Err(AuthError::Invalid(format!(
                "user name is longer than {MAX_NAME} characters"
            )));
        }
        if name.chars().any(char::is_control) {
            return Err(AuthError::Invalid(
                "user name contains a control character".into(),
            ));
        }
        if let Some((domain, user)) = name.split_once('\\')
            && !domain.is_empty()
            && !user.is_empty()
            && !domain.contains(['@', '\\'])
        {
            return Ok(Self::DownLevel {
                domain: domain.to_owned(),
                user: user.to_owned(),
            });
        }
        if let Some((user, domain)) = name.rsplit_once('@')
            && !user.is_empty()
            && !domain.is_empty()
        {
            return Ok(Self::Upn {
                user: user.to_owned(),
                domain: domain.to_owned(),
            });
        }
        Ok(Self::Plain(name.to_owned()))
    }

    /// The user part, without any domain.
    pub fn user(&self) -> &str {
        match self {
            Self::Plain(u) | Self::Upn { user: u, .. } | Self::DownLevel { user: u, .. } => u,
        }
    }

    /// The name as typed, normalised: what rate limits count by (lowercase).
    pub fn limit_key(&self) -> String {
        self.user().to_lowercase()
    }
}

/// Checks a password before any bind. An empty password is refused here because a simple bind
/// with a DN and an empty password is an *unauthenticated* bind (RFC 4513 section 5.1.2), which
/// many directories answer with success: it must never count as a login.
pub fn check_password(password: &str) -> Result<(), AuthError> {
    if password.is_empty() {
        return Err(AuthError::Invalid("password is empty".into()));
    }
    if password.len() > MAX_PASSWORD {
        return Err(AuthError::Invalid(format!(
            "password is longer than {MAX_PASSWORD} bytes"
        )));
    }
    if password.contains('\0') {
        return Err(AuthError::Invalid(
            "password contains a NUL character".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_spellings() {
        assert_eq!(
            LoginName::parse(" alice ").expect("plain"),
            LoginName::Plain("alice".into())
        );
        assert_eq!(
            LoginName::parse("alice@ad.example.org").expect("upn"),
            LoginName::Upn {
                user: "alice".into(),
                domain: "ad.example.org".into()
            }
        );
        assert_eq!(
            LoginName::parse("AD\\alice").expect("down-level"),
            LoginName::DownLevel {
                domain: "AD".into(),
                user: "alice".into()
            }
        );
        // Odd shapes stay plain names and are escaped where used.
        assert_eq!(
            LoginName::parse("*").expect("star"),
            LoginName::Plain("*".into())
        );
        assert_eq!(
            LoginName::parse("@x").expect("at"),
            LoginName::Plain("@x".into())
        );
    }

    #[test]
    fn refusals() {
        assert!(LoginName::parse("  ").is_err());
        assert!(LoginName::parse("a\nb").is_err());
        assert!(LoginName::parse(&"a".repeat(300)).is_err());
        assert!(check_password("").is_err());
        assert!(check_password("a\0").is_err());
        assert!(check_password("secret").is_ok());
    }
}
