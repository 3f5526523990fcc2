// SPDX-License-Identifier: Apache-2.0
//! Stream bookkeeping: schema check, loader restarts (epoch changes), sequence
//! gaps and the in-band loss reports. Pure logic, no I/O.

use nettel_proto::v1;

use crate::{
    metrics::{Metrics, ReasonLabels},
    Error,
};

/// What the tracker remembers across messages and reconnects.
#[derive(Debug, Default)]
pub struct Tracker {
    epoch: Option<u64>,
    /// Sequence number the next event should carry, within `epoch`. Kept across
    /// reconnects: events published while disconnected show up as a gap.
    next_event: Option<u64>,
    /// Last kernel probe counters seen (running totals, per epoch).
    probe: v1::ProbeCounters,
}

impl Tracker {
    /// Checks one message and accounts its loss report. On `Err` the message
    /// must not be used.
    pub fn observe(&mut self, msg: &v1::StreamEventsResponse, m: &Metrics) -> Result<(), Error> {
        if msg.schema_version > v1::SCHEMA_VERSION {
            return Err(Error::SchemaTooNew { got: msg.schema_version, want: v1::SCHEMA_VERSION });
        }
        if self.epoch.is_some_and(|e| e != msg.epoch) {
            m.loader_restarts.inc();
            self.next_event = None;
            self.probe = v1::ProbeCounters::default();
        }
        if let Some(p) = &msg.probe_counters {
            let add = |reason: &str, now: u64, last: u64| {
                // Totals only grow within an epoch; a smaller one means a reset.
                let delta = if now >= last { now - last } else { now };
                if delta > 0 {
                    m.http_unmatched.get_or_create(&ReasonLabels { reason: reason.into() }).inc_by(delta);
                }
            };
            add("response_without_request", p.http_unmatched_responses, self.probe.http_unmatched_responses);
            add("closed_with_pending", p.http_closed_pending, self.probe.http_closed_pending);
            add("pipeline_full", p.http_pipeline_full, self.probe.http_pipeline_full);
            add("connection_table_full", p.http_connections_full, self.probe.http_connections_full);
            self.probe = *p;
        }
        self.epoch = Some(msg.epoch);

        let loss = msg.loss.unwrap_or_default();
        m.kernel_lost.inc_by(loss.kernel_reserve_failures);
        m.loader_queue_dropped.inc_by(loss.subscriber_queue_drops);
        m.loader_decode_errors.inc_by(loss.decode_errors);

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
        self.next_event = Some(msg.first_event_sequence.saturating_add(msg.events.len() as u64));
        Ok(())
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
        }
    }

    #[test]
    fn explained_drops_are_not_gaps_and_unexplained_jumps_are() {
        let m = Metrics::default();
        let mut t = Tracker::default();
        t.observe(&msg(7, 1, 10, 0, 0), &m).unwrap();
        t.observe(&msg(7, 16, 5, 5, 3), &m).unwrap(); // 5 dropped, reported
        assert_eq!((m.stream_gaps.get(), m.loader_queue_dropped.get(), m.kernel_lost.get()), (0, 5, 3));
        // Reconnect in the same epoch: events published meanwhile are a gap.
        t.observe(&msg(7, 30, 1, 0, 0), &m).unwrap();
        assert_eq!((m.stream_gaps.get(), m.stream_gap_events.get()), (1, 9));
        // Loader restart: new epoch, sequence restarts, no gap.
        t.observe(&msg(9, 1, 1, 0, 0), &m).unwrap();
        assert_eq!((m.loader_restarts.get(), m.stream_gaps.get()), (1, 1));
        // Heartbeat (no events) keeps the expectation.
        t.observe(&msg(9, 2, 0, 0, 0), &m).unwrap();
        t.observe(&msg(9, 2, 1, 0, 0), &m).unwrap();
        assert_eq!(m.stream_gaps.get(), 1);
    }

    #[test]
    fn refuses_a_newer_schema() {
        let m = Metrics::default();
        let mut newer = msg(1, 1, 1, 0, 0);
        newer.schema_version = v1::SCHEMA_VERSION + 1;
        let e = Tracker::default().observe(&newer, &m).unwrap_err().to_string();
        assert!(e.contains("upgrade the aggregator"), "{e}");
    }
}
