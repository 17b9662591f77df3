//! The server's Prometheus metrics: the families the APIs and tasks count into, rendered with
//! the gauges read at scrape time (database pool, replication backlog) by `AppState`.

use std::sync::atomic::{AtomicI64, Ordering};

use ums_service::metrics::{CounterVec, HistogramVec, LATENCY_BUCKETS, SIZE_BUCKETS};

/// Buckets of the event lag in seconds, 1 ms to 30 s.
const LAG_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

pub struct ServerMetrics {
    /// Requests by port (`device`, `admin`, `internal`), method and status code.
    pub requests: CounterVec,
    pub request_seconds: HistogramVec,
    /// Check-ins and registrations committed per transaction.
    pub checkin_batch: HistogramVec,
    /// Time from an event's publication on one server to its arrival here.
    pub event_lag: HistogramVec,
    pub events: CounterVec,
    /// Administrator and Shared Workplace logins by outcome.
    pub logins: CounterVec,
    /// Join attempts refused for a token of another network.
    pub token_mismatches: CounterVec,
    /// Files this server lacks, as the replicator last counted.
    pub replication_backlog: AtomicI64,
}

impl Default for ServerMetrics {
    fn default() -> Self {
        Self {
            requests: CounterVec::new(
                "ums_server_requests_total",
                "Requests served, by port (device, admin, internal), method and status (gRPC code name, or HTTP status of the JSON API).",
                &["api", "method", "status"],
            ),
            request_seconds: HistogramVec::new(
                "ums_server_request_duration_seconds",
                "Time to answer a request, by port and method.",
                &["api", "method"],
                LATENCY_BUCKETS,
            ),
            checkin_batch: HistogramVec::new(
                "ums_server_checkin_batch_size",
                "Check-ins and registrations committed in one database transaction.",
                &[],
                SIZE_BUCKETS,
            ),
            event_lag: HistogramVec::new(
                "ums_server_event_lag_seconds",
                "Time from a probe event's publication on a server to its arrival on this one (the sender's clock against this server's).",
                &[],
                LAG_BUCKETS,
            ),
            events: CounterVec::new(
                "ums_server_events_received_total",
                "Events received from the other servers, by kind.",
                &["event"],
            ),
            logins: CounterVec::new(
                "ums_server_logins_total",
                "Logins of administrators (admin) and Shared Workplace users (swp), by outcome.",
                &["kind", "outcome"],
            ),
            token_mismatches: CounterVec::new(
                "ums_server_token_mismatches_total",
                "Join attempts refused because the token belongs to another network, by component kind.",
                &["kind"],
            ),
            replication_backlog: AtomicI64::new(0),
        }
    }
}

impl ServerMetrics {
    pub fn set_replication_backlog(&self, files: usize) {
        self.replication_backlog
            .store(files as i64, Ordering::Relaxed);
    }

    /// The counted families in the text format.
    pub fn render_into(&self, out: &mut String) {
        self.requests.render(out);
        self.request_seconds.render(out);
        self.checkin_batch.render(out);
        self.event_lag.render(out);
        self.events.render(out);
        self.logins.render(out);
        self.token_mismatches.render(out);
        ums_service::metrics::gauge(
            out,
            "ums_server_replication_backlog_files",
            "Files of the network this server does not hold yet.",
            "",
            &[("", self.replication_backlog.load(Ordering::Relaxed) as f64)],
        );
    }
}

/// The gRPC code name of a numeric `grpc-status`.
pub fn grpc_code_name(code: &str) -> &'static str {
    match code {
        "0" => "ok",
        "1" => "cancelled",
        "2" => "unknown",
        "3" => "invalid_argument",
        "4" => "deadline_exceeded",
        "5" => "not_found",
        "6" => "already_exists",
        "7" => "permission_denied",
        "8" => "resource_exhausted",
        "9" => "failed_precondition",
        "10" => "aborted",
        "11" => "out_of_range",
        "12" => "unimplemented",
        "13" => "internal",
        "14" => "unavailable",
        "15" => "data_loss",
        "16" => "unauthenticated",
        _ => "other",
    }
}
