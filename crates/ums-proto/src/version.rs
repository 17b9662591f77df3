//! What a component announces of itself to a server, and which announcements a server serves.
//!
//! A client of the admin and internal ports sends `x-ums-version: <component>/<version>
//! protocol=<n>` (`umsctl/0.4.0 protocol=1`); a component whose channel cannot add a header to
//! every call starts its `user-agent` with the same text. The protocol revision changes when a
//! component of an older revision would misread the wire contract; a server serves clients of
//! the revisions from [`OLDEST_PROTOCOL`] to [`PROTOCOL`] and refuses others with a message
//! naming both versions. A client that announces nothing (a browser, curl) is served.

/// The metadata key of the announcement.
pub const HEADER: &str = "x-ums-version";
/// The suite's version of this build.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The protocol revision this build speaks.
pub const PROTOCOL: u32 = 1;
/// The oldest revision a server of this build still serves.
pub const OLDEST_PROTOCOL: u32 = 1;

/// The announcement of `component` ("umsctl", "broker", ...) of this build.
pub fn announce(component: &str) -> String {
    format!("{component}/{VERSION} protocol={PROTOCOL}")
}

/// An announcement as a client sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announced {
    pub component: String,
    pub version: String,
    pub protocol: u32,
}

/// At most this much of a client's text goes into a message.
const SHOWN: usize = 80;

fn shown(text: &str) -> String {
    text.chars()
        .filter(|c| !c.is_control())
        .take(SHOWN)
        .collect()
}

/// Reads `<component>/<version> protocol=<n>`, words after it ignored (`tonic/0.14` of a
/// user agent).
pub fn parse(text: &str) -> Result<Announced, String> {
    let bad = || {
        format!(
            "`{HEADER}: {}` is not `<component>/<version> protocol=<n>`",
            shown(text)
        )
    };
    let mut words = text.split_whitespace();
    let (component, version) = words
        .next()
        .and_then(|w| w.split_once('/'))
        .filter(|(c, v)| !c.is_empty() && !v.is_empty())
        .ok_or_else(bad)?;
    let protocol = words
        .find_map(|w| w.strip_prefix("protocol="))
        .and_then(|p| p.parse::<u32>().ok())
        .ok_or_else(bad)?;
    Ok(Announced {
        component: shown(component),
        version: shown(version),
        protocol,
    })
}

/// Whether a server of this build (`server`: how it calls itself) serves `client`.
pub fn check(client: &Announced, server: &str) -> Result<(), String> {
    check_range(client, server, VERSION, OLDEST_PROTOCOL, PROTOCOL)
}

/// [`check`] against a server of `version` serving protocol `oldest..=newest`.
pub fn check_range(
    client: &Announced,
    server: &str,
    version: &str,
    oldest: u32,
    newest: u32,
) -> Result<(), String> {
    let Announced {
        component,
        version: client_version,
        protocol,
    } = client;
    if *protocol < oldest {
        return Err(format!(
            "{component} {client_version} (protocol {protocol}) is too old for {server} {version}, which serves protocol {oldest} to {newest}: update {component} to {version}"
        ));
    }
    if *protocol > newest {
        return Err(format!(
            "{component} {client_version} (protocol {protocol}) is newer than {server} {version}, which serves protocol {oldest} to {newest}: update the servers first, or use {component} {version}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announcements_parse_and_bad_ones_say_what_is_expected() {
        let a = parse("umsctl/0.4.0 protocol=2").expect("parse");
        assert_eq!(
            a,
            Announced {
                component: "umsctl".into(),
                version: "0.4.0".into(),
                protocol: 2
            }
        );
        let ua = parse("broker/0.4.0 protocol=1 tonic/0.14.2").expect("user agent");
        assert_eq!(ua.component, "broker");
        for bad in [
            "",
            "umsctl",
            "umsctl/0.4.0",
            "/1 protocol=1",
            "umsctl/1 protocol=x",
        ] {
            let err = parse(bad).expect_err(bad);
            assert!(err.contains("<component>/<version> protocol=<n>"), "{err}");
        }
        assert!(parse(&"x".repeat(10_000)).expect_err("long").len() < 200);
        assert_eq!(parse(&announce("umsctl")).expect("own").protocol, PROTOCOL);
    }

    #[test]
    fn a_server_serves_its_range_and_names_both_versions_otherwise() {
        let client = |version: &str, protocol| Announced {
            component: "umsctl".into(),
            version: version.into(),
            protocol,
        };
        // An older client of a revision still served, and the server's own.
        assert!(check_range(&client("1.2.0", 2), "server", "1.4.0", 2, 3).is_ok());
        assert!(check_range(&client("1.4.0", 3), "server", "1.4.0", 2, 3).is_ok());
        let err = check_range(&client("1.0.0", 1), "server", "1.4.0", 2, 3).expect_err("old");
        assert!(
            err.contains("umsctl 1.0.0") && err.contains("server 1.4.0") && err.contains("too old"),
            "{err}"
        );
        let err = check_range(&client("2.0.0", 4), "server", "1.4.0", 2, 3).expect_err("new");
        assert!(
            err.contains("umsctl 2.0.0") && err.contains("server 1.4.0") && err.contains("newer"),
            "{err}"
        );
        assert!(check(&parse(&announce("broker")).expect("own"), "server").is_ok());
    }
}
