//! Clients of the other components of the network, over mutual TLS with this server's node
//! identity: `swp-auth` for Shared Workplace logins, the watchdogs for stopping and starting
//! processes, and every process's diagnostics for a support bundle. Their answers come back as [`crate::error::ApiError`]s naming who gave them.

pub mod diagnostics;
pub mod probe;
pub mod swp;
pub mod watchdog;

/// `HOST:PORT`, with an IPv6 literal host in brackets.
pub fn host_port(host: &str, port: u32) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn ipv6_hosts_get_brackets() {
        assert_eq!(super::host_port("::1", 61616), "[::1]:61616");
        assert_eq!(super::host_port("[::1]", 61616), "[::1]:61616");
        assert_eq!(super::host_port("ums1", 61616), "ums1:61616");
    }
}
