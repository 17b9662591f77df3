//! The Prometheus text format (version 0.0.4) of the broker's counters, and its HTTP endpoint.

use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::server_set::{Backend, ServerSet};

/// Counters that belong to no server.
#[derive(Debug, Default)]
pub struct BrokerCounters {
    /// Devices closed because `max_connections` were proxied already.
    pub rejected_limit: AtomicU64,
    /// Devices closed because their address opened connections too fast.
    pub rejected_rate: AtomicU64,
    /// Devices closed because no server accepted their connection.
    pub no_server: AtomicU64,
    /// Times the broker stopped accepting because it held `max_connections`; new devices
    /// waited in the listen queue meanwhile.
    pub full: AtomicU64,
}

use ums_service::metrics::escape;

fn family(
    out: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    servers: &[Arc<Backend>],
    value: impl Fn(&Backend) -> u64,
) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for b in servers {
        let _ = writeln!(
            out,
            "{name}{{server=\"{}\"}} {}",
            escape(b.label()),
            value(b)
        );
    }
}

/// Renders every metric of the broker.
pub fn render(servers: &ServerSet, counters: &BrokerCounters) -> String {
    let servers = servers.snapshot();
    let mut out = String::with_capacity(1024 + servers.len() * 512);
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
    family(
        &mut out,
        "ums_broker_connections_active",
        "gauge",
        "Device connections being proxied to the server now.",
        &servers,
        |b| load(&b.active),
    );
    family(
        &mut out,
        "ums_broker_connections_total",
        "counter",
        "Device connections proxied to the server since start.",
        &servers,
        |b| load(&b.total),
    );
    family(
        &mut out,
        "ums_broker_connect_failures_total",
        "counter",
        "Connects to the server for a device that failed (refused, reset or timed out).",
        &servers,
        |b| load(&b.connect_failures),
    );
    family(
        &mut out,
        "ums_broker_server_up",
        "gauge",
        "1 when the server is in the rotation, 0 when its checks or connects fail.",
        &servers,
        |b| u64::from(b.is_up()),
    );
    let name = "ums_broker_bytes_total";
    let _ = writeln!(
        out,
        "# HELP {name} Bytes proxied: up from devices to the server, down from the server to devices."
    );
    let _ = writeln!(out, "# TYPE {name} counter");
    for b in servers.iter() {
        let label = escape(b.label());
        let _ = writeln!(
            out,
            "{name}{{server=\"{label}\",direction=\"up\"}} {}",
            load(&b.bytes_up)
        );
        let _ = writeln!(
            out,
            "{name}{{server=\"{label}\",direction=\"down\"}} {}",
            load(&b.bytes_down)
        );
    }
    let name = "ums_broker_rejected_total";
    let _ = writeln!(
        out,
        "# HELP {name} Device connections closed at once: over max_connections (limit), over the per-address rate (rate), or no server accepted them (no_server)."
    );
    let _ = writeln!(out, "# TYPE {name} counter");
    for (reason, v) in [
        ("limit", &counters.rejected_limit),
        ("rate", &counters.rejected_rate),
        ("no_server", &counters.no_server),
    ] {
        let _ = writeln!(out, "{name}{{reason=\"{reason}\"}} {}", load(v));
    }
    let name = "ums_broker_full_total";
    let _ = writeln!(
        out,
        "# HELP {name} Times the broker held max_connections and stopped accepting until one ended; new devices waited in the listen queue."
    );
    let _ = writeln!(out, "# TYPE {name} counter");
    let _ = writeln!(out, "{name} {}", load(&counters.full));
    out
}

/// Serves `/metrics` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    servers: Arc<ServerSet>,
    counters: Arc<BrokerCounters>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let body: ums_service::metrics::Render = Arc::new(move || render(&servers, &counters));
    ums_service::metrics::serve(listener, body, shutdown).await
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;

    #[test]
    fn text_format() {
        let a: SocketAddr = "127.0.0.1:30002".parse().expect("addr");
        let b: SocketAddr = "[::1]:30002".parse().expect("addr");
        let set = ServerSet::new([a, b]);
        let snap = set.snapshot();
        snap[0].total.fetch_add(3, Ordering::Relaxed);
        snap[0].active.fetch_add(2, Ordering::Relaxed);
        snap[0].bytes_up.fetch_add(100, Ordering::Relaxed);
        snap[0].bytes_down.fetch_add(200, Ordering::Relaxed);
        snap[1].set_up(false);
        snap[1].connect_failures.fetch_add(1, Ordering::Relaxed);
        let counters = BrokerCounters::default();
        counters.rejected_rate.fetch_add(7, Ordering::Relaxed);
        let text = render(&set, &counters);
        for line in [
            "# TYPE ums_broker_connections_active gauge",
            "ums_broker_connections_active{server=\"127.0.0.1:30002\"} 2",
            "# TYPE ums_broker_connections_total counter",
            "ums_broker_connections_total{server=\"127.0.0.1:30002\"} 3",
            "ums_broker_connections_total{server=\"[::1]:30002\"} 0",
            "ums_broker_connect_failures_total{server=\"[::1]:30002\"} 1",
            "ums_broker_server_up{server=\"127.0.0.1:30002\"} 1",
            "ums_broker_server_up{server=\"[::1]:30002\"} 0",
            "ums_broker_bytes_total{server=\"127.0.0.1:30002\",direction=\"up\"} 100",
            "ums_broker_bytes_total{server=\"127.0.0.1:30002\",direction=\"down\"} 200",
            "ums_broker_rejected_total{reason=\"limit\"} 0",
            "ums_broker_rejected_total{reason=\"rate\"} 7",
            "ums_broker_full_total 0",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing `{line}` in:\n{text}"
            );
        }
        // Every sample line is `name{labels} value`, every family has HELP and TYPE.
        for l in text.lines().filter(|l| !l.starts_with('#')) {
            let (series, value) = l.rsplit_once(' ').expect("a value");
            assert!(value.parse::<u64>().is_ok(), "{l}");
            assert!(
                series.starts_with("ums_broker_")
                    && (series.ends_with('}') || !series.contains('{')),
                "{l}"
            );
        }
        assert_eq!(
            text.matches("# HELP").count(),
            text.matches("# TYPE").count()
        );
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
