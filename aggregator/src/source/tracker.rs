// SPDX-License-Identifier: Apache-2.0
//! Stream bookkeeping: schema check, loader restarts (epoch changes), sequence
//! gaps and the in-band loss reports. Pure logic, no I/O.
//!
//! Running totals from the loader (loss-report totals, socket refusals) only
//! grow within one epoch, kernel probe counters across epochs too (they are
//! pinned, like the event sequence), and the per-subscriber drop total within
//! one stream. A total that goes backwards anyway is counted in
//! `nettel_decode_errors_total{reason="counter_backwards"}` and never turned
//! into a negative or reset-sized delta: the baseline stays at the highest
//! value seen, so nothing is counted twice when the total climbs back.

use nettel_proto::v1;
use prometheus_client::metrics::{counter::Counter, family::Family};
use tracing::warn;

use super::message::StreamMessage;
use crate::{
    metrics::{Metrics, ProgramLabels, ReasonLabels},
    Error,
};

/// Most distinct program names accepted from a loader (it runs about ten).
const MAX_PROGRAMS: usize = 32;

/// A loader program name: `nt_` and up to 13 more of `[a-z0-9_]` (the
/// kernel keeps 15 characters of a program's name; nettel's fit).
fn valid_program_name(name: &str) -> bool {
    name.len() <= 32
        && name.starts_with("nt_")
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// What the tracker remembers across messages and reconnects.
#[derive(Debug, Default)]
pub struct Tracker {
    epoch: Option<u64>,
    /// Sequence number the next event should carry. Kept across reconnects and
    /// loader restarts (the loader's sequence survives them): events published
    /// while disconnected, or lost with a killed loader, show up as a gap.
    next_event: Option<u64>,
    /// Highest kernel probe counters seen (running totals of pinned kernel
    /// counters: they survive loader restarts, and start over only when the
    /// pin dir is removed, which also restarts the event sequence).
    probe: v1::ProbeCounters,
    /// Skipped runs per program (running totals per program instance, kept
    /// across epochs like the probe counters).
    program_runs: std::collections::BTreeMap<String, u64>,
    /// Highest socket refusal counters seen (running totals, per epoch).
    socket: v1::SocketCounters,
    /// Highest loader-wide loss totals seen in this epoch: (kernel reserve
    /// failures, decode errors).
    loss_totals: (u64, u64),
    /// Highest subscriber-drop total seen on this stream.
    stream_drops_total: u64,
    /// Totals seen going backwards (for log rate limiting).
    backwards: u64,
}

impl Tracker {
    /// A new stream starts: per-stream totals start over.
    pub fn stream_started(&mut self) {
        self.stream_drops_total = 0;
    }

    /// Checks one message and accounts its loss report. On `Err` the message
    /// must not be used, nor any later message of its stream.
    pub fn observe(&mut self, message: &StreamMessage, m: &Metrics) -> Result<(), Error> {
        let msg = &message.head;
        m.loader_schema_version.set(i64::from(msg.schema_version));
        if msg.schema_version > v1::SCHEMA_VERSION {
            m.schema_mismatch.inc();
            return Err(Error::SchemaTooNew { got: msg.schema_version, want: v1::SCHEMA_VERSION });
        }
        if self.epoch.is_some_and(|e| e != msg.epoch) {
            m.loader_restarts.inc();
            // A restarted loader continues the sequence (its cursor is pinned),
            // so events the old one published but never delivered are a gap.
            // A sequence that went back means the pin dir was removed: start over.
            if self.next_event.is_some_and(|next| msg.first_event_sequence < next) {
                self.next_event = None;
                // The kernel's probe counters are pinned with the sequence:
                // they start over only with it. A plain restart reports the
                // same totals, which must not be counted again.
                self.probe = v1::ProbeCounters::default();
                self.program_runs.clear();
            }
            self.socket = v1::SocketCounters::default();
            self.loss_totals = (0, 0);
        }
        self.epoch = Some(msg.epoch);
        if let Some(p) = &msg.probe_counters {
            let last = self.probe;
            self.mirror(
                m,
                &m.http_unmatched,
                &[
                    ("response_without_request", p.http_unmatched_responses, last.http_unmatched_responses),
                    ("closed_with_pending", p.http_closed_pending, last.http_closed_pending),
                    ("pipeline_full", p.http_pipeline_full, last.http_pipeline_full),
                    ("connection_table_full", p.http_connections_full, last.http_connections_full),
                    ("tls_no_connection", p.tls_no_connection, last.tls_no_connection),
                    ("tls_call_lost", p.tls_call_lost, last.tls_call_lost),
                ],
            );
            if p.http_table_full > last.http_table_full {
                m.http_table_full.inc_by(p.http_table_full - last.http_table_full);
            } else if p.http_table_full < last.http_table_full {
                self.counter_backwards(m, "http_table_full", p.http_table_full, last.http_table_full);
            }
            self.probe = v1::ProbeCounters {
                http_table_full: p.http_table_full.max(last.http_table_full),
                http_unmatched_responses: p.http_unmatched_responses.max(last.http_unmatched_responses),
                http_closed_pending: p.http_closed_pending.max(last.http_closed_pending),
                http_pipeline_full: p.http_pipeline_full.max(last.http_pipeline_full),
                http_connections_full: p.http_connections_full.max(last.http_connections_full),
                tls_no_connection: p.tls_no_connection.max(last.tls_no_connection),
                tls_call_lost: p.tls_call_lost.max(last.tls_call_lost),
                tls: None,
            };
            if let Some(t) = p.tls {
                set_tls_gauges(m, &t);
            }
        }
        self.observe_program_runs(&msg.program_runs, m);
        if let Some(r) = &msg.ring_buffer {
            m.ring_buffer_bytes.set(gauge(r.size_bytes));
            m.ring_buffer_high_water_bytes.set(gauge(r.high_water_bytes));
        }
        if let Some(s) = &msg.socket_counters {
            let last = self.socket;
            self.mirror(
                m,
                &m.loader_socket_refusals,
                &[
                    ("peer_not_allowed", s.peers_rejected, last.peers_rejected),
                    ("over_connection_limit", s.connections_over_limit, last.connections_over_limit),
                    ("handshake_timeout", s.handshake_timeouts, last.handshake_timeouts),
                    ("protocol_error", s.protocol_errors, last.protocol_errors),
                    ("stalled_subscriber", s.stalled_connections, last.stalled_connections),
                    ("idle_connection", s.idle_connections, last.idle_connections),
                    ("request_too_large", s.requests_too_large, last.requests_too_large),
                    ("invalid_request", s.requests_invalid, last.requests_invalid),
                ],
            );
            self.socket = v1::SocketCounters {
                peers_rejected: s.peers_rejected.max(last.peers_rejected),
                connections_over_limit: s.connections_over_limit.max(last.connections_over_limit),
                handshake_timeouts: s.handshake_timeouts.max(last.handshake_timeouts),
                protocol_errors: s.protocol_errors.max(last.protocol_errors),
                stalled_connections: s.stalled_connections.max(last.stalled_connections),
                idle_connections: s.idle_connections.max(last.idle_connections),
                requests_too_large: s.requests_too_large.max(last.requests_too_large),
                requests_invalid: s.requests_invalid.max(last.requests_invalid),
            };
        }

        let loss = msg.loss.unwrap_or_default();
        m.kernel_lost.inc_by(loss.kernel_reserve_failures);
        m.loader_queue_dropped.inc_by(loss.subscriber_queue_drops);
        m.loader_decode_errors.inc_by(loss.decode_errors);
        // The totals are for cross-checking only: the deltas above are what counts.
        let (kernel, decode) = self.loss_totals;
        for (name, now, last) in [
            ("kernel_reserve_failures_total", loss.kernel_reserve_failures_total, kernel),
            ("decode_errors_total", loss.decode_errors_total, decode),
            ("subscriber_queue_drops_total", loss.subscriber_queue_drops_total, self.stream_drops_total),
        ] {
            if now < last {
                self.counter_backwards(m, name, now, last);
            }
        }
        self.loss_totals =
            (kernel.max(loss.kernel_reserve_failures_total), decode.max(loss.decode_errors_total));
        self.stream_drops_total = self.stream_drops_total.max(loss.subscriber_queue_drops_total);

        if let Some(expected) = self.next_event {
            let explained = expected.saturating_add(loss.subscriber_queue_drops);
            if msg.first_event_sequence > explained {
                m.stream_gaps.inc();
                m.stream_gap_events.inc_by(msg.first_event_sequence - explained);
            } else if msg.first_event_sequence < explained {
                // Sequence went backwards within one epoch: count it as a gap of 0
                // events rather than trusting either side.
                m.stream_gaps.inc();
            }
        }
        self.next_event = Some(msg.first_event_sequence.saturating_add(message.events.len() as u64));
        Ok(())
    }

    /// Counts each program's growth in skipped runs. A total below the last
    /// one is a new instance of the program (replaced at a loader start):
    /// counted whole. Names are checked, and their number bounded: they
    /// become label values.
    fn observe_program_runs(&mut self, runs: &[v1::ProgramRuns], m: &Metrics) {
        for r in runs {
            let known = self.program_runs.contains_key(&r.program);
            if !valid_program_name(&r.program) || (!known && self.program_runs.len() >= MAX_PROGRAMS) {
                m.decode_errors.get_or_create(&ReasonLabels { reason: "invalid_program".into() }).inc();
                continue;
            }
            let last = self.program_runs.get(&r.program).copied().unwrap_or(0);
            let grew = if r.skipped >= last { r.skipped - last } else { r.skipped };
            if grew > 0 || !known {
                m.program_skipped_runs
                    .get_or_create(&ProgramLabels { program: r.program.clone() })
                    .inc_by(grew);
            }
            self.program_runs.insert(r.program.clone(), r.skipped);
        }
    }

    /// Adds each `(reason, total now, highest total before)` that grew to
    /// `family{reason}`; a total that went backwards is reported instead.
    fn mirror(&mut self, m: &Metrics, family: &Family<ReasonLabels, Counter>, totals: &[(&str, u64, u64)]) {
        for &(reason, now, last) in totals {
            if now < last {
                self.counter_backwards(m, reason, now, last);
            } else if now > last {
                family.get_or_create(&ReasonLabels { reason: reason.into() }).inc_by(now - last);
            }
        }
    }

    fn counter_backwards(&mut self, m: &Metrics, counter: &str, now: u64, last: u64) {
        m.decode_errors.get_or_create(&ReasonLabels { reason: "counter_backwards".into() }).inc();
        self.backwards += 1;
        if self.backwards.is_power_of_two() {
            warn!(
                counter,
                now,
                highest = last,
                total = self.backwards,
                "A loader running total went backwards within one epoch; ignoring the decrease."
            );
        }
    }
}

/// A loader's u64 as a gauge value (prometheus-client gauges are i64).
fn gauge(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The loader's HTTPS instrumentation gauges (current values, not totals).
fn set_tls_gauges(m: &Metrics, t: &v1::TlsStatus) {
    m.tls_instrumented_files.set(i64::from(t.files_instrumented));
    m.tls_instrumented_processes.set(i64::from(t.processes_instrumented));
    for (reason, n) in [
        ("go", t.uninstrumented_go),
        ("rustls", t.uninstrumented_rustls),
        ("stripped", t.uninstrumented_stripped),
        ("other_library", t.uninstrumented_other_library),
        ("unreadable", t.uninstrumented_unreadable),
        ("attach_failed", t.uninstrumented_attach_failed),
    ] {
        m.tls_uninstrumented.get_or_create(&ReasonLabels { reason: reason.into() }).set(i64::from(n));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(epoch: u64, first: u64, n: usize, drops: u64, kernel: u64) -> v1::StreamEventsResponse {
        v1::StreamEventsResponse {
            epoch,
            message_sequence: 0,
            first_event_sequence: first,
            events: vec![v1::Event::default(); n],
            loss: Some(v1::LossReport {
                kernel_reserve_failures: kernel,
                subscriber_queue_drops: drops,
                ..Default::default()
            }),
            schema_version: v1::SCHEMA_VERSION,
            probe_counters: None,
            socket_counters: None,
            ..Default::default()
        }
    }

    #[test]
    fn the_ring_gauges_follow_the_latest_message() {
        let m = Metrics::default();
        let mut t = Tracker::default();
        t.observe(&StreamMessage::from(msg(7, 1, 0, 0, 0)), &m).unwrap();
        assert_eq!(
            (m.ring_buffer_bytes.get(), m.ring_buffer_high_water_bytes.get()),
            (0, 0),
            "none sent yet"
        );
        for hw in [440_000, 880_000] {
            let ring = v1::RingBufferStatus { size_bytes: 4 << 20, high_water_bytes: hw };
            t.observe(
                &StreamMessage::from(v1::StreamEventsResponse {
                    ring_buffer: Some(ring),
                    ..msg(7, 1, 0, 0, 0)
                }),
                &m,
            )
            .unwrap();
            assert_eq!(
                (m.ring_buffer_bytes.get(), m.ring_buffer_high_water_bytes.get()),
                (4 << 20, hw as i64)
            );
        }
        assert_eq!(gauge(u64::MAX), i64::MAX, "saturates");
    }

    #[test]
    fn explained_drops_are_not_gaps_and_unexplained_jumps_are() {
        let m = Metrics::default();
        let mut t = Tracker::default();
        t.observe(&StreamMessage::from(msg(7, 1, 10, 0, 0)), &m).unwrap();
        t.observe(&StreamMessage::from(msg(7, 16, 5, 5, 3)), &m).unwrap(); // 5 dropped, reported
        assert_eq!((m.stream_gaps.get(), m.loader_queue_dropped.get(), m.kernel_lost.get()), (0, 5, 3));
        // Reconnect in the same epoch: events published meanwhile are a gap.
        t.observe(&StreamMessage::from(msg(7, 30, 1, 0, 0)), &m).unwrap();
        assert_eq!((m.stream_gaps.get(), m.stream_gap_events.get()), (1, 9));
        // Loader restart with the pin dir removed: new epoch, sequence restarts, no gap.
        t.observe(&StreamMessage::from(msg(9, 1, 1, 0, 0)), &m).unwrap();
        assert_eq!((m.loader_restarts.get(), m.stream_gaps.get()), (1, 1));
        // Heartbeat (no events) keeps the expectation.
        t.observe(&StreamMessage::from(msg(9, 2, 0, 0, 0)), &m).unwrap();
        t.observe(&StreamMessage::from(msg(9, 2, 1, 0, 0)), &m).unwrap();
        assert_eq!(m.stream_gaps.get(), 1);
    }

    #[test]
    fn a_restarted_loader_continues_the_sequence_and_crash_losses_are_gaps() {
        let m = Metrics::default();
        let mut t = Tracker::default();
        t.observe(&StreamMessage::from(msg(7, 1, 10, 0, 0)), &m).unwrap();
        // Graceful restart: the new loader starts where the old one stopped.
        t.observe(&StreamMessage::from(msg(8, 11, 5, 0, 0)), &m).unwrap();
        assert_eq!((m.loader_restarts.get(), m.stream_gaps.get()), (1, 0));
        // kill -9 with 4 events published but never delivered.
        t.observe(&StreamMessage::from(msg(9, 20, 1, 0, 0)), &m).unwrap();
        assert_eq!((m.loader_restarts.get(), m.stream_gaps.get(), m.stream_gap_events.get()), (2, 1, 4));
    }

    #[test]
    fn refuses_a_newer_schema() {
        let m = Metrics::default();
        let mut newer = msg(1, 1, 1, 0, 0);
        newer.schema_version = v1::SCHEMA_VERSION + 1;
        let e = Tracker::default().observe(&StreamMessage::from(newer.clone()), &m).unwrap_err().to_string();
        assert!(e.contains("upgrade the aggregator"), "{e}");
        let (ours, theirs) = (v1::SCHEMA_VERSION, v1::SCHEMA_VERSION + 1);
        assert!(
            e.contains(&format!("schema {theirs}")) && e.contains(&format!("schema {ours}")),
            "names both: {e}"
        );
        assert_eq!((m.schema_mismatch.get(), m.loader_schema_version.get()), (1, i64::from(theirs)));
        assert_eq!(m.loader_restarts.get() + m.kernel_lost.get(), 0, "nothing of the message was used");
        // An older (or unset) schema is fine.
        let mut older = msg(1, 1, 1, 0, 0);
        older.schema_version = 0;
        Tracker::default().observe(&StreamMessage::from(older.clone()), &m).unwrap();
    }

    fn backwards(m: &Metrics) -> u64 {
        m.decode_errors.get_or_create(&ReasonLabels { reason: "counter_backwards".into() }).get()
    }

    #[test]
    fn totals_going_backwards_are_reported_and_never_double_counted() {
        let m = Metrics::default();
        let mut t = Tracker::default();
        let probe = |n| v1::ProbeCounters { http_unmatched_responses: n, ..Default::default() };
        let unmatched = |m: &Metrics| {
            m.http_unmatched.get_or_create(&ReasonLabels { reason: "response_without_request".into() }).get()
        };
        let mut a = msg(7, 1, 0, 0, 0);
        a.probe_counters = Some(probe(10));
        a.loss.as_mut().unwrap().kernel_reserve_failures_total = 5;
        t.observe(&StreamMessage::from(a.clone()), &m).unwrap();
        assert_eq!((unmatched(&m), backwards(&m)), (10, 0));
        // Same epoch, both totals smaller: reported, nothing added.
        let mut b = msg(7, 1, 0, 0, 0);
        b.probe_counters = Some(probe(4));
        b.loss.as_mut().unwrap().kernel_reserve_failures_total = 3;
        t.observe(&StreamMessage::from(b.clone()), &m).unwrap();
        assert_eq!((unmatched(&m), backwards(&m)), (10, 2));
        // Climbing back to the old high is not counted twice; past it is.
        let mut c = msg(7, 1, 0, 0, 0);
        c.probe_counters = Some(probe(12));
        c.loss.as_mut().unwrap().kernel_reserve_failures_total = 5;
        t.observe(&StreamMessage::from(c.clone()), &m).unwrap();
        assert_eq!((unmatched(&m), backwards(&m)), (12, 2));
        // A restarted loader (new epoch, the sequence goes on) reports the
        // pinned kernel totals again: only their growth counts.
        let mut d = msg(8, 1, 5, 0, 0);
        d.probe_counters = Some(probe(12));
        t.observe(&StreamMessage::from(d.clone()), &m).unwrap();
        assert_eq!((unmatched(&m), backwards(&m), m.loader_restarts.get()), (12, 2, 1));
        d.first_event_sequence = 6;
        d.probe_counters = Some(probe(15));
        t.observe(&StreamMessage::from(d.clone()), &m).unwrap();
        assert_eq!(unmatched(&m), 15);
        // The pin dir removed (new epoch, the sequence starts over): so do
        // the kernel totals, counted from zero without being reported.
        let mut e = msg(9, 1, 0, 0, 0);
        e.probe_counters = Some(probe(1));
        t.observe(&StreamMessage::from(e.clone()), &m).unwrap();
        assert_eq!((unmatched(&m), backwards(&m), m.loader_restarts.get()), (16, 2, 2));
    }

    #[test]
    fn skipped_runs_count_per_program_across_restarts_and_replacements() {
        let m = Metrics::default();
        let mut t = Tracker::default();
        let skipped =
            |p: &str| m.program_skipped_runs.get_or_create(&ProgramLabels { program: p.into() }).get();
        let with = |epoch, first, runs: &[(&str, u64)]| {
            let mut x = msg(epoch, first, 0, 0, 0);
            x.program_runs =
                runs.iter().map(|(p, n)| v1::ProgramRuns { program: (*p).into(), skipped: *n }).collect();
            x
        };
        t.observe(&StreamMessage::from(with(7, 1, &[("nt_tcp_rtx", 0), ("nt_tls_ent", 3)])), &m).unwrap();
        assert_eq!((skipped("nt_tcp_rtx"), skipped("nt_tls_ent")), (0, 3));
        t.observe(&StreamMessage::from(with(7, 1, &[("nt_tcp_rtx", 2), ("nt_tls_ent", 3)])), &m).unwrap();
        assert_eq!((skipped("nt_tcp_rtx"), skipped("nt_tls_ent")), (2, 3));
        // A restarted loader adopted nt_tcp_rtx (same total) and loaded a new
        // nt_tls_ent (its total starts over): only growth, and the new one whole.
        t.observe(&StreamMessage::from(with(8, 1, &[("nt_tcp_rtx", 2), ("nt_tls_ent", 1)])), &m).unwrap();
        assert_eq!((skipped("nt_tcp_rtx"), skipped("nt_tls_ent")), (2, 4));
        // Names become labels: checked and bounded.
        t.observe(&StreamMessage::from(with(8, 1, &[("bad name\n", 5), ("other", 1)])), &m).unwrap();
        let invalid = m.decode_errors.get_or_create(&ReasonLabels { reason: "invalid_program".into() }).get();
        assert_eq!(invalid, 2);
        let many: Vec<(String, u64)> = (0..40).map(|i| (format!("nt_p{i}"), 1)).collect();
        let many: Vec<(&str, u64)> = many.iter().map(|(p, n)| (p.as_str(), *n)).collect();
        t.observe(&StreamMessage::from(with(8, 1, &many)), &m).unwrap();
        assert_eq!(t.program_runs.len(), MAX_PROGRAMS);
    }

    #[test]
    fn socket_refusals_are_mirrored_as_deltas_per_reason() {
        let m = Metrics::default();
        let mut t = Tracker::default();
        let refusals = |reason: &str| {
            m.loader_socket_refusals.get_or_create(&ReasonLabels { reason: reason.into() }).get()
        };
        let with = |epoch, s: v1::SocketCounters| {
            let mut x = msg(epoch, 1, 0, 0, 0);
            x.socket_counters = Some(s);
            x
        };
        let s = v1::SocketCounters { handshake_timeouts: 3, protocol_errors: 2, ..Default::default() };
        t.observe(&StreamMessage::from(with(7, s)), &m).unwrap();
        t.observe(&StreamMessage::from(with(7, v1::SocketCounters { stalled_connections: 1, ..s })), &m)
            .unwrap();
        t.observe(
            &StreamMessage::from(with(
                7,
                v1::SocketCounters { requests_too_large: 4, requests_invalid: 5, ..s },
            )),
            &m,
        )
        .unwrap();
        assert_eq!(
            [
                "peer_not_allowed",
                "over_connection_limit",
                "handshake_timeout",
                "protocol_error",
                "stalled_subscriber",
                "request_too_large",
                "invalid_request"
            ]
            .map(refusals),
            [0, 0, 3, 2, 1, 4, 5]
        );
        // stalled_subscriber went from 1 to 0 in the last message.
        assert_eq!(backwards(&m), 1);
        // A new epoch starts from zero.
        t.observe(
            &StreamMessage::from(with(
                8,
                v1::SocketCounters { peers_rejected: 1, connections_over_limit: 985, ..Default::default() },
            )),
            &m,
        )
        .unwrap();
        assert_eq!((refusals("peer_not_allowed"), refusals("over_connection_limit")), (1, 985));
        assert_eq!((refusals("handshake_timeout"), backwards(&m)), (3, 1));
    }

    #[test]
    fn subscriber_drop_totals_restart_with_each_stream() {
        let m = Metrics::default();
        let mut t = Tracker::default();
        let with_total = |first, total| {
            let mut x = msg(7, first, 0, 0, 0);
            x.loss.as_mut().unwrap().subscriber_queue_drops_total = total;
            x
        };
        t.stream_started();
        t.observe(&StreamMessage::from(with_total(1, 30)), &m).unwrap();
        t.observe(&StreamMessage::from(with_total(1, 20)), &m).unwrap();
        assert_eq!(backwards(&m), 1, "backwards within one stream");
        t.stream_started();
        t.observe(&StreamMessage::from(with_total(1, 0)), &m).unwrap();
        assert_eq!(backwards(&m), 1, "a new stream starts from 0");
    }
}
