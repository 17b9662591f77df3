//! Unit ids that devices register with (`ums_domain::normalize_unit_id`).
//!
//! Properties: a normalised id is idempotent, 1 to 64 characters of `[A-Za-z0-9._:-]`; a MAC
//! address in any accepted spelling becomes its 12 upper-case hex digits; any other id is the
//! input without surrounding whitespace; an input is refused only when it is empty, too long or
//! holds a character outside the set.

use ums_domain::normalize_unit_id;
use ums_domain::validate::MAX_UNIT_ID_LEN;

pub const DICTIONARY: &[&[u8]] = &[
    b"aa:bb:cc:dd:ee:ff",
    b"AA-BB-CC-DD-EE-FF",
    b"aabbccddeeff",
    b"tc-0042.lab",
    b"_",
    b" ",
    b"\xc3\xa4",
];

fn allowed(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-')
}

/// The 12 hex digits of a MAC address as the catalogue of spellings defines it.
fn mac(id: &str) -> Option<String> {
    let digits: String = match id.len() {
        12 => id.to_owned(),
        17 => {
            let sep = id.as_bytes()[2];
            if !matches!(sep, b':' | b'-') {
                return None;
            }
            let b = id.as_bytes();
            if (0..17).filter(|i| i % 3 == 2).any(|i| b[i] != sep) {
                return None;
            }
            (0..17)
                .filter(|i| i % 3 != 2)
                .map(|i| char::from(b[i]))
                .collect()
        }
        _ => return None,
    };
    (digits.len() == 12 && digits.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| digits.to_ascii_uppercase())
}

pub fn fuzz(data: &[u8]) {
    let raw = crate::text(data);
    let trimmed = raw.trim();
    match normalize_unit_id(&raw) {
        Ok(id) => {
            assert_eq!(normalize_unit_id(&id).as_ref(), Ok(&id), "idempotent");
            assert!(!id.is_empty() && id.len() <= MAX_UNIT_ID_LEN, "{id:?}");
            assert!(id.chars().all(allowed), "{id:?}");
            match mac(trimmed) {
                Some(digits) => assert_eq!(id, digits),
                None => assert_eq!(id, trimmed),
            }
        }
        Err(e) => {
            assert!(!e.0.is_empty());
            assert!(
                trimmed.is_empty()
                    || trimmed.chars().count() > MAX_UNIT_ID_LEN
                    || !trimmed.chars().all(allowed),
                "{trimmed:?} refused: {e}"
            );
        }
    }
}
