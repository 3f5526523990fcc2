// SPDX-License-Identifier: Apache-2.0
//! Every metric the aggregator serves: the product metrics (`node_*`) and the
//! self-metrics (`nettel_*`), registered once in one registry.

use std::sync::Arc;

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family as ClientFamily, gauge::Gauge},
    registry::Registry,
};

use crate::sink::families::{push_label, CounterValue, Family, HistogramValue, LabelSet};

/// Buckets of `http_request_duration_seconds`: 1 ms to 10 s, including the
/// seed's 0.05 and 0.1.
pub const HTTP_BUCKETS: [f64; 13] =
    [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Labels of `http_request_duration_seconds`.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
pub struct HttpLabels {
    /// The serving pod (by cgroup, else by the socket's local address); empty for node-level.
    pub pod: String,
    pub namespace: String,
    pub service: String,
    /// GET, POST, PUT, DELETE, HEAD, PATCH, OPTIONS, CONNECT, TRACE or OTHER.
    pub method: String,
    /// The 3-digit status code.
    pub status: String,
}

impl LabelSet for HttpLabels {
    fn write_text(&self, out: &mut String) {
        push_label(out, "pod", &self.pod);
        push_label(out, "namespace", &self.namespace);
        push_label(out, "service", &self.service);
        push_label(out, "method", &self.method);
        push_label(out, "status", &self.status);
    }
}

/// `http_request_duration_seconds`, with trace-id exemplars.
#[derive(Debug, Clone)]
pub struct HttpDurations(pub Arc<Family<HistogramValue>>);

impl Default for HttpDurations {
    fn default() -> Self {
        Self(Arc::new(Family::new(
            "http_request_duration_seconds",
            "Server-side HTTP/1.x request latency (request read to status line written), by serving pod, method and status",
        )))
    }
}

/// Labels of `node_tcp_retransmits_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
pub struct RetransmitLabels {
    /// Pod owning the destination address; empty for node-level.
    pub pod: String,
    pub namespace: String,
    pub service: String,
    /// Destination port, or `ephemeral` (see `transform::fold_port`).
    pub dest_port: String,
    /// `data` (tcp_retransmit_skb) or `synack` (tcp_retransmit_synack).
    pub kind: String,
}

impl LabelSet for RetransmitLabels {
    fn write_text(&self, out: &mut String) {
        push_label(out, "pod", &self.pod);
        push_label(out, "namespace", &self.namespace);
        push_label(out, "service", &self.service);
        push_label(out, "dest_port", &self.dest_port);
        push_label(out, "kind", &self.kind);
    }
}

/// `node_tcp_retransmits_total`.
#[derive(Debug, Clone)]
pub struct TcpRetransmits(pub Arc<Family<CounterValue>>);

impl Default for TcpRetransmits {
    fn default() -> Self {
        Self(Arc::new(Family::new(
            "node_tcp_retransmits",
            "TCP segments retransmitted to a destination (as counted by the kernel's TcpRetransSegs), by destination pod and port; kind=data for tcp_retransmit_skb, kind=synack for SYN-ACK retransmits",
        )))
    }
}

/// A `reason` label.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

/// A `metric` label: the family a self-metric is about.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MetricLabels {
    pub metric: String,
}

/// A `program` label: a BPF program of the loader.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProgramLabels {
    pub program: String,
}

/// A `kind` label.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: String,
}

