//! Escaping of user input for LDAP search filters (`swp_auth::escape::filter_value`,
//! `filter_bytes`): a user name typed on a device ends up in `(sAMAccountName=...)`.
//!
//! Properties: an escaped value holds no `*`, `(`, `)` or NUL and every backslash starts a
//! two-digit hex escape; unescaping gives the input back; and the filters swp-auth builds from
//! it parse, with the LDAP client's own filter parser, into equality matches whose assertion
//! value is exactly the input's bytes (so no input can widen or restructure a search).

use ldap3::asn1::{OctetString, Sequence, Tag, TagClass};
use swp_auth::escape::{filter_bytes, filter_value};

pub const DICTIONARY: &[&[u8]] = &[
    b"*",
    b"(",
    b")",
    b"\\",
    b"\0",
    b"\\2a",
    b"\\5c",
    b")(uid=*",
    b"|",
    b"&",
    b"!",
    b"=",
    b">=",
    b"~=",
    b":dn:",
    b"@",
    b"\xc3\xbc",
];

/// Undoes RFC 4515 escaping; `None` when a backslash does not start two hex digits.
fn unescape(escaped: &str) -> Option<Vec<u8>> {
    let b = escaped.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            if !hex.bytes().all(|c| c.is_ascii_hexdigit()) {
                return None;
            }
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Some(out)
}

/// The (attribute, value) of an equality match.
fn equality(tag: &Tag) -> Option<(&[u8], &[u8])> {
    match tag {
        Tag::Sequence(Sequence {
            class: TagClass::Context,
            id: 3,
            inner,
        }) => match inner.as_slice() {
            [
                Tag::OctetString(OctetString { inner: attr, .. }),
                Tag::OctetString(OctetString { inner: value, .. }),
            ] => Some((attr, value)),
            _ => None,
        },
        _ => None,
    }
}

/// The items of an `(|...)` or `(&...)` filter.
fn items(tag: &Tag, id: u64) -> Option<&[Tag]> {
    match tag {
        Tag::Sequence(Sequence {
            class: TagClass::Context,
            id: got,
            inner,
        }) if *got == id => Some(inner),
        _ => None,
    }
}

fn check_escaped(escaped: &str, raw: &[u8]) {
    assert!(!escaped.contains(['*', '(', ')', '\0']), "{escaped:?}");
    assert_eq!(unescape(escaped).as_deref(), Some(raw), "{escaped:?}");
}

pub fn fuzz(data: &[u8]) {
    let user = crate::text(data);
    let escaped = filter_value(&user);
    check_escaped(&escaped, user.as_bytes());

    // A login as swp-auth searches it on generic LDAP.
    let filter = format!("(uid={escaped})");
    let tag = ldap3::parse_filter(&filter).unwrap_or_else(|()| panic!("{filter:?} must parse"));
    assert_eq!(
        equality(&tag),
        Some((&b"uid"[..], user.as_bytes())),
        "{filter:?}"
    );

    // And on Active Directory, by account name or principal name.
    let upn = filter_value(&format!("{user}@ad.example.org"));
    let filter = format!("(|(sAMAccountName={escaped})(userPrincipalName={upn}))");
    let tag = ldap3::parse_filter(&filter).unwrap_or_else(|()| panic!("{filter:?} must parse"));
    let or = items(&tag, 1).unwrap_or_else(|| panic!("{filter:?} is an or"));
    assert_eq!(or.len(), 2, "{filter:?}");
    assert_eq!(
        equality(&or[0]),
        Some((&b"sAMAccountName"[..], user.as_bytes()))
    );
    let upn_raw = format!("{user}@ad.example.org");
    assert_eq!(
        equality(&or[1]),
        Some((&b"userPrincipalName"[..], upn_raw.as_bytes()))
    );

    // Binary values (a group's objectSid) are escaped byte by byte.
    let escaped = filter_bytes(data);
    assert_eq!(escaped.len(), 3 * data.len());
    check_escaped(&escaped, data);
    let filter = format!("(objectSid={escaped})");
    let tag = ldap3::parse_filter(&filter).unwrap_or_else(|()| panic!("{filter:?} must parse"));
    assert_eq!(equality(&tag), Some((&b"objectSid"[..], data)));
}
