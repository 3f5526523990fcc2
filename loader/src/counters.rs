// SPDX-License-Identifier: Apache-2.0
//! Loader-wide counters, shared by the drain loop, the hub and the server, and
//! reported by the status RPC.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};

use nettel_proto::v1;
use tracing::warn;

/// Monotonic counters since the loader started.
#[derive(Debug, Default)]
pub struct Counters {
    pub records_read: AtomicU64,
    pub decode_errors: AtomicU64,
    pub kernel_submitted: AtomicU64,
    pub kernel_reserve_failures: AtomicU64,
    /// The reserve-failure total as of the last batch offered to at least one
    /// subscriber (and carried over from the previous loader by the cursor):
    /// a new subscriber's baseline, so failures while nobody listened are
    /// reported to the next subscriber instead of vanishing.
    pub kernel_reserve_failures_reported: AtomicU64,
    pub subscriber_queue_drops: AtomicU64,
    pub subscribers_connected: AtomicU32,
    /// Refusals on the socket (see `socket` and `conn`; proto `SocketCounters`).
    pub peers_rejected: AtomicU64,
    pub connections_over_limit: AtomicU64,
    pub handshake_timeouts: AtomicU64,
    pub protocol_errors: AtomicU64,
    pub stalled_connections: AtomicU64,
    pub idle_connections: AtomicU64,
    pub requests_too_large: AtomicU64,
    pub requests_invalid: AtomicU64,
    pub http_unmatched: AtomicU64,
    pub http_closed_pending: AtomicU64,
    pub http_pipeline_full: AtomicU64,
    pub http_connections_full: AtomicU64,
    pub tls_no_connection: AtomicU64,
    pub tls_call_lost: AtomicU64,
    pub http_table_full: AtomicU64,
    /// What the TLS attacher last saw.
    pub tls: std::sync::Arc<crate::tls::Shared>,
}

impl Counters {
    /// Snapshot for the status RPC.
    pub fn to_proto(&self) -> v1::LoaderCounters {
        v1::LoaderCounters {
            records_read: self.records_read.load(Relaxed),
            kernel_submitted: self.kernel_submitted.load(Relaxed),
            kernel_reserve_failures: self.kernel_reserve_failures.load(Relaxed),
            decode_errors: self.decode_errors.load(Relaxed),
            subscriber_queue_drops: self.subscriber_queue_drops.load(Relaxed),
            subscribers_connected: self.subscribers_connected.load(Relaxed),
            peers_rejected: self.peers_rejected.load(Relaxed),
            connections_over_limit: self.connections_over_limit.load(Relaxed),
            probe: Some(self.probe()),
            socket: Some(self.socket()),
        }
    }

    /// Refusals on the socket (running totals).
    pub fn socket(&self) -> v1::SocketCounters {
        v1::SocketCounters {
            peers_rejected: self.peers_rejected.load(Relaxed),
            connections_over_limit: self.connections_over_limit.load(Relaxed),
            handshake_timeouts: self.handshake_timeouts.load(Relaxed),
            protocol_errors: self.protocol_errors.load(Relaxed),
            stalled_connections: self.stalled_connections.load(Relaxed),
            idle_connections: self.idle_connections.load(Relaxed),
            requests_too_large: self.requests_too_large.load(Relaxed),
            requests_invalid: self.requests_invalid.load(Relaxed),
        }
    }

    /// Kernel-side probe counters (running totals).
    pub fn probe(&self) -> v1::ProbeCounters {
        v1::ProbeCounters {
            http_unmatched_responses: self.http_unmatched.load(Relaxed),
            http_closed_pending: self.http_closed_pending.load(Relaxed),
            http_pipeline_full: self.http_pipeline_full.load(Relaxed),
            http_connections_full: self.http_connections_full.load(Relaxed),
            tls_no_connection: self.tls_no_connection.load(Relaxed),
            tls_call_lost: self.tls_call_lost.load(Relaxed),
            http_table_full: self.http_table_full.load(Relaxed),
            tls: Some(self.tls.status()),
        }
    }
}

/// Adds one to `counter` and returns the new total when it is a power of two:
/// refusals caused by peers are logged then (1st, 2nd, 4th, ...), so a flood
/// of bad connections writes a few log lines, not one per connection.
pub fn bump(counter: &AtomicU64) -> Option<u64> {
    let total = counter.fetch_add(1, Relaxed) + 1;
    total.is_power_of_two().then_some(total)
}

/// Stores a kernel running total (a sum over CPUs of a `nt_stats` slot), never
/// letting it go backwards: the totals feed subscribers' loss deltas, and a
/// smaller sum (which a per-CPU counter cannot produce, but a map replaced
/// under the loader could) would otherwise be reported as a negative loss.
/// Returns whether the new sum was smaller; that is logged, naming the slot.
pub fn store_total(counter: &AtomicU64, sum: u64, slot: u32) -> bool {
    let prev = counter.fetch_max(sum, Relaxed);
    let backwards = sum < prev;
    if backwards {
        warn!(
            slot,
            previous = prev,
            now = sum,
            "A kernel statistics total went backwards; keeping the previous value."
        );
    }
    backwards
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bump_reports_powers_of_two() {
        let c = AtomicU64::new(0);
        let logged: Vec<u64> = (0..20).filter_map(|_| bump(&c)).collect();
        assert_eq!(logged, [1, 2, 4, 8, 16]);
        assert_eq!(c.load(Relaxed), 20);
    }

    #[test]
    fn kernel_totals_never_go_backwards() {
        let c = AtomicU64::new(0);
        assert!(!store_total(&c, 10, 1));
        assert!(store_total(&c, 4, 1), "reported");
        assert_eq!(c.load(Relaxed), 10, "kept");
        assert!(!store_total(&c, 12, 1));
        assert_eq!(c.load(Relaxed), 12);
    }
}