/// All metric handles.
#[derive(Debug, Default)]
pub struct Metrics {
    /// `node_tcp_retransmits_total` (served by `sink::families`, not the registry).
    pub tcp_retransmits: TcpRetransmits,
    pub tcp_retransmit_failed: Counter,
    pub events_received: ClientFamily<KindLabels, Counter>,
    pub kernel_lost: Counter,
    pub loader_queue_dropped: Counter,
    pub loader_decode_errors: Counter,
    /// Connections and requests the loader refused on its socket, by reason.
    pub loader_socket_refusals: ClientFamily<ReasonLabels, Counter>,
    pub decode_errors: ClientFamily<ReasonLabels, Counter>,
    pub stream_connects: Counter,
    pub stream_disconnects: ClientFamily<ReasonLabels, Counter>,
    pub stream_gaps: Counter,
    pub stream_gap_events: Counter,
    pub loader_restarts: Counter,
    pub loader_connected: Gauge,
    pub unresolved_addresses: ClientFamily<KindLabels, Counter>,
    pub pods_indexed: Gauge,
    pub kube_pods: Gauge,
    pub kube_synced: Gauge,
    pub kube_last_sync_age: Gauge<f64, std::sync::atomic::AtomicU64>,
    pub kube_watch_errors: ClientFamily<ResourceLabels, Counter>,
    pub kube_relists: ClientFamily<ResourceLabels, Counter>,
    /// `http_request_duration_seconds` (served by `sink::families`, not the registry).
    pub http_duration: HttpDurations,
    pub http_unmatched: ClientFamily<ReasonLabels, Counter>,
    /// Requests the kernel sent one by one because its totals table was full.
    pub http_table_full: Counter,
    pub program_skipped_runs: ClientFamily<ProgramLabels, Counter>,
    /// Files (libssl copies, executables) carrying the OpenSSL uprobes.
    pub tls_instrumented_files: Gauge,
    /// Processes mapping one of them.
    pub tls_instrumented_processes: Gauge,
    /// Processes with TLS nettel cannot instrument, by reason.
    pub tls_uninstrumented: ClientFamily<ReasonLabels, Gauge>,
    /// The loader's kernel ring buffer: size and high-water mark in bytes.
    pub ring_buffer_bytes: Gauge,
    pub ring_buffer_high_water_bytes: Gauge,
    /// Live series of each limited metric (`transform::limit_cardinality`).
    pub series: ClientFamily<MetricLabels, Gauge>,
    /// Events counted into an overflow series.
    pub series_overflow_events: ClientFamily<MetricLabels, Counter>,
    /// Distinct label sets refused by the series budget.
    pub series_refused: ClientFamily<MetricLabels, Counter>,
    /// Series removed after `--series-ttl-secs` without events.
    pub series_expired: ClientFamily<MetricLabels, Counter>,
    /// Streams refused because the loader writes a newer event schema.
    pub schema_mismatch: Counter,
    /// Event schema version of the loader's last stream message.
    pub loader_schema_version: Gauge,
}

/// A `resource` label (`pods`, `endpointslices`).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResourceLabels {
    pub resource: String,
}

