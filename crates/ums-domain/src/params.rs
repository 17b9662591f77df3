//! Setting values and the catalog of known thin-client parameters.
//!
//! Every setting is addressed by a key made of lowercase ASCII segments
//! (`[a-z0-9_]+`) separated by dots, for example `audio.volume`. The catalog
//! describes each key with a pattern; a `#` at the end of a pattern segment
//! stands for an instance number (`0..=999`, no leading zeros) and marks a
//! list-type entry such as `sessions.rdp#.server`, which matches
//! `sessions.rdp0.server`, `sessions.rdp17.server` and so on.

use std::fmt;

/// Maximum length of a settings key in bytes.
pub const MAX_KEY_LEN: usize = 200;

/// Highest instance number accepted in list-type keys.
pub const MAX_INSTANCE: u32 = 999;

/// A typed setting value.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Value {
    /// Text (also used for enumerated parameters).
    String(String),
    /// A signed integer.
    Int(i64),
    /// A boolean flag.
    Bool(bool),
}

impl Value {
    /// The name of the value's type: `"string"`, `"int"` or `"bool"`.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::String(_) => "string",
            Value::Int(_) => "int",
            Value::Bool(_) => "bool",
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::String(s) => f.write_str(s),
            Value::Int(i) => write!(f, "{i}"),
            Value::Bool(b) => f.write_str(if *b { "true" } else { "false" }),
        }
    }
}

/// The declared type of a catalog parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamType {
    /// Free text of at most `max_len` characters, without control characters.
    String {
        /// Maximum number of characters.
        max_len: usize,
    },
    /// An integer within `min..=max`.
    Int {
        /// Smallest accepted value.
        min: i64,
        /// Largest accepted value.
        max: i64,
    },
    /// A boolean flag.
    Bool,
    /// One of a fixed set of strings.
    Enum(&'static [&'static str]),
}

impl ParamType {
    /// The name of the type: `"string"`, `"int"`, `"bool"` or `"enum"`.
    pub fn name(&self) -> &'static str {
        match self {
            ParamType::String { .. } => "string",
            ParamType::Int { .. } => "int",
            ParamType::Bool => "bool",
            ParamType::Enum(_) => "enum",
        }
    }
}

/// Description of one catalog parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParamSpec {
    /// Key pattern, e.g. `sessions.rdp#.server`; `#` is an instance number.
    pub pattern: &'static str,
    /// Declared type of the value.
    pub ty: ParamType,
    /// Human-readable description.
    pub description: &'static str,
    /// Device-only parameters (network, update, security, ...) are never
    /// taken from a user profile.
    pub device_only: bool,
}

/// Errors about settings keys and values.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SettingsError {
    /// The key is well-formed but not in the catalog.
    #[error("unknown settings parameter `{0}`")]
    UnknownKey(String),
    /// The key is malformed; the second field explains why.
    #[error("invalid settings key `{0}`: {1}")]
    InvalidKey(String, String),
    /// The value does not fit the parameter's type.
    #[error("invalid value for `{key}`: {reason}")]
    InvalidValue {
        /// The settings key.
        key: String,
        /// Why the value was rejected.
        reason: String,
    },
}

const NAME_LEN: usize = 255;
const URL_LEN: usize = 2048;

const fn text(max_len: usize) -> ParamType {
    ParamType::String { max_len }
}

const fn int(min: i64, max: i64) -> ParamType {
    ParamType::Int { min, max }
}

const fn spec(
    pattern: &'static str,
    ty: ParamType,
    description: &'static str,
    device_only: bool,
) -> ParamSpec {
    ParamSpec {
        pattern,
        ty,
        description,
        device_only,
    }
}

