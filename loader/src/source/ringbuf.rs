// SPDX-License-Identifier: Apache-2.0
//! Drains the kernel ring buffer into batches for the hub.
//!
//! The drain wakes on the ring buffer's epoll readiness (the probes wake the
//! loader only when the unread data crosses a mark, 32 KiB or an eighth of the
//! ring: `nt_submit()` in `bpf/lib/maps.h`) and on a periodic tick (100 ms)
//! that drains what arrived below the mark, refreshes the kernel counters and
//! sends heartbeats.
//!
//! While no subscriber is connected the drain leaves records in the ring: the
//! ring buffer is the bounded buffer that carries events across an aggregator
//! restart, and what does not fit is counted by the probes as reserve
//! failures, reported to the next subscriber.
//!
//! The ring is read through [`RingReader`], which frees records in the ring
//! per published batch rather than per record: the consumer position, which
//! the probes read on every reserve, changes once per batch.
//!
//! The cursor (`nt_cursor`, pinned) is written at every publish: the next
//! sequence number and the reserve-failure total already reported. A
//! restarted loader continues both, so sequence numbers stay continuous across
//! loader restarts and an event published but never delivered (a kill -9
//! with a batch in flight) shows up as a sequence gap at the aggregator.

use std::{
    sync::{atomic::Ordering::Relaxed, Arc},
    time::{Duration, Instant},
};

use aya::maps::MapData;
use nettel_bpf::{abi, decode, DecodeError};
use nettel_proto::v1;
use tracing::warn;

pub use super::wire::Writer;
use crate::{
    counters::{self, Counters},
    hub::{Batch, Hub},
    probe::Probes,
    sys::RingReader,
    Error,
};

/// How often kernel counters are read and idle heartbeats considered.
const TICK: Duration = Duration::from_millis(100);
/// The HTTP totals are read every this many ticks (500 ms): often enough for
/// any scrape interval, and it bounds the stream (a message per changed key
/// per read). A read is a scan of the mapped slots, with no syscall.
const HTTP_TABLE_TICKS: u64 = 5;
/// The programs' skipped runs are read every this many ticks (1 s): one
/// procfs read per program.
const RUNS_TICKS: u64 = 10;

/// Drain settings.
#[derive(Debug, Clone, Copy)]
pub struct DrainConfig {
    /// Most events in one published batch.
    pub max_batch: usize,
    /// A heartbeat is published when nothing was published for this long.
    pub heartbeat: Duration,
}

/// Reads the cursor a previous loader left (zeros when there was none) and
/// seeds the counters with it and with the kernel totals. Call before
/// serving, so the first subscriber's loss baseline is right.
pub fn resume(probes: &Probes, counters: &Counters) -> abi::nt_cursor {
    let cursor = probes.cursor.get(&0, 0).unwrap_or_else(|e| {
        warn!(error = %e, "Cannot read the cursor; sequence numbers restart at 1.");
        abi::nt_cursor::default()
    });
    counters.kernel_reserve_failures_reported.fetch_max(cursor.reported_reserve_failures, Relaxed);
    refresh_kernel_counters(&probes.stats, counters);
    cursor
}

