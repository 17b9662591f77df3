//! Validation helpers for unit ids, names and folder ancestry.

use std::collections::{HashMap, HashSet};

use crate::FolderId;

/// A validation failure; the message names the problem.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct ValidationError(pub String);

/// Maximum length of a unit id.
pub const MAX_UNIT_ID_LEN: usize = 64;
/// Maximum length of an object name.
pub const MAX_NAME_LEN: usize = 255;

/// Returns the 12 hex digits of a MAC address written as `AA:BB:CC:DD:EE:FF`,
/// `aa-bb-cc-dd-ee-ff` or `aabbccddeeff`, or `None` if `raw` is not one.
fn mac_digits(raw: &str) -> Option<String> {
    let bytes = raw.as_bytes();
    let digits: String = match bytes.len() {
        12 => raw.to_owned(),
        17 => {
            let sep = *bytes.get(2)?;
            if sep != b':' && sep != b'-' {
                return None;
            }
            let mut out = String::with_capacity(12);
            for (i, c) in raw.chars().enumerate() {
                if i % 3 == 2 {
                    if c != char::from(sep) {
                        return None;
                    }
                } else {
                    out.push(c);
                }
            }
            out
        }
        _ => return None,
    };
    if digits.len() == 12 && digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        Some(digits.to_ascii_uppercase())
    } else {
        None
    }
}

/// Normalises a unit id (MAC addresses in any of AA:BB:CC:DD:EE:FF /
/// aa-bb-.. / aabbccddeeff become "AABBCCDDEEFF"; other ids: 1..=64 chars of
/// [A-Za-z0-9._:-], kept as given). Errors name the problem.
///
/// Surrounding whitespace is ignored.
pub fn normalize_unit_id(raw: &str) -> Result<String, ValidationError> {
    let id = raw.trim();
    if id.is_empty() {
        return Err(ValidationError("unit id is empty".to_owned()));
    }
    if let Some(mac) = mac_digits(id) {
        return Ok(mac);
    }
    if id.chars().count() > MAX_UNIT_ID_LEN {
        return Err(ValidationError(format!(
            "unit id is longer than {MAX_UNIT_ID_LEN} characters"
        )));
    }
    if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-')))
    {
        return Err(ValidationError(format!(
            "unit id contains invalid character `{}` (allowed: letters, digits, `.`, `_`, `:`, `-`)",
            c.escape_default()
        )));
    }
    Ok(id.to_owned())
}