static CATALOG: &[ParamSpec] = &[
    // RDP sessions
    spec(
        "sessions.rdp#.name",
        text(NAME_LEN),
        "display name of the RDP session",
        false,
    ),
    spec(
        "sessions.rdp#.server",
        text(NAME_LEN),
        "host name or address of the RDP server",
        false,
    ),
    spec(
        "sessions.rdp#.username",
        text(NAME_LEN),
        "user name sent to the RDP server",
        false,
    ),
    spec(
        "sessions.rdp#.domain",
        text(NAME_LEN),
        "logon domain for the RDP session",
        false,
    ),
    spec(
        "sessions.rdp#.fullscreen",
        ParamType::Bool,
        "start the RDP session in full screen",
        false,
    ),
    spec(
        "sessions.rdp#.port",
        int(1, 65535),
        "TCP port of the RDP server",
        false,
    ),
    // Citrix sessions
    spec(
        "sessions.ica#.name",
        text(NAME_LEN),
        "display name of the Citrix session",
        false,
    ),
    spec(
        "sessions.ica#.server",
        text(NAME_LEN),
        "host name or address of the Citrix server",
        false,
    ),
    spec(
        "sessions.ica#.store_url",
        text(URL_LEN),
        "URL of the Citrix StoreFront store",
        false,
    ),
    // Browser sessions
    spec(
        "sessions.browser#.name",
        text(NAME_LEN),
        "display name of the browser session",
        false,
    ),
    spec(
        "sessions.browser#.url",
        text(URL_LEN),
        "start page of the browser session",
        false,
    ),
    spec(
        "sessions.browser#.kiosk",
        ParamType::Bool,
        "run the browser in kiosk mode",
        false,
    ),
    // Display
    spec(
        "display.resolution",
        ParamType::Enum(&["1920x1080", "2560x1440", "3840x2160", "auto"]),
        "screen resolution",
        false,
    ),
    spec(
        "display.monitors",
        int(1, 8),
        "number of attached monitors",
        false,
    ),
    spec(
        "display.layout",
        ParamType::Enum(&[
            "single",
            "extend_right",
            "extend_left",
            "extend_above",
            "mirror",
        ]),
        "arrangement of the screens",
        false,
    ),
    spec(
        "display.refresh_hz",
        int(24, 240),
        "screen refresh rate in Hz",
        false,
    ),
    spec(
        "display.rotation",
        ParamType::Enum(&["normal", "left", "right", "inverted"]),
        "rotation of the screen",
        false,
    ),
    spec(
        "display.screen#.connector",
        ParamType::Enum(&["auto", "dvi", "vga", "hdmi", "displayport"]),
        "monitor connector of the screen",
        false,
    ),
    spec(
        "display.screensaver_timeout_min",
        int(0, 1440),
        "minutes of inactivity before the screensaver starts; 0 disables it",
        false,
    ),
    // Input, system, audio, desktop, power
    spec(
        "input.keyboard_layout",
        text(64),
        "keyboard layout, e.g. `de` or `us`",
        false,
    ),
    spec(
        "system.timezone",
        text(64),
        "time zone name, e.g. `Europe/Berlin`",
        false,
    ),
    spec(
        "system.language",
        ParamType::Enum(&["en", "de", "fr", "es", "it", "nl"]),
        "user interface language",
        false,
    ),
    spec(
        "system.hostname_prefix",
        text(32),
        "prefix for generated host names",
        false,
    ),
    spec(
        "audio.volume",
        int(0, 100),
        "master volume in percent",
        false,
    ),
    spec("audio.mute", ParamType::Bool, "mute audio output", false),
    spec(
        "desktop.wallpaper_file",
        text(NAME_LEN),
        "file name of the desktop wallpaper",
        false,
    ),
    spec(
        "power.shutdown_on_idle_min",
        int(0, 10080),
        "minutes of inactivity before shutdown; 0 disables it",
        false,
    ),
    // Device-only parameters
    spec("network.proxy", text(URL_LEN), "HTTP proxy URL", true),
    spec(
        "network.wifi.ssid",
        text(32),
        "SSID of the wireless network",
        true,
    ),
    spec(
        "network.dhcp",
        ParamType::Bool,
        "obtain the network address via DHCP",
        true,
    ),
    spec(
        "update.firmware_url",
        text(URL_LEN),
        "URL of the firmware update source",
        true,
    ),
    spec(
        "update.auto",
        ParamType::Bool,
        "install firmware updates automatically",
        true,
    ),
    spec(
        "security.usb_storage",
        ParamType::Bool,
        "allow USB mass storage devices",
        true,
    ),
    spec(
        "security.ssh",
        ParamType::Bool,
        "enable the SSH service",
        true,
    ),
    spec(
        "remote.vnc_enabled",
        ParamType::Bool,
        "allow remote shadowing via VNC",
        true,
    ),
    spec(
        "touchscreen.enabled",
        ParamType::Bool,
        "enable the touchscreen driver",
        true,
    ),
    spec(
        "bootsplash.file",
        text(NAME_LEN),
        "file name of the boot splash image",
        true,
    ),
    spec(
        "display.color_depth",
        ParamType::Enum(&["16", "24", "30"]),
        "colour depth of the screens in bits",
        true,
    ),
    spec(
        "partition.custom.enabled",
        ParamType::Bool,
        "use the custom partition",
        true,
    ),
    spec(
        "partition.custom.size_mb",
        int(1, 1_048_576),
        "size of the custom partition in MiB",
        true,
    ),
    spec(
        "browser.plugin#.name",
        text(NAME_LEN),
        "browser plug-in installed on the device",
        true,
    ),
    spec(
        "appliance.mode",
        ParamType::Enum(&["off", "vmware_view", "citrix", "spice"]),
        "appliance mode: the device runs only this session",
        true,
    ),
    spec(
        "input.mouse.three_button_emulation",
        ParamType::Bool,
        "emulate the middle mouse button",
        true,
    ),
    spec(
        "sharedworkplace.enabled",
        ParamType::Bool,
        "Shared Workplace logins on the device (where neither the device nor a folder switch says)",
        true,
    ),
    spec(
        "sharedworkplace.logoff_hotkey",
        text(64),
        "key combination that logs the user off, e.g. `Ctrl+Alt+L`; empty: none",
        true,
    ),
    spec(
        "sharedworkplace.logoff_launcher",
        ParamType::Bool,
        "show a log-off button in the application launcher",
        true,
    ),
];