/// Runs until `shutdown` resolves. Owns the probes' maps while running.
/// `cursor` is what [`resume`] returned.
pub async fn drain(
    probes: &mut Probes,
    cursor: abi::nt_cursor,
    events: RingReader,
    hub: Arc<Hub>,
    counters: Arc<Counters>,
    cfg: DrainConfig,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<(), Error> {
    let Probes { stats, cursor: cursor_map, http_table, runs, ring_bytes, .. } = probes;
    let mut ticks = 0u64;
    let mut fd = crate::sys::register_ring_buffer(events).map_err(|source| Error::Io {
        what: "failed to register ring buffer with epoll",
        path: "nt_events".into(),
        source,
    })?;
    let mut state = State {
        fill: RingFill::new(*ring_bytes),
        next_seq: cursor.next_sequence.max(1),
        batch: Writer::default(),
        http_totals: Vec::new(),
        http_totals_complete: false,
        program_runs: runs.read(),
        last_publish: Instant::now(),
        cursor: cursor_map,
        saved: cursor,
        cursor_failures: 0,
    };
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            // Without subscribers records stay in the ring (see the module docs);
            // the tick re-evaluates this condition.
            guard = fd.readable_mut(), if !hub.is_empty() => {
                let mut guard = guard.map_err(|source| Error::Io { what: "ring buffer poll failed", path: "nt_events".into(), source })?;
                state.fill.record(guard.get_inner());
                drain_ready(guard.get_inner_mut(), &mut state, &hub, &counters, cfg);
                guard.clear_ready();
            }
            _ = tick.tick() => {
                refresh_kernel_counters(stats, &counters);
                // Also while nobody listens, when the ring fills up.
                state.fill.record(fd.get_ref());
                // Readiness can be missed only in theory; a tick drains anyway.
                if !hub.is_empty() {
                    drain_ready(fd.get_mut(), &mut state, &hub, &counters, cfg);
                }
                ticks += 1;
                if ticks.is_multiple_of(RUNS_TICKS) {
                    state.program_runs = runs.read();
                }
                // Read only while someone listens, like the ring: totals that
                // grew meanwhile go to the next subscriber.
                if let Some(table) = http_table.as_mut().filter(|_| ticks.is_multiple_of(HTTP_TABLE_TICKS) && !hub.is_empty()) {
                    let changes = table.changes();
                    state.http_totals = changes.totals;
                    state.http_totals_complete = changes.complete;
                    // A complete batch goes out even when empty: it is how
                    // subscribers learn that the last keys were freed.
                    if !state.http_totals.is_empty() || changes.complete {
                        state.publish(&hub, &counters);
                    }
                }
                if state.last_publish.elapsed() >= cfg.heartbeat {
                    state.publish(&hub, &counters);
                }
            }
            _ = shutdown.changed() => {
                refresh_kernel_counters(stats, &counters);
                if !hub.is_empty() {
                    drain_ready(fd.get_mut(), &mut state, &hub, &counters, cfg);
                    if let Some(table) = http_table.as_mut() {
                        let changes = table.changes();
                        state.http_totals = changes.totals;
                        state.http_totals_complete = changes.complete;
                    }
                }
                state.publish(&hub, &counters);
                hub.close();
                return Ok(());
            }
        }
    }
}

/// The ring's fill: the most bytes found waiting in it (produced, not yet
/// released: [`RingReader::waiting`], read from the ring's mapping, no
/// syscall), sampled before each drain and on every tick. Published with
/// every batch (proto `RingBufferStatus`).
struct RingFill {
    status: v1::RingBufferStatus,
}

impl RingFill {
    fn new(size_bytes: u32) -> Self {
        Self { status: v1::RingBufferStatus { size_bytes: size_bytes.into(), high_water_bytes: 0 } }
    }

    fn record(&mut self, rb: &RingReader) {
        self.status.high_water_bytes = self.status.high_water_bytes.max(rb.waiting());
    }
}

struct State<'a> {
    fill: RingFill,
    next_seq: u64,
    /// The pending batch's events, encoded.
    batch: Writer,
    /// HTTP totals for the next publish.
    http_totals: Vec<v1::HttpTotals>,
    /// `http_totals` is a complete batch.
    http_totals_complete: bool,
    /// The programs' skipped runs, read every second, for the next publish.
    program_runs: Vec<v1::ProgramRuns>,
    last_publish: Instant,
    cursor: &'a mut aya::maps::Array<MapData, abi::nt_cursor>,
    /// The cursor as last written.
    saved: abi::nt_cursor,
    cursor_failures: u64,
}

