//! The fuzz targets of every parser that reads input from outside the process, each a plain
//! function of the raw bytes that panics when a property of the parser does not hold.
//!
//! The same functions run under libFuzzer (`fuzz/`, `cargo xtask fuzz`) and in the workspace's
//! tests, which replay the committed corpus `fuzz/corpus/<target>/` and then mutate it for a few
//! seconds per target. A target checks more than "no panic": what parses must re-serialise to
//! what parses the same, escaping must round-trip, and a parser must never claim bytes it was
//! not given.

pub mod config;
pub mod ldap_dn;
pub mod ldap_filter;
pub mod network_token;
pub mod param_value;
pub mod proxy_v2;
pub mod unit_id;
pub mod upload_framing;

#[cfg(test)]
mod replay;

/// A fuzz target: its name (the directory of its corpus and the libFuzzer binary in `fuzz/`)
/// and its function.
pub struct Target {
    pub name: &'static str,
    pub run: fn(&[u8]),
    /// Fragments the mutation run of the tests splices into inputs (libFuzzer finds its own).
    pub dictionary: &'static [&'static [u8]],
}

/// Every target, in the order of their corpus directories.
pub const TARGETS: &[Target] = &[
    Target {
        name: "config",
        run: config::fuzz,
        dictionary: config::DICTIONARY,
    },
    Target {
        name: "ldap_dn",
        run: ldap_dn::fuzz,
        dictionary: ldap_dn::DICTIONARY,
    },
    Target {
        name: "ldap_filter",
        run: ldap_filter::fuzz,
        dictionary: ldap_filter::DICTIONARY,
    },
    Target {
        name: "network_token",
        run: network_token::fuzz,
        dictionary: network_token::DICTIONARY,
    },
    Target {
        name: "param_value",
        run: param_value::fuzz,
        dictionary: param_value::DICTIONARY,
    },
    Target {
        name: "proxy_v2",
        run: proxy_v2::fuzz,
        dictionary: proxy_v2::DICTIONARY,
    },
    Target {
        name: "unit_id",
        run: unit_id::fuzz,
        dictionary: unit_id::DICTIONARY,
    },
    Target {
        name: "upload_framing",
        run: upload_framing::fuzz,
        dictionary: upload_framing::DICTIONARY,
    },
];

/// The input as text: the parsers under test take `&str`, and a lossy conversion keeps every
/// input useful instead of discarding the ones that are not UTF-8.
pub(crate) fn text(data: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(data)
}