/// The catalog of all known parameters.
pub fn catalog() -> &'static [ParamSpec] {
    CATALOG
}

/// Position of the instance number inside a matched list-type key.
#[derive(Debug, Clone, Copy)]
struct Instance {
    /// Byte offset where the instance digits start (end of the list prefix).
    prefix_end: usize,
    /// Byte offset just after the instance digits.
    digits_end: usize,
    /// The instance number.
    number: u32,
}

enum Match {
    No,
    Yes(Option<Instance>),
    BadInstance(String),
}

/// Matches a syntactically valid key against one catalog pattern.
fn match_pattern(pattern: &str, key: &str) -> Match {
    let mut pattern_segments = pattern.split('.');
    let mut key_segments = key.split('.');
    let mut offset = 0usize;
    let mut instance = None;
    let mut bad = None;
    loop {
        match (pattern_segments.next(), key_segments.next()) {
            (None, None) => {
                return match bad {
                    Some(reason) => Match::BadInstance(reason),
                    None => Match::Yes(instance),
                };
            }
            (Some(p), Some(k)) => {
                if let Some(stem) = p.strip_suffix('#') {
                    let Some(digits) = k.strip_prefix(stem) else {
                        return Match::No;
                    };
                    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                        return Match::No;
                    }
                    if digits.len() > 1 && digits.starts_with('0') {
                        bad = Some(format!("instance number `{digits}` has a leading zero"));
                    } else {
                        match digits.parse::<u32>() {
                            Ok(n) if n <= MAX_INSTANCE => {
                                let prefix_end = offset + stem.len();
                                instance = Some(Instance {
                                    prefix_end,
                                    digits_end: prefix_end + digits.len(),
                                    number: n,
                                });
                            }
                            _ => {
                                bad = Some(format!(
                                    "instance number `{digits}` is out of range 0..={MAX_INSTANCE}"
                                ));
                            }
                        }
                    }
                } else if p != k {
                    return Match::No;
                }
                offset += k.len() + 1;
            }
            _ => return Match::No,
        }
    }
}

