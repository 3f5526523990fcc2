// SPDX-License-Identifier: Apache-2.0
//! The kernel's HTTP request totals (`nt_http_table`, see `abi.h`) for the
//! stream: most requests are counted there instead of crossing the ring
//! buffer one by one.
//!
//! The table holds running totals that only grow and outlive a loader
//! restart (it is pinned), so the loader sends totals, never deltas, and
//! keeps no state a restart could lose: a consumer adds the growth since the
//! totals it last saw (proto `HttpTotals`). Only entries that changed since
//! the previous read go out, plus every entry every [`FULL_EVERY`] reads, so
//! a subscriber that joined later or lost a batch to a full queue catches up.

use std::collections::HashMap;

use aya::maps::{HashMap as BpfHashMap, MapData};
use nettel_bpf::abi;
use nettel_proto::v1;
use tracing::warn;

use super::convert;

/// Every entry is sent at least once per this many reads.
pub const FULL_EVERY: u64 = 20;

type Key = (u64, [u8; 16], u8, u8, u16, u32);
type Totals = (u64, [u64; abi::NT_HTTP_BUCKETS as usize]);

/// The pinned table and what was last sent from it.
pub struct HttpTable {
    map: BpfHashMap<MapData, abi::nt_http_key, abi::nt_http_totals>,
    /// Totals as last sent, per entry (at most the table's size).
    sent: HashMap<Key, Totals>,
    reads: u64,
    read_errors: u64,
}

impl std::fmt::Debug for HttpTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpTable")
            .field("entries_sent", &self.sent.len())
            .field("reads", &self.reads)
            .finish()
    }
}

impl HttpTable {
    pub fn new(map: BpfHashMap<MapData, abi::nt_http_key, abi::nt_http_totals>) -> Self {
        Self { map, sent: HashMap::new(), reads: 0, read_errors: 0 }
    }

    /// Entries whose totals changed since the previous call, or all of them
    /// every [`FULL_EVERY`] calls (the first call included).
    pub fn changes(&mut self) -> Vec<v1::HttpTotals> {
        let full = self.reads.is_multiple_of(FULL_EVERY);
        self.reads += 1;
        let mut out = Vec::new();
        for item in self.map.iter() {
            let (k, v) = match item {
                Ok(kv) => kv,
                Err(e) => {
                    // The entry is read again on the next call; nothing is lost.
                    self.read_errors += 1;
                    if self.read_errors.is_power_of_two() {
                        warn!(error = %e, errors = self.read_errors, "Failed to read the HTTP totals table.");
                    }
                    break;
                }
            };
            let key = (k.cgroup_id, k.addr, k.family, k.method, k.status, k.flags);
            let totals = (v.sum_ns, v.buckets);
            if !full && self.sent.get(&key) == Some(&totals) {
                continue;
            }
            self.sent.insert(key, totals);
            out.push(to_proto(&k, &v));
        }
        out
    }
}

/// One table entry as its proto message.
pub fn to_proto(k: &abi::nt_http_key, v: &abi::nt_http_totals) -> v1::HttpTotals {
    v1::HttpTotals {
        cgroup_id: k.cgroup_id,
        local_addr: convert::addr(&k.addr, k.family),
        method: convert::method(k.method) as i32,
        status: k.status.into(),
        tls: k.flags & abi::NT_HTTP_F_TLS != 0,
        sum_ns: v.sum_ns,
        bucket_counts: v.buckets.to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_becomes_its_proto_totals() {
        let mut k = abi::nt_http_key {
            cgroup_id: 7,
            family: 2,
            method: abi::NT_HTTP_POST as u8,
            status: 503,
            ..Default::default()
        };
        k.addr[..4].copy_from_slice(&[10, 0, 0, 9]);
        k.flags = abi::NT_HTTP_F_TLS;
        let mut v = abi::nt_http_totals { sum_ns: 42, ..Default::default() };
        v.buckets[3] = 2;
        let p = to_proto(&k, &v);
        assert_eq!(p.local_addr, [10, 0, 0, 9]);
        assert_eq!(
            (p.cgroup_id, p.method(), p.status, p.tls, p.sum_ns),
            (7, v1::HttpMethod::Post, 503, true, 42)
        );
        assert_eq!(p.bucket_counts.len(), nettel_bpf::HTTP_BOUNDS_NS.len() + 1);
        assert_eq!(p.bucket_counts[3], 2);
    }
}
