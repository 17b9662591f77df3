//! Escaping of user input for LDAP filters (RFC 4515) and distinguished names (RFC 4514), and
//! parsing of distinguished names into their RDNs.
//!
//! Nothing a user types ever reaches a filter or a DN unescaped: a user name of `*` or
//! `alice)(uid=*` matches only an entry literally named so.

/// Escapes a value for use inside an LDAP search filter (RFC 4515 section 3): `*`, `(`, `)`,
/// `\` and NUL become `\2a`, `\28`, `\29`, `\5c` and `\00`. Other characters, UTF-8 included,
/// are valid in a filter as they are.
pub fn filter_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 8);
    for c in value.chars() {
        match c {
            '*' => out.push_str("\\2a"),
            '(' => out.push_str("\\28"),
            ')' => out.push_str("\\29"),
            '\\' => out.push_str("\\5c"),
            '\0' => out.push_str("\\00"),
            c => out.push(c),
        }
    }
    out
}

/// Escapes binary data for a filter: every byte as `\xx` (for `objectSid` and the like).
pub fn filter_bytes(value: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(value.len() * 3);
    for b in value {
        let _ = write!(out, "\\{b:02x}");
    }
    out
}

/// Escapes an attribute value for use in a distinguished name (RFC 4514 section 2.4): `,`, `+`,
/// `"`, `\`, `<`, `>`, `;` and `=` anywhere, `#` and space at the start, space at the end are
/// escaped with a backslash; NUL becomes `\00`.
pub fn dn_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 8);
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        match c {
            ',' | '+' | '"' | '\\' | '<' | '>' | ';' | '=' => {
                out.push('\\');
                out.push(c);
            }
            '#' if i == 0 => out.push_str("\\#"),
            ' ' if i == 0 || i == last => out.push_str("\\ "),
            '\0' => out.push_str("\\00"),
            c => out.push(c),
        }
    }
    out
}

/// One relative distinguished name: attribute type (lowercase) and unescaped value. Of a
/// multi-valued RDN (`a=1+b=2`) only the first type and value are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rdn {
    pub attr: String,
    pub value: String,
    /// Byte offset of this RDN in the DN it was parsed from.
    pub start: usize,
}

/// Splits a DN into its RDNs, honouring backslash escapes (`\,` and `\2c`) and quoted values.
/// Returns `None` for a malformed DN.
pub fn parse_dn(dn: &str) -> Option<Vec<Rdn>> {
    let mut out = Vec::new();
    let bytes = dn.as_bytes();
    let mut start = 0;
    let mut i = 0;
    let mut in_quotes = false;
    while i <= bytes.len() {
        let at_end = i == bytes.len();
        if !at_end && bytes[i] == b'\\' {
            // A backslash at the very end escapes nothing: the DN is cut off.
            if i + 1 == bytes.len() {
                return None;
            }
            i += 2;
            continue;
        }
        if !at_end && bytes[i] == b'"' {
            in_quotes = !in_quotes;
        }
        if at_end || (!in_quotes && (bytes[i] == b',' || bytes[i] == b';')) {
            let part = dn.get(start..i.min(bytes.len()))?;
            let lead = part.len() - part.trim_start_matches(' ').len();
            let part = part.trim_start_matches(' ');
            if part.trim_end_matches(' ').is_empty() {
                if at_end && out.is_empty() {
                    return Some(out);
                }
                return None;
            }
            let (attr, value) = part.split_once('=')?;
            let attr = attr.trim_matches(' ');
            if !is_attribute_type(attr) {
                return None;
            }
            let value = first_value(value);
            out.push(Rdn {
                attr: attr.to_ascii_lowercase(),
                value: unescape_dn_value(trim_unescaped(value))?,
                start: start + lead,
            });
            start = i + 1;
        }
        i += 1;
    }
    if in_quotes {
        return None;
    }
    Some(out)
}

/// An attribute type as RFC 4514 writes it: a name (`cn`, `msDS-PrincipalName`) or a numeric
/// OID (`2.5.4.3`).
fn is_attribute_type(attr: &str) -> bool {
    let bytes = attr.as_bytes();
    match bytes.first() {
        Some(b) if b.is_ascii_alphabetic() => bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-'),
        Some(b) if b.is_ascii_digit() => attr.split('.').all(|n| {
            !n.is_empty()
                && n.bytes().all(|b| b.is_ascii_digit())
                && (n == "0" || !n.starts_with('0'))
        }),
        _ => false,
    }
}

/// The first value of a possibly multi-valued RDN value (`a+b=c`): up to a `+` that is neither
/// escaped nor quoted.
fn first_value(v: &str) -> &str {
    let bytes = v.as_bytes();
    let mut i = 0;
    let mut in_quotes = false;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'"' => {
                in_quotes = !in_quotes;
                i += 1;
            }
            b'+' if !in_quotes => return &v[..i],
            _ => i += 1,
        }
    }
    v
}

/// Trims spaces around a value, keeping a trailing space that is escaped (`\ `).
fn trim_unescaped(v: &str) -> &str {
    let mut v = v.trim_start_matches(' ');
    while v.ends_with(' ') {
        let body = &v[..v.len() - 1];
        let backslashes = body.bytes().rev().take_while(|b| *b == b'\\').count();
        if backslashes % 2 == 1 {
            break;
        }
        v = body;
    }
    v
}