/// Checks the general key syntax (not whether the key is known).
fn check_key_syntax(key: &str) -> Result<(), SettingsError> {
    let invalid = |reason: String| Err(SettingsError::InvalidKey(key.to_owned(), reason));
    if key.is_empty() {
        return invalid("key is empty".to_owned());
    }
    if key.len() > MAX_KEY_LEN {
        return invalid(format!("key is longer than {MAX_KEY_LEN} characters"));
    }
    for segment in key.split('.') {
        if segment.is_empty() {
            return invalid("key has an empty segment".to_owned());
        }
        if let Some(c) = segment
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_'))
        {
            return invalid(format!(
                "character `{}` is not allowed (use lowercase letters, digits and `_`)",
                c.escape_default()
            ));
        }
    }
    Ok(())
}

/// Looks up the spec of a key, reporting syntax and instance errors.
fn lookup(key: &str) -> Result<(&'static ParamSpec, Option<Instance>), SettingsError> {
    check_key_syntax(key)?;
    let mut bad_instance = None;
    for spec in CATALOG {
        match match_pattern(spec.pattern, key) {
            Match::Yes(instance) => return Ok((spec, instance)),
            Match::BadInstance(reason) => bad_instance = Some(reason),
            Match::No => {}
        }
    }
    match bad_instance {
        Some(reason) => Err(SettingsError::InvalidKey(key.to_owned(), reason)),
        None => Err(SettingsError::UnknownKey(key.to_owned())),
    }
}

/// Finds the catalog entry for a concrete key such as `sessions.rdp3.server`.
pub fn find_spec(key: &str) -> Option<&'static ParamSpec> {
    lookup(key).ok().map(|(spec, _)| spec)
}

/// Splits a list-type key into its list prefix, instance number and field:
/// `("sessions.rdp", 3, "server")` for `sessions.rdp3.server`.
///
/// Returns `None` for scalar keys and for keys not in the catalog.
pub fn list_instance(key: &str) -> Option<(&str, u32, &str)> {
    let (_, instance) = lookup(key).ok()?;
    let instance = instance?;
    let prefix = key.get(..instance.prefix_end)?;
    let field = key.get(instance.digits_end + 1..).unwrap_or("");
    Some((prefix, instance.number, field))
}

/// Validates key (known pattern, syntax) and parses the text value according
/// to the spec's type.
///
/// Integers, booleans and enum values are trimmed; strings are kept as given.
/// Booleans accept `true/false/1/0/yes/no/on/off` in any case; enum values
/// are matched case-insensitively and normalised to the catalog spelling.
pub fn parse_param(key: &str, text: &str) -> Result<Value, SettingsError> {
    let (spec, _) = lookup(key)?;
    parse_typed(key, spec.ty, text)
}

fn parse_typed(key: &str, ty: ParamType, text: &str) -> Result<Value, SettingsError> {
    let invalid = |reason: String| SettingsError::InvalidValue {
        key: key.to_owned(),
        reason,
    };
    match ty {
        ParamType::String { max_len } => {
            if text.chars().count() > max_len {
                return Err(invalid(format!("text is longer than {max_len} characters")));
            }
            if text.chars().any(char::is_control) {
                return Err(invalid("text contains a control character".to_owned()));
            }
            Ok(Value::String(text.to_owned()))
        }
        ParamType::Int { min, max } => {
            let trimmed = text.trim();
            let n: i64 = trimmed
                .parse()
                .map_err(|_| invalid(format!("`{trimmed}` is not an integer")))?;
            if n < min || n > max {
                return Err(invalid(format!("{n} is out of range {min}..={max}")));
            }
            Ok(Value::Int(n))
        }
        ParamType::Bool => match text.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Ok(Value::Bool(true)),
            "false" | "0" | "no" | "off" => Ok(Value::Bool(false)),
            other => Err(invalid(format!(
                "`{other}` is not a boolean (use true/false, 1/0, yes/no or on/off)"
            ))),
        },
        ParamType::Enum(allowed) => {
            let trimmed = text.trim();
            allowed
                .iter()
                .find(|a| a.eq_ignore_ascii_case(trimmed))
                .map(|a| Value::String((*a).to_owned()))
                .ok_or_else(|| {
                    invalid(format!("`{trimmed}` is not one of: {}", allowed.join(", ")))
                })
        }
    }
}

