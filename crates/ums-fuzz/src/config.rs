//! The TOML configuration files of the services, loaded over their defaults as
//! `ums_service::load_config` does (`ums-server`, `ums-broker`, `ums-watchdog`, `swp-auth`).
//! The first byte of the input picks the service, the rest is the file.
//!
//! Properties: a file either loads or gives an error, and the checks a service runs at start
//! answer without panicking; a loaded configuration prints as TOML (the `config` subcommand of
//! every service), and that text loads again to a configuration that prints the same.

use serde::Serialize;
use serde::de::DeserializeOwned;

pub const DICTIONARY: &[&[u8]] = &[
    b"\n[device]\n",
    b"\n[cluster]\n",
    b"\n[log]\nlevel = \"debug\"\n",
    b"\n[health]\n",
    b"\n[rate]\n",
    b"\n[server]\nenabled = true\n",
    b"\n[broker.env]\n",
    b"\n[pool]\n",
    b"\n[limits]\n",
    b"servers = [\"10.0.0.1:30002\"]\n",
    b"servers = \"a,b\"\n",
    b"listen = \"0.0.0.0:30001\"\n",
    b"_ms = 9223372036854775807\n",
    b"_ms = \"18446744073709551615\"\n",
    b"\"yes\"",
    b" = -1\n",
    b"\"\"\"",
    b"'''",
    b"\\u0000",
    b"1979-05-27T07:32:00Z",
    b"inf",
    b"{ a = 1 }",
];

/// Loads `text`, runs `check` on what loaded, and checks that the printed form loads again.
fn round_trip<T>(text: &str, check: impl Fn(&T))
where
    T: Serialize + Default + DeserializeOwned,
{
    let Ok(cfg) = ums_service::config_from_toml::<T>(text) else {
        return;
    };
    check(&cfg);
    let printed = toml::to_string_pretty(&cfg)
        .unwrap_or_else(|e| panic!("a loaded configuration does not print: {e}"));
    let again: T = ums_service::config_from_toml(&printed)
        .unwrap_or_else(|e| panic!("the printed configuration does not load: {e}\n{printed}"));
    let reprinted = toml::to_string_pretty(&again).expect("prints");
    assert_eq!(printed, reprinted, "printed, loaded and printed again");
}

pub fn fuzz(data: &[u8]) {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let text = crate::text(rest);
    match which % 4 {
        // Validation either accepts a file or names what is wrong; it never panics.
        0 => round_trip(&text, |c: &ums_server::ServerConfig| {
            let _ = c.validate();
        }),
        1 => round_trip(&text, |c: &ums_broker::BrokerConfig| {
            let _ = c.validate();
        }),
        2 => round_trip(&text, |c: &ums_watchdog::WatchdogConfig| {
            let _ = c.validate();
        }),
        _ => round_trip(&text, |c: &swp_auth::SwpAuthConfig| {
            let _ = c.validate();
        }),
    }
}
