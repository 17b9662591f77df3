//! Prometheus metrics every service shares: counters and histograms with labels, gauges written
//! at render time, the text format (version 0.0.4) and the plain-HTTP `/metrics` endpoint.
//!
//! Hand-written rather than a client library: a service's families are a handful of
//! `CounterVec`s and `HistogramVec`s it owns, and rendering is one pass over them. Label values
//! come from the service's own vocabulary (method names, outcomes), never from a client's
//! input, so the series stay bounded.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::{Arc, Mutex};

/// Escapes a label value: backslash, double quote and newline.
pub fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

fn labels(names: &[&str], values: &[String], extra: Option<(&str, &str)>) -> String {
    let mut parts: Vec<String> = names
        .iter()
        .zip(values)
        .map(|(n, v)| format!("{n}=\"{}\"", escape(v)))
        .collect();
    if let Some((n, v)) = extra {
        parts.push(format!("{n}=\"{}\"", escape(v)));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", parts.join(","))
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Writes one gauge family of unlabelled or labelled samples computed now.
pub fn gauge(out: &mut String, name: &str, help: &str, label: &str, samples: &[(&str, f64)]) {
    header(out, name, "gauge", help);
    for (value_label, v) in samples {
        if label.is_empty() {
            let _ = writeln!(out, "{name} {v}");
        } else {
            let _ = writeln!(out, "{name}{{{label}=\"{}\"}} {v}", escape(value_label));
        }
    }
}

/// A counter family with labels.
pub struct CounterVec {
    name: &'static str,
    help: &'static str,
    labels: &'static [&'static str],
    values: Mutex<BTreeMap<Vec<String>, u64>>,
}

impl CounterVec {
    pub fn new(name: &'static str, help: &'static str, labels: &'static [&'static str]) -> Self {
        Self {
            name,
            help,
            labels,
            values: Mutex::new(BTreeMap::new()),
        }
    }

    /// Adds `n` to the series of `values` (one per label, in order).
    pub fn add(&self, values: &[&str], n: u64) {
        let key: Vec<String> = values.iter().map(|v| (*v).to_owned()).collect();
        let mut map = self.values.lock().unwrap_or_else(|p| p.into_inner());
        *map.entry(key).or_default() += n;
    }

    pub fn inc(&self, values: &[&str]) {
        self.add(values, 1);
    }

    /// The value of one series (0 when never counted).
    pub fn get(&self, values: &[&str]) -> u64 {
        let key: Vec<String> = values.iter().map(|v| (*v).to_owned()).collect();
        let map = self.values.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&key).copied().unwrap_or(0)
    }

    pub fn render(&self, out: &mut String) {
        header(out, self.name, "counter", self.help);
        let map = self.values.lock().unwrap_or_else(|p| p.into_inner());
        for (k, v) in map.iter() {
            let _ = writeln!(out, "{}{} {v}", self.name, labels(self.labels, k, None));
        }
    }
}

#[derive(Clone)]
struct HistogramData {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

/// A histogram family with labels and fixed buckets (upper bounds, ascending).
pub struct HistogramVec {
    name: &'static str,
    help: &'static str,
    labels: &'static [&'static str],
    buckets: &'static [f64],
    values: Mutex<BTreeMap<Vec<String>, HistogramData>>,
}

/// Buckets for request latencies in seconds, 0.5 ms to 10 s.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Buckets for sizes, 1 to 1024 in powers of two.
pub const SIZE_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
];