/// Checks that an already typed value is valid for `key`: the key is known,
/// the value has the declared type, lies within its range and is in
/// canonical form.
pub fn validate_value(key: &str, value: &Value) -> Result<(), SettingsError> {
    let (spec, _) = lookup(key)?;
    let type_matches = matches!(
        (spec.ty, value),
        (
            ParamType::String { .. } | ParamType::Enum(_),
            Value::String(_)
        ) | (ParamType::Int { .. }, Value::Int(_))
            | (ParamType::Bool, Value::Bool(_))
    );
    if !type_matches {
        return Err(SettingsError::InvalidValue {
            key: key.to_owned(),
            reason: format!("expected {}, got {}", spec.ty.name(), value.type_name()),
        });
    }
    let parsed = parse_typed(key, spec.ty, &value.to_string())?;
    if parsed != *value {
        return Err(SettingsError::InvalidValue {
            key: key.to_owned(),
            reason: format!("`{value}` is not in canonical form (expected `{parsed}`)"),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_patterns_are_unique_and_well_formed() {
        let mut seen = std::collections::HashSet::new();
        for spec in catalog() {
            assert!(seen.insert(spec.pattern), "duplicate {}", spec.pattern);
            let concrete = spec.pattern.replace('#', "0");
            assert_eq!(find_spec(&concrete), Some(spec), "{}", spec.pattern);
            assert!(!spec.description.is_empty());
        }
        assert!(catalog().len() >= 30);
    }

    #[test]
    fn device_only_flags() {
        for key in [
            "network.proxy",
            "update.auto",
            "security.ssh",
            "bootsplash.file",
            "display.color_depth",
            "partition.custom.size_mb",
            "browser.plugin2.name",
            "appliance.mode",
            "input.mouse.three_button_emulation",
            "sharedworkplace.enabled",
            "sharedworkplace.logoff_hotkey",
        ] {
            assert!(find_spec(key).is_some_and(|s| s.device_only), "{key}");
        }
        // What a user may set for the screens: everything but the colour depth.
        for key in [
            "audio.volume",
            "sessions.rdp4.server",
            "system.language",
            "display.resolution",
            "display.layout",
            "display.refresh_hz",
            "display.rotation",
            "display.monitors",
            "display.screen1.connector",
        ] {
            assert!(find_spec(key).is_some_and(|s| !s.device_only), "{key}");
        }
    }

    #[test]
    fn list_instance_splits_keys() {
        assert_eq!(
            list_instance("sessions.rdp3.server"),
            Some(("sessions.rdp", 3, "server"))
        );
        assert_eq!(
            list_instance("sessions.browser0.kiosk"),
            Some(("sessions.browser", 0, "kiosk"))
        );
        assert_eq!(
            list_instance("sessions.ica999.store_url"),
            Some(("sessions.ica", 999, "store_url"))
        );
        assert_eq!(list_instance("audio.volume"), None);
        assert_eq!(list_instance("sessions.rdp03.server"), None);
        assert_eq!(list_instance("sessions.rdp1000.server"), None);
        assert_eq!(list_instance("sessions.rdp.server"), None);
        assert_eq!(list_instance("sessions.rdp1.bogus"), None);
    }

    #[test]
    fn parses_typed_values() {
        assert_eq!(parse_param("audio.volume", " 42 "), Ok(Value::Int(42)));
        assert_eq!(parse_param("audio.mute", "YES"), Ok(Value::Bool(true)));
        assert_eq!(parse_param("audio.mute", "off"), Ok(Value::Bool(false)));
        assert_eq!(parse_param("audio.mute", "0"), Ok(Value::Bool(false)));
        assert_eq!(
            parse_param("display.resolution", "AUTO"),
            Ok(Value::String("auto".into()))
        );
        assert_eq!(
            parse_param("sessions.rdp12.server", "rds.example.com"),
            Ok(Value::String("rds.example.com".into()))
        );
        assert_eq!(
            parse_param("sessions.rdp0.port", "3389"),
            Ok(Value::Int(3389))
        );
        assert_eq!(
            parse_param("input.keyboard_layout", ""),
            Ok(Value::String(String::new()))
        );
    }

    #[test]
    fn rejects_bad_values_with_clear_messages() {
        let err = parse_param("audio.volume", "101").expect_err("out of range");
        assert_eq!(
            err.to_string(),
            "invalid value for `audio.volume`: 101 is out of range 0..=100"
        );
        let err = parse_param("sessions.rdp0.port", "abc").expect_err("not an int");
        assert_eq!(
            err.to_string(),
            "invalid value for `sessions.rdp0.port`: `abc` is not an integer"
        );
        let err = parse_param("audio.mute", "maybe").expect_err("not a bool");
        assert!(err.to_string().contains("not a boolean"), "{err}");
        let err = parse_param("system.language", "klingon").expect_err("not in enum");
        assert_eq!(
            err.to_string(),
            "invalid value for `system.language`: `klingon` is not one of: en, de, fr, es, it, nl"
        );
        let long = "x".repeat(33);
        let err = parse_param("system.hostname_prefix", &long).expect_err("too long");
        assert!(err.to_string().contains("longer than 32"), "{err}");
        let err = parse_param("system.timezone", "a\nb").expect_err("control char");
        assert!(err.to_string().contains("control character"), "{err}");
    }

    #[test]
    fn rejects_bad_keys() {
        assert_eq!(
            parse_param("audio.loudness", "1"),
            Err(SettingsError::UnknownKey("audio.loudness".into()))
        );
        assert!(matches!(
            parse_param("Audio.volume", "1"),
            Err(SettingsError::InvalidKey(_, _))
        ));
        assert!(matches!(
            parse_param("audio..volume", "1"),
            Err(SettingsError::InvalidKey(_, _))
        ));
        assert!(matches!(
            parse_param("", "1"),
            Err(SettingsError::InvalidKey(_, _))
        ));
        let long = format!("a.{}", "b".repeat(MAX_KEY_LEN));
        assert!(matches!(
            parse_param(&long, "1"),
            Err(SettingsError::InvalidKey(_, _))
        ));
        let err = parse_param("sessions.rdp01.server", "x").expect_err("leading zero");
        assert_eq!(
            err.to_string(),
            "invalid settings key `sessions.rdp01.server`: instance number `01` has a leading zero"
        );
        let err = parse_param("sessions.rdp1000.server", "x").expect_err("too big");
        assert!(err.to_string().contains("out of range"), "{err}");
        assert_eq!(
            parse_param("sessions.rdp.server", "x"),
            Err(SettingsError::UnknownKey("sessions.rdp.server".into()))
        );
    }

    #[test]
    fn validates_typed_values() {
        assert_eq!(validate_value("audio.volume", &Value::Int(5)), Ok(()));
        assert!(validate_value("audio.volume", &Value::Int(500)).is_err());
        let err = validate_value("audio.volume", &Value::String("5".into())).expect_err("type");
        assert_eq!(
            err.to_string(),
            "invalid value for `audio.volume`: expected int, got string"
        );
        assert!(validate_value("display.resolution", &Value::String("AUTO".into())).is_err());
        assert_eq!(validate_value("audio.mute", &Value::Bool(true)), Ok(()));
    }

    #[test]
    fn value_display_and_type_names() {
        assert_eq!(Value::String("abc".into()).to_string(), "abc");
        assert_eq!(Value::Int(-3).to_string(), "-3");
        assert_eq!(Value::Bool(false).to_string(), "false");
        assert_eq!(Value::Bool(true).type_name(), "bool");
        assert_eq!(Value::Int(1).type_name(), "int");
        assert_eq!(Value::String(String::new()).type_name(), "string");
        assert_eq!(ParamType::Enum(&["a"]).name(), "enum");
        assert_eq!(ParamType::String { max_len: 1 }.name(), "string");
    }
}