impl Metrics {
    /// Registers every self-metric in a new registry (the product families
    /// are written by `sink::families`).
    pub fn register(&self) -> Registry {
        let mut r = Registry::default();
        r.register(
            "nettel_tcp_retransmit_failed_attempts",
            "Retransmit attempts the kernel reported as failed (tracepoint err != 0); not in node_tcp_retransmits_total",
            self.tcp_retransmit_failed.clone(),
        );
        r.register("nettel_events_received", "Events received from the loader", self.events_received.clone());
        r.register(
            "nettel_kernel_lost_events",
            "Events lost in the kernel because the ring buffer was full (bpf_ringbuf_reserve failures)",
            self.kernel_lost.clone(),
        );
        r.register(
            "nettel_loader_queue_dropped_events",
            "Events the loader dropped because this aggregator's queue was full",
            self.loader_queue_dropped.clone(),
        );
        r.register(
            "nettel_loader_decode_errors",
            "Ring-buffer records the loader could not decode",
            self.loader_decode_errors.clone(),
        );
        r.register(
            "nettel_loader_socket_refusals",
            "Connections and requests the loader refused or closed on its socket, by reason (peer_not_allowed, over_connection_limit, handshake_timeout, protocol_error, stalled_subscriber, idle_connection, request_too_large, invalid_request); loader-wide totals",
            self.loader_socket_refusals.clone(),
        );
        r.register(
            "nettel_decode_errors",
            "Events this aggregator could not use, by reason",
            self.decode_errors.clone(),
        );
        r.register(
            "nettel_stream_connects",
            "Event streams opened to the loader",
            self.stream_connects.clone(),
        );
        r.register(
            "nettel_stream_disconnects",
            "Event streams that ended or failed, by reason",
            self.stream_disconnects.clone(),
        );
        r.register(
            "nettel_stream_gaps",
            "Jumps in the loader's event sequence not explained by reported drops (e.g. events published while disconnected)",
            self.stream_gaps.clone(),
        );
        r.register(
            "nettel_stream_gap_events",
            "Events missing in those sequence gaps",
            self.stream_gap_events.clone(),
        );
        r.register(
            "nettel_loader_restarts",
            "Loader epoch changes seen (loader restarts)",
            self.loader_restarts.clone(),
        );
        r.register(
            "nettel_loader_connected",
            "1 while an event stream to the loader is open",
            self.loader_connected.clone(),
        );
        r.register(
            "nettel_unresolved_addresses",
            "Events whose address (or cgroup) matched no pod and got node-level labels, by event kind",
            self.unresolved_addresses.clone(),
        );
        r.register("nettel_pods_indexed", "Addresses in the pod index", self.pods_indexed.clone());
        r.register(
            "nettel_kube_pods",
            "Pods held by the Kubernetes cache (deleted ones until their TTL)",
            self.kube_pods.clone(),
        );
        r.register(
            "nettel_kube_synced",
            "1 once the Pod and EndpointSlice caches completed their initial list",
            self.kube_synced.clone(),
        );
        r.register(
            "nettel_kube_last_sync_age_seconds",
            "Seconds since the Kubernetes watch last delivered anything (event, bookmark-free list completion)",
            self.kube_last_sync_age.clone(),
        );
        r.register(
            "nettel_kube_watch_errors",
            "Watch errors, by resource (each followed by a backoff)",
            self.kube_watch_errors.clone(),
        );
        r.register(
            "nettel_kube_relists",
            "Full lists (initial and after 410 Gone), by resource",
            self.kube_relists.clone(),
        );
        r.register(
            "nettel_http_unmatched",
            "HTTP requests or responses the kernel probe could not pair, by reason (response_without_request, closed_with_pending, pipeline_full, connection_table_full, tls_no_connection, tls_call_lost)",
            self.http_unmatched.clone(),
        );
        r.register(
            "nettel_http_kernel_table_full",
            "HTTP requests sent as single events because the kernel's totals table (--http-table-entries, 8192 by default) was full; counted all the same, at a higher cost per request",
            self.http_table_full.clone(),
        );
        r.register(
            "nettel_kernel_program_skipped_runs",
            "Runs of a BPF program the kernel skipped (its recursion_misses: it fired while a BPF program ran on its CPU, or, for tracepoint and uprobe programs, during a bpf() map syscall there); their events are lost",
            self.program_skipped_runs.clone(),
        );
        r.register(
            "nettel_tls_instrumented_files",
            "Files (libssl copies, executables with OpenSSL/BoringSSL symbols) with the HTTPS uprobes attached on the loader's node",
            self.tls_instrumented_files.clone(),
        );
        r.register(
            "nettel_tls_instrumented_processes",
            "Processes mapping a file with the HTTPS uprobes attached",
            self.tls_instrumented_processes.clone(),
        );
        r.register(
            "nettel_loader_ring_buffer_bytes",
            "Size of the loader's kernel ring buffer in bytes (--ring-buffer-bytes)",
            self.ring_buffer_bytes.clone(),
        );
        r.register(
            "nettel_loader_ring_buffer_high_water_bytes",
            "Most bytes of events found waiting in the loader's ring buffer since the loader started; near nettel_loader_ring_buffer_bytes, bursts will soon be lost in the kernel",
            self.ring_buffer_high_water_bytes.clone(),
        );
        r.register(
            "nettel_tls_uninstrumented_processes",
            "Processes with TLS whose HTTP nettel cannot see, by reason (go, rustls, stripped, other_library, unreadable, attach_failed)",
            self.tls_uninstrumented.clone(),
        );
        r.register(
            "nettel_series",
            "Live series of each cardinality-limited metric, its overflow series included",
            self.series.clone(),
        );
        r.register(
            "nettel_series_overflow_events",
            "Events counted into a metric's overflow series (label values __overflow__) because its series budget was spent",
            self.series_overflow_events.clone(),
        );
        r.register(
            "nettel_series_refused",
            "Label sets refused by the series budget (distinct among the last 65536 refused)",
            self.series_refused.clone(),
        );
        r.register(
            "nettel_series_expired",
            "Series removed from /metrics after --series-ttl-secs without events",
            self.series_expired.clone(),
        );
        r.register(
            "nettel_schema_mismatch",
            "Loader streams refused because they carry a newer event schema than this aggregator understands",
            self.schema_mismatch.clone(),
        );
        r.register(
            "nettel_loader_schema_version",
            format!(
                "Event schema version of the loader's last stream message (this aggregator understands up to {})",
                nettel_proto::v1::SCHEMA_VERSION
            ),
            self.loader_schema_version.clone(),
        );
        r
    }
}