/// Undoes RFC 4514 escaping (`\,`, `\2C`) and surrounding quotes.
fn unescape_dn_value(v: &str) -> Option<String> {
    let v = v
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(v);
    let mut bytes = Vec::with_capacity(v.len());
    let raw = v.as_bytes();
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'\\' {
            let next = *raw.get(i + 1)?;
            // Two hex digits exactly: `u8::from_str_radix` alone would also take "+0".
            let hex = raw
                .get(i + 1..i + 3)
                .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
                .and_then(|h| {
                    std::str::from_utf8(h)
                        .ok()
                        .and_then(|h| u8::from_str_radix(h, 16).ok())
                });
            match hex {
                Some(b) => {
                    bytes.push(b);
                    i += 3;
                }
                None => {
                    bytes.push(next);
                    i += 2;
                }
            }
        } else {
            bytes.push(raw[i]);
            i += 1;
        }
    }
    String::from_utf8(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_values_are_escaped() {
        assert_eq!(filter_value("alice"), "alice");
        assert_eq!(filter_value("*"), "\\2a");
        assert_eq!(
            filter_value("alice)(uid=*))(|(uid=*"),
            "alice\\29\\28uid=\\2a\\29\\29\\28|\\28uid=\\2a"
        );
        assert_eq!(filter_value("a\\b\0"), "a\\5cb\\00");
        assert_eq!(filter_value("jürgen"), "jürgen");
        assert_eq!(filter_bytes(&[1, 0xff, 0x2a]), "\\01\\ff\\2a");
    }

    #[test]
    fn dn_values_are_escaped() {
        assert_eq!(dn_value("Smith, John"), "Smith\\, John");
        assert_eq!(dn_value("#1 a=b+c"), "\\#1 a\\=b\\+c");
        assert_eq!(dn_value(" x "), "\\ x\\ ");
        assert_eq!(dn_value("<x>;\"y\"\\"), "\\<x\\>\\;\\\"y\\\"\\\\");
        assert_eq!(dn_value("a\0b"), "a\\00b");
    }

    #[test]
    fn dns_parse_with_escapes() {
        let rdns = parse_dn("CN=Smith\\, John,OU=Sales,OU=Berlin, DC=ad,DC=example").expect("dn");
        let pairs: Vec<(&str, &str)> = rdns
            .iter()
            .map(|r| (r.attr.as_str(), r.value.as_str()))
            .collect();
        assert_eq!(
            pairs,
            [
                ("cn", "Smith, John"),
                ("ou", "Sales"),
                ("ou", "Berlin"),
                ("dc", "ad"),
                ("dc", "example")
            ]
        );
        assert_eq!(
            &"CN=Smith\\, John,OU=Sales,OU=Berlin, DC=ad,DC=example"[rdns[1].start..],
            "OU=Sales,OU=Berlin, DC=ad,DC=example"
        );
        let hex = parse_dn("cn=a\\2Cb,dc=x").expect("dn");
        assert_eq!(hex[0].value, "a,b");
        // An escaped `+` followed by a digit is not a hex escape.
        assert_eq!(parse_dn("cn=\\+0,dc=x").expect("dn")[0].value, "+0");
        // A quoted `+` belongs to the value, it does not start a second one.
        assert_eq!(parse_dn("cn=\"a+b\",dc=x").expect("dn")[0].value, "a+b");
        assert_eq!(parse_dn("cn=a+sn=b,dc=x").expect("dn")[0].value, "a");
        assert_eq!(parse_dn("").expect("empty"), vec![]);
        assert!(parse_dn("cn=a,,dc=x").is_none());
        // A trailing backslash used to end the parse early, dropping the last RDN.
        assert!(parse_dn("cn=a,dc=x\\").is_none());
        assert!(parse_dn("dc=x\\").is_none());
        assert!(parse_dn("nonsense").is_none());
        // The attribute type is a name or a numeric OID, nothing else.
        assert_eq!(parse_dn("2.5.4.3=a").expect("oid")[0].attr, "2.5.4.3");
        assert_eq!(parse_dn(" msDS-x = a").expect("name")[0].attr, "msds-x");
        for bad in [
            "=x,dc=y",
            "c\\n=x",
            "a b=c",
            "cn\"x=y\"",
            "1.02=x",
            "1..2=x",
            "-a=b",
        ] {
            assert!(parse_dn(bad).is_none(), "{bad} must be refused");
        }
    }

    proptest::proptest! {
        #[test]
        fn escaped_dn_values_round_trip(v in "\\PC{0,20}") {
            let dn = format!("cn={},dc=example", dn_value(&v));
            let rdns = parse_dn(&dn).expect("parses");
            proptest::prop_assert_eq!(rdns.len(), 2);
            proptest::prop_assert_eq!(&rdns[0].value, &v);
        }

        #[test]
        fn escaped_filter_values_have_no_special_characters(v in "\\PC{0,30}") {
            let e = filter_value(&v);
            proptest::prop_assert!(!e.contains(['*', '(', ')', '\0']));
            // Every backslash starts a two-digit hex escape.
            let bytes = e.as_bytes();
            for (i, b) in bytes.iter().enumerate() {
                if *b == b'\\' {
                    proptest::prop_assert!(bytes.len() > i + 2);
                    proptest::prop_assert!(bytes[i + 1].is_ascii_hexdigit() && bytes[i + 2].is_ascii_hexdigit());
                }
            }
        }
    }
}