/// Names of devices, folders, profiles: trimmed, 1..=255 chars, no control
/// characters. `what` names the object in error messages, e.g. `"folder name"`.
pub fn validate_name(what: &str, raw: &str) -> Result<String, ValidationError> {
    let name = raw.trim();
    if name.is_empty() {
        return Err(ValidationError(format!("{what} must not be empty")));
    }
    if name.chars().count() > MAX_NAME_LEN {
        return Err(ValidationError(format!(
            "{what} is longer than {MAX_NAME_LEN} characters"
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(ValidationError(format!(
            "{what} must not contain control characters"
        )));
    }
    Ok(name.to_owned())
}

/// Folder ancestry: `parents` maps folder id -> parent id. Returns
/// `[start, parent, grandparent, ...]`; Err on a cycle or an unknown id.
pub fn folder_chain(
    parents: &HashMap<FolderId, Option<FolderId>>,
    start: FolderId,
) -> Result<Vec<FolderId>, ValidationError> {
    let mut chain = Vec::new();
    let mut visited = HashSet::new();
    let mut current = start;
    loop {
        if !visited.insert(current) {
            return Err(ValidationError(format!(
                "folder cycle detected at folder {current}"
            )));
        }
        let Some(parent) = parents.get(&current) else {
            return Err(match chain.last() {
                None => ValidationError(format!("unknown folder {current}")),
                Some(child) => {
                    ValidationError(format!("unknown parent folder {current} of folder {child}"))
                }
            });
        };
        chain.push(current);
        match parent {
            Some(parent) => current = *parent,
            None => return Ok(chain),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_are_normalised() {
        for raw in [
            "AA:BB:CC:DD:EE:FF",
            "aa:bb:cc:dd:ee:ff",
            "aa-bb-cc-dd-ee-ff",
            "aabbccddeeff",
            " AaBbCcDdEeFf ",
        ] {
            assert_eq!(
                normalize_unit_id(raw),
                Ok("AABBCCDDEEFF".to_owned()),
                "{raw}"
            );
        }
    }

    #[test]
    fn other_ids_are_kept() {
        assert_eq!(
            normalize_unit_id("tc-0042.lab"),
            Ok("tc-0042.lab".to_owned())
        );
        // mixed separators are not a MAC, but still a valid id
        assert_eq!(
            normalize_unit_id("aa:bb-cc:dd:ee:ff"),
            Ok("aa:bb-cc:dd:ee:ff".to_owned())
        );
        assert_eq!(normalize_unit_id(&"x".repeat(64)), Ok("x".repeat(64)));
    }

    /// The README's table of unit ids ("the device sends | the server stores") holds.
    #[test]
    fn the_readme_unit_id_examples_hold() {
        let readme = include_str!("../../../README.md");
        let start = readme
            .find("| the device sends | the server stores |")
            .expect("the README's unit id table");
        let rows: Vec<(&str, &str)> = readme[start..]
            .lines()
            .skip(2)
            .take_while(|l| l.starts_with('|'))
            .filter_map(|l| {
                let mut cells = l.trim_matches('|').split('|').map(str::trim);
                Some((cells.next()?, cells.next()?))
            })
            .collect();
        assert!(rows.len() >= 6, "{rows:?}");
        let code = |cell: &str| cell.split('`').nth(1).map(str::to_owned);
        for (sent, stored) in rows {
            let sent = code(sent).expect("the id sent, in backquotes");
            if stored.starts_with("refused") {
                assert!(normalize_unit_id(&sent).is_err(), "{sent}");
            } else {
                assert_eq!(
                    normalize_unit_id(&sent),
                    Ok(code(stored).expect("stored")),
                    "{sent}"
                );
            }
        }
    }

    #[test]
    fn bad_ids_are_rejected() {
        assert_eq!(
            normalize_unit_id("  "),
            Err(ValidationError("unit id is empty".into()))
        );
        let err = normalize_unit_id(&"x".repeat(65)).expect_err("too long");
        assert_eq!(err.0, "unit id is longer than 64 characters");
        let err = normalize_unit_id("tc 1").expect_err("space");
        assert!(err.0.contains("invalid character ` `"), "{err}");
        let err = normalize_unit_id("tc/1").expect_err("slash");
        assert!(err.0.contains("`/`"), "{err}");
    }

    #[test]
    fn names() {
        assert_eq!(
            validate_name("device name", "  lab 1 "),
            Ok("lab 1".to_owned())
        );
        assert_eq!(
            validate_name("device name", " "),
            Err(ValidationError("device name must not be empty".into()))
        );
        assert!(validate_name("folder name", &"ä".repeat(255)).is_ok());
        assert_eq!(
            validate_name("folder name", &"ä".repeat(256)),
            Err(ValidationError(
                "folder name is longer than 255 characters".into()
            ))
        );
        assert_eq!(
            validate_name("profile name", "a\u{7}b"),
            Err(ValidationError(
                "profile name must not contain control characters".into()
            ))
        );
    }

    #[test]
    fn chains() {
        let parents: HashMap<FolderId, Option<FolderId>> =
            [(1, None), (2, Some(1)), (3, Some(2)), (4, Some(9))].into();
        assert_eq!(folder_chain(&parents, 3), Ok(vec![3, 2, 1]));
        assert_eq!(folder_chain(&parents, 1), Ok(vec![1]));
        assert_eq!(
            folder_chain(&parents, 7),
            Err(ValidationError("unknown folder 7".into()))
        );
        assert_eq!(
            folder_chain(&parents, 4),
            Err(ValidationError(
                "unknown parent folder 9 of folder 4".into()
            ))
        );
        let cyclic: HashMap<FolderId, Option<FolderId>> =
            [(1, Some(3)), (2, Some(1)), (3, Some(2)), (5, Some(5))].into();
        assert_eq!(
            folder_chain(&cyclic, 2),
            Err(ValidationError("folder cycle detected at folder 2".into()))
        );
        assert_eq!(
            folder_chain(&cyclic, 5),
            Err(ValidationError("folder cycle detected at folder 5".into()))
        );
    }
}