impl HistogramVec {
    pub fn new(
        name: &'static str,
        help: &'static str,
        labels: &'static [&'static str],
        buckets: &'static [f64],
    ) -> Self {
        Self {
            name,
            help,
            labels,
            buckets,
            values: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn observe(&self, values: &[&str], v: f64) {
        let key: Vec<String> = values.iter().map(|v| (*v).to_owned()).collect();
        let mut map = self.values.lock().unwrap_or_else(|p| p.into_inner());
        let data = map.entry(key).or_insert_with(|| HistogramData {
            counts: vec![0; self.buckets.len()],
            sum: 0.0,
            count: 0,
        });
        for (i, le) in self.buckets.iter().enumerate() {
            if v <= *le {
                data.counts[i] += 1;
            }
        }
        data.sum += v;
        data.count += 1;
    }

    /// Observations of one series.
    pub fn count(&self, values: &[&str]) -> u64 {
        let key: Vec<String> = values.iter().map(|v| (*v).to_owned()).collect();
        let map = self.values.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&key).map_or(0, |d| d.count)
    }

    pub fn render(&self, out: &mut String) {
        header(out, self.name, "histogram", self.help);
        let map = self.values.lock().unwrap_or_else(|p| p.into_inner());
        let name = self.name;
        for (k, d) in map.iter() {
            for (le, c) in self.buckets.iter().zip(&d.counts) {
                let le = le.to_string();
                let l = labels(self.labels, k, Some(("le", &le)));
                let _ = writeln!(out, "{name}_bucket{l} {c}");
            }
            let l = labels(self.labels, k, Some(("le", "+Inf")));
            let _ = writeln!(out, "{name}_bucket{l} {}", d.count);
            let l = labels(self.labels, k, None);
            let _ = writeln!(out, "{name}_sum{l} {}", d.sum);
            let _ = writeln!(out, "{name}_count{l} {}", d.count);
        }
    }
}

/// The `[metrics]` section every service has.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Address of the plain-HTTP listener serving `/metrics` (unauthenticated: bind it to
    /// loopback or a management network, e.g. `127.0.0.1:9101`). Empty: no listener.
    pub listen: String,
}

impl MetricsConfig {
    /// The listener's address, `None` when off; the error names the key.
    pub fn validate(&self) -> anyhow::Result<Option<std::net::SocketAddr>> {
        match self.listen.trim() {
            "" => Ok(None),
            a => a.parse().map(Some).map_err(|_| {
                anyhow::anyhow!("metrics.listen: `{a}` is not an address such as 127.0.0.1:9101")
            }),
        }
    }
}

/// What renders a service's metrics in the text format.
pub type Render = Arc<dyn Fn() -> String + Send + Sync>;

/// Serves `GET /metrics` over plain HTTP on `listener` until `shutdown` resolves. Bind it to a
/// loopback or management address: it is not authenticated.
pub async fn serve(
    listener: tokio::net::TcpListener,
    render: Render,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::http::header;
    use axum::routing::get;
    let app = axum::Router::new().route(
        "/metrics",
        get(move || {
            let body = render();
            async move {
                (
                    [(
                        header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    body,
                )
            }
        }),
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Starts [`serve`] on `listener` as a task that logs where it listens and why it stopped.
pub fn spawn(
    listener: tokio::net::TcpListener,
    render: Render,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "metrics at http://{addr}/metrics");
    }
    tokio::spawn(async move {
        if let Err(e) = serve(listener, render, shutdown).await {
            tracing::error!(error = %e, "metrics endpoint stopped");
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_histograms_render_the_text_format() {
        let c = CounterVec::new("t_requests_total", "Requests.", &["method", "code"]);
        c.inc(&["Get", "ok"]);
        c.add(&["Get", "ok"], 2);
        c.inc(&["Put\"x", "denied"]);
        let h = HistogramVec::new("t_seconds", "Latency.", &["method"], &[0.1, 1.0]);
        h.observe(&["Get"], 0.05);
        h.observe(&["Get"], 0.5);
        h.observe(&["Get"], 5.0);
        let mut out = String::new();
        c.render(&mut out);
        h.render(&mut out);
        gauge(&mut out, "t_pool", "Pool.", "state", &[("idle", 3.0)]);
        for line in [
            "# TYPE t_requests_total counter",
            "t_requests_total{method=\"Get\",code=\"ok\"} 3",
            "t_requests_total{method=\"Put\\\"x\",code=\"denied\"} 1",
            "# TYPE t_seconds histogram",
            "t_seconds_bucket{method=\"Get\",le=\"0.1\"} 1",
            "t_seconds_bucket{method=\"Get\",le=\"1\"} 2",
            "t_seconds_bucket{method=\"Get\",le=\"+Inf\"} 3",
            "t_seconds_count{method=\"Get\"} 3",
            "t_seconds_sum{method=\"Get\"} 5.55",
            "t_pool{state=\"idle\"} 3",
        ] {
            assert!(
                out.lines().any(|l| l == line),
                "missing `{line}` in:\n{out}"
            );
        }
        assert_eq!(c.get(&["Get", "ok"]), 3);
        assert_eq!(h.count(&["Get"]), 3);
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
