//! Distinguished names: escaping of values for DNs (`swp_auth::escape::dn_value`) and the DN
//! parser (`swp_auth::escape::parse_dn`) that reads the DNs a directory returns and the base DN
//! an administrator configures.
//!
//! Properties: an escaped or quoted value put into a DN parses back to itself; a DN that parses yields
//! RDNs whose offsets point at their own text and whose tails parse to the rest of the list
//! (the OU chain is cut from them), written out again with escaped values it parses to the same
//! RDNs, and an RDN put before or after it is found there; only a blank DN has no RDNs.

use swp_auth::escape::{Rdn, dn_value, parse_dn};

pub const DICTIONARY: &[&[u8]] = &[
    b"cn=",
    b",ou=",
    b",dc=",
    b"\\",
    b"\\,",
    b"\\2c",
    b"\\20",
    b"\"",
    b"+",
    b";",
    b"=",
    b"#",
    b" ",
    b"\\ ",
    b"1.2.840.113556.1.4.1=",
    b"\xc3\xa9",
];

fn pairs(rdns: &[Rdn]) -> Vec<(&str, &str)> {
    rdns.iter()
        .map(|r| (r.attr.as_str(), r.value.as_str()))
        .collect()
}

fn shifted(rdns: &[Rdn], by: isize) -> Vec<Rdn> {
    rdns.iter()
        .map(|r| Rdn {
            start: r.start.checked_add_signed(by).expect("offset in range"),
            ..r.clone()
        })
        .collect()
}

pub fn fuzz(data: &[u8]) {
    let text = crate::text(data);

    // A value escaped into a DN comes back unchanged.
    let dn = format!("cn={},dc=example", dn_value(&text));
    let rdns = parse_dn(&dn).unwrap_or_else(|| panic!("{dn:?} must parse"));
    assert_eq!(pairs(&rdns), [("cn", &*text), ("dc", "example")], "{dn:?}");
    assert_eq!(rdns[1].start, dn.len() - "dc=example".len());

    // A quoted value (RFC 2253) is taken literally up to its closing quote.
    if !text.contains(['"', '\\']) {
        let dn = format!("cn=\"{text}\",dc=example");
        let rdns = parse_dn(&dn).unwrap_or_else(|| panic!("{dn:?} must parse"));
        assert_eq!(pairs(&rdns), [("cn", &*text), ("dc", "example")], "{dn:?}");
    }

    // The input as a DN.
    let dn = &*text;
    let Some(rdns) = parse_dn(dn) else {
        return;
    };
    if rdns.is_empty() {
        assert!(dn.trim_matches(' ').is_empty(), "{dn:?} has no RDN");
        return;
    }
    let mut previous = None;
    for (i, rdn) in rdns.iter().enumerate() {
        assert!(
            previous.is_none_or(|p| p < rdn.start),
            "{dn:?}: offsets grow"
        );
        previous = Some(rdn.start);
        let tail = dn
            .get(rdn.start..)
            .unwrap_or_else(|| panic!("{dn:?}: {} is no character boundary", rdn.start));
        assert!(
            tail.get(..rdn.attr.len())
                .is_some_and(|a| a.eq_ignore_ascii_case(&rdn.attr)),
            "{dn:?}: RDN {i} at {} is not `{}`",
            rdn.start,
            rdn.attr
        );
        let start = isize::try_from(rdn.start).expect("small");
        assert_eq!(
            parse_dn(tail),
            Some(shifted(&rdns[i..], -start)),
            "{dn:?}: the DN from RDN {i} on"
        );
    }

    // Written out again, escaped, it reads the same.
    let written: Vec<String> = rdns
        .iter()
        .map(|r| format!("{}={}", r.attr, dn_value(&r.value)))
        .collect();
    let written = written.join(",");
    let again = parse_dn(&written).unwrap_or_else(|| panic!("{dn:?} written as {written:?}"));
    assert_eq!(pairs(&again), pairs(&rdns), "{dn:?} written as {written:?}");

    // An RDN added before or after is one more RDN, the others unchanged.
    let after = format!("{dn},dc=x");
    let mut want = rdns.clone();
    want.push(Rdn {
        attr: "dc".into(),
        value: "x".into(),
        start: dn.len() + 1,
    });
    assert_eq!(parse_dn(&after), Some(want), "{after:?}");
    let before = format!("dc=x,{dn}");
    let mut want = vec![Rdn {
        attr: "dc".into(),
        value: "x".into(),
        start: 0,
    }];
    want.extend(shifted(&rdns, 5));
    assert_eq!(parse_dn(&before), Some(want), "{before:?}");
}
