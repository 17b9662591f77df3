//! Settings parameter values as administrators send them: `key=value` text
//! (`ums_domain::parse_param`), and typed values (`ums_domain::validate_value`).
//!
//! Properties: a value that parses has the declared type of its catalog entry, lies within its
//! range or set, and its text form parses back to the same value, which `validate_value`
//! accepts as canonical; a typed value is accepted exactly when its text form parses to it; a
//! key is refused as unknown or malformed exactly when the catalog has no entry for it; a
//! list-type key splits into prefix, instance and field that put together give the key again.

use ums_domain::params::{
    ParamType, SettingsError, Value, find_spec, list_instance, parse_param, validate_value,
};

pub const DICTIONARY: &[&[u8]] = &[
    b"sessions.rdp0.server=",
    b"sessions.ica17.store_url=",
    b"sessions.browser999.kiosk=",
    b"audio.volume=",
    b"display.resolution=",
    b"system.language=",
    b"network.dhcp=",
    b"=",
    b".",
    b"#",
    b"true",
    b"-9223372036854775808",
    b"1000",
    b" ",
    b"\t",
];

pub fn fuzz(data: &[u8]) {
    let input = crate::text(data);
    let (key, text) = input.split_once('=').unwrap_or((&input, ""));
    let spec = find_spec(key);
    match parse_param(key, text) {
        Ok(value) => {
            let spec = spec.expect("a key that parses is in the catalog");
            match (spec.ty, &value) {
                (ParamType::String { max_len }, Value::String(s)) => {
                    assert!(s.chars().count() <= max_len);
                    assert!(!s.chars().any(char::is_control));
                    assert_eq!(s, text, "text is kept as given");
                }
                (ParamType::Int { min, max }, Value::Int(n)) => {
                    assert!((min..=max).contains(n));
                }
                (ParamType::Bool, Value::Bool(_)) => {}
                (ParamType::Enum(allowed), Value::String(s)) => {
                    assert!(allowed.contains(&s.as_str()), "{s:?}");
                }
                (ty, v) => panic!(
                    "{key}: a {} value for a {} parameter",
                    v.type_name(),
                    ty.name()
                ),
            }
            assert_eq!(parse_param(key, &value.to_string()).as_ref(), Ok(&value));
            assert_eq!(validate_value(key, &value), Ok(()));
        }
        Err(SettingsError::UnknownKey(_) | SettingsError::InvalidKey(..)) => {
            assert!(spec.is_none(), "{key} is in the catalog but refused");
        }
        Err(SettingsError::InvalidValue { .. }) => {
            assert!(spec.is_some(), "{key}: a value refused for an unknown key");
        }
    }

    // Typed values, as the admin API's JSON carries them.
    let mut typed = vec![Value::String(text.to_owned())];
    if let Ok(n) = text.trim().parse::<i64>() {
        typed.push(Value::Int(n));
    }
    typed.push(Value::Bool(text.len() % 2 == 0));
    for value in typed {
        let accepted = validate_value(key, &value).is_ok();
        let canonical = parse_param(key, &value.to_string()).as_ref() == Ok(&value);
        assert_eq!(accepted, canonical, "{key} = {value:?}");
    }

    match list_instance(key) {
        Some((prefix, number, field)) => {
            assert_eq!(format!("{prefix}{number}.{field}"), key);
            assert!(number <= ums_domain::params::MAX_INSTANCE);
            assert!(spec.is_some_and(|s| s.pattern.contains('#')));
        }
        None => assert!(spec.is_none_or(|s| !s.pattern.contains('#'))),
    }
}
