// SPDX-License-Identifier: Apache-2.0
//! Drains the kernel ring buffer into batches for the hub.
//!
//! The drain wakes on the ring buffer's epoll readiness (the probes submit with
//! adaptive wakeup, so a busy ring wakes us once per drain, not per event) and
//! on a periodic tick that refreshes the kernel counters and sends heartbeats.

use std::{
    sync::{atomic::Ordering::Relaxed, Arc},
    time::{Duration, Instant},
};

use aya::maps::{MapData, RingBuf};
use nettel_bpf::{abi, decode, DecodeError};
use nettel_proto::v1;
use tracing::warn;

use crate::{
    counters::{self, Counters},
    hub::{Batch, Hub},
    probe::Probes,
    Error,
};

/// How often kernel counters are read and idle heartbeats considered.
const TICK: Duration = Duration::from_millis(100);

/// Drain settings.
#[derive(Debug, Clone, Copy)]
pub struct DrainConfig {
    /// Most events in one published batch.
    pub max_batch: usize,
    /// A heartbeat is published when nothing was published for this long.
    pub heartbeat: Duration,
}

/// Runs until `shutdown` resolves. Owns the probes' maps while running.
pub async fn drain(
    probes: &Probes,
    events: RingBuf<MapData>,
    hub: Arc<Hub>,
    counters: Arc<Counters>,
    cfg: DrainConfig,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<(), Error> {
    let stats = &probes.stats;
    let mut fd = crate::sys::register_ring_buffer(events).map_err(|source| Error::Io {
        what: "failed to register ring buffer with epoll",
        path: "nt_events".into(),
        source,
    })?;
    let mut state =
        State { next_seq: 1, batch: Vec::with_capacity(cfg.max_batch), last_publish: Instant::now() };
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            guard = fd.readable_mut() => {
                let mut guard = guard.map_err(|source| Error::Io { what: "ring buffer poll failed", path: "nt_events".into(), source })?;
                drain_ready(guard.get_inner_mut(), &mut state, &hub, &counters, cfg);
                guard.clear_ready();
            }
            _ = tick.tick() => {
                // Readiness can be missed only in theory; a tick drains anyway.
                drain_ready(fd.get_mut(), &mut state, &hub, &counters, cfg);
                refresh_kernel_counters(stats, &counters);
                if state.last_publish.elapsed() >= cfg.heartbeat {
                    state.publish(&hub, &counters);
                }
            }
            _ = shutdown.changed() => {
                drain_ready(fd.get_mut(), &mut state, &hub, &counters, cfg);
                refresh_kernel_counters(stats, &counters);
                state.publish(&hub, &counters);
                hub.close();
                return Ok(());
            }
        }
    }
}

struct State {
    next_seq: u64,
    batch: Vec<v1::Event>,
    last_publish: Instant,
}

impl State {
    /// Publishes the pending batch (a heartbeat if empty).
    fn publish(&mut self, hub: &Hub, counters: &Counters) {
        let events = std::mem::take(&mut self.batch);
        let first_sequence = self.next_seq;
        self.next_seq += events.len() as u64;
        hub.publish(Batch {
            first_sequence,
            events,
            kernel_reserve_failures_total: counters.kernel_reserve_failures.load(Relaxed),
            decode_errors_total: counters.decode_errors.load(Relaxed),
            probe: counters.probe(),
        });
        self.last_publish = Instant::now();
    }
}

fn drain_ready(
    rb: &mut RingBuf<MapData>,
    state: &mut State,
    hub: &Hub,
    counters: &Counters,
    cfg: DrainConfig,
) {
    let mut read = 0u64;
    while let Some(item) = rb.next() {
        read += 1;
        let _ = ingest(&item, &mut state.batch, counters);
        drop(item);
        if state.batch.len() >= cfg.max_batch {
            state.publish(hub, counters);
        }
    }
    if read > 0 {
        counters.records_read.fetch_add(read, Relaxed);
        if !state.batch.is_empty() {
            state.publish(hub, counters);
        }
    }
}

/// Decodes one ring-buffer record into `batch`; a record that does not decode
/// is dropped, counted in `decode_errors` (reported to subscribers in-band) and
/// logged at powers of two of the count (this is the per-event path).
pub fn ingest(record: &[u8], batch: &mut Vec<v1::Event>, counters: &Counters) -> Result<(), DecodeError> {
    match decode(record) {
        Ok(rec) => {
            batch.push(super::convert::to_proto(&rec));
            Ok(())
        }
        Err(e) => {
            let n = counters.decode_errors.fetch_add(1, Relaxed) + 1;
            if n.is_power_of_two() {
                warn!(reason = e.reason(), error = %e, total = n, "Dropped an undecodable ring-buffer record.");
            }
            Err(e)
        }
    }
}

fn refresh_kernel_counters(stats: &aya::maps::PerCpuArray<MapData, u64>, counters: &Counters) {
    let slots = [
        (abi::NT_STAT_SUBMITTED, &counters.kernel_submitted),
        (abi::NT_STAT_RESERVE_FAILED, &counters.kernel_reserve_failures),
        (abi::NT_STAT_HTTP_UNMATCHED, &counters.http_unmatched),
        (abi::NT_STAT_HTTP_CLOSED, &counters.http_closed_pending),
        (abi::NT_STAT_HTTP_PIPELINE_FULL, &counters.http_pipeline_full),
        (abi::NT_STAT_HTTP_CONN_FULL, &counters.http_connections_full),
        (abi::NT_STAT_TLS_NO_SOCK, &counters.tls_no_connection),
        (abi::NT_STAT_TLS_CALL_LOST, &counters.tls_call_lost),
    ];
    for (idx, counter) in slots {
        match stats.get(&idx, 0) {
            Ok(per_cpu) => {
                let sum = per_cpu.iter().fold(0, |a: u64, b| a.wrapping_add(*b));
                counters::store_total(counter, sum, idx);
            }
            Err(e) => warn!(error = %e, index = idx, "Failed to read kernel statistics map."),
        }
    }
}

#[cfg(test)]
mod tests;