impl State<'_> {
    /// Publishes the pending batch (a heartbeat if empty) and saves the cursor.
    fn publish(&mut self, hub: &Hub, counters: &Counters) {
        let batch = self.seal(hub, counters);
        hub.publish(batch);
    }

    /// Publishes the batch of records read from `rb`, and frees them in the
    /// ring in between: after the cursor holds their sequence numbers and
    /// before subscribers can see them. A loader that stops earlier leaves
    /// them in the ring for the next one; one that stops later shows them
    /// as a sequence gap. One stopped between the cursor's write and the
    /// release, microseconds apart, shows a gap for records the next loader
    /// then delivers too.
    fn publish_read(&mut self, rb: &mut RingReader, hub: &Hub, counters: &Counters) {
        let batch = self.seal(hub, counters);
        rb.release();
        hub.publish(batch);
    }

    /// The pending batch (a heartbeat if empty) with its sequence numbers
    /// taken and the cursor saved: ready to offer.
    fn seal(&mut self, hub: &Hub, counters: &Counters) -> Batch {
        let events = self.batch.take();
        let first_sequence = self.next_seq;
        self.next_seq += events.len() as u64;
        let kernel_reserve_failures_total = counters.kernel_reserve_failures.load(Relaxed);
        // `hub.publish` marks the total reported when anyone is subscribed;
        // the cursor records that ahead of it (with the sequence, which must
        // be saved before the batch is offered).
        let reported = if hub.is_empty() { 0 } else { kernel_reserve_failures_total };
        self.save_cursor(counters, reported);
        self.last_publish = Instant::now();
        Batch {
            first_sequence,
            events,
            kernel_reserve_failures_total,
            decode_errors_total: counters.decode_errors.load(Relaxed),
            probe: counters.probe(),
            socket: counters.socket(),
            http_totals: std::mem::take(&mut self.http_totals),
            http_totals_complete: std::mem::take(&mut self.http_totals_complete),
            program_runs: std::mem::take(&mut self.program_runs),
            ring: self.fill.status,
        }
    }

    /// Writes the cursor when it changed: one map update per published batch.
    /// It is written before the batch is offered, so a batch lost in a crash
    /// is a sequence gap, never a silent loss.
    fn save_cursor(&mut self, counters: &Counters, reporting: u64) {
        let now = abi::nt_cursor {
            next_sequence: self.next_seq,
            reported_reserve_failures: counters.kernel_reserve_failures_reported.load(Relaxed).max(reporting),
        };
        if (now.next_sequence, now.reported_reserve_failures)
            == (self.saved.next_sequence, self.saved.reported_reserve_failures)
        {
            return;
        }
        match self.cursor.set(0, now, 0) {
            Ok(()) => self.saved = now,
            Err(e) => {
                self.cursor_failures += 1;
                if self.cursor_failures.is_power_of_two() {
                    warn!(error = %e, failures = self.cursor_failures, "Cannot save the cursor; a restarted loader would restart sequence numbers.");
                }
            }
        }
    }
}

fn drain_ready(rb: &mut RingReader, state: &mut State, hub: &Hub, counters: &Counters, cfg: DrainConfig) {
    let mut read = 0u64;
    // Read only while someone listens: the subscriber may leave mid-drain
    // (or before a readiness wakeup armed while it was there), and records
    // left in the ring wait for the next one. Checked once per batch.
    loop {
        if state.batch.is_empty() && hub.is_empty() {
            break;
        }
        let Some(record) = rb.read() else { break };
        read += 1;
        let _ = ingest(record, &mut state.batch, counters);
        if state.batch.len() >= cfg.max_batch {
            state.publish_read(rb, hub, counters);
        }
    }
    let corrupt = rb.take_corrupt();
    if corrupt > 0 {
        let n = counters.decode_errors.fetch_add(corrupt, Relaxed) + corrupt;
        warn!(
            total = n,
            "A ring-buffer record had an impossible length; skipped everything produced up to it."
        );
    }
    if read > 0 {
        counters.records_read.fetch_add(read, Relaxed);
    }
    if state.batch.is_empty() {
        // Records that did not decode, and discarded ones.
        rb.release();
    } else {
        state.publish_read(rb, hub, counters);
    }
}

/// Decodes one ring-buffer record and appends its event to `batch`; a record
/// that does not decode is dropped, counted in `decode_errors` (reported to
/// subscribers in-band) and logged at powers of two of the count (this is
/// the per-event path).
pub fn ingest(record: &[u8], batch: &mut Writer, counters: &Counters) -> Result<(), DecodeError> {
    match decode(record) {
        Ok(rec) => {
            batch.push(&rec);
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

/// Reads the kernel running totals into `counters`.
pub fn refresh_kernel_counters(stats: &aya::maps::PerCpuArray<MapData, u64>, counters: &Counters) {
    let slots = [
        (abi::NT_STAT_SUBMITTED, &counters.kernel_submitted),
        (abi::NT_STAT_RESERVE_FAILED, &counters.kernel_reserve_failures),
        (abi::NT_STAT_HTTP_UNMATCHED, &counters.http_unmatched),
        (abi::NT_STAT_HTTP_CLOSED, &counters.http_closed_pending),
        (abi::NT_STAT_HTTP_PIPELINE_FULL, &counters.http_pipeline_full),
        (abi::NT_STAT_HTTP_CONN_FULL, &counters.http_connections_full),
        (abi::NT_STAT_TLS_NO_SOCK, &counters.tls_no_connection),
        (abi::NT_STAT_TLS_CALL_LOST, &counters.tls_call_lost),
        (abi::NT_STAT_HTTP_TABLE_FULL, &counters.http_table_full),
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
