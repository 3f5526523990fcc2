// SPDX-License-Identifier: Apache-2.0
//! Fan-out of event batches to subscribers.
//!
//! The drain loop publishes each batch once; every subscriber has a bounded
//! queue and gets the batch with `try_send`, so a slow subscriber never blocks
//! the drain or the others. When a queue is full the batch is dropped for that
//! subscriber only, counted, and the count travels in-band with the next batch
//! that does fit (`Delivery::dropped_before`). Because drops are attached to
//! the queue item rather than read from a shared counter, the sequence
//! invariant of the proto (`first_event_sequence` advances by events + drops)
//! holds exactly.
//!
//! A subscriber that disconnects leaves the batches still in its queue
//! behind. Those events are counted as queue drops and reported in-band to the
//! next subscriber (as its first `dropped_before`), so an aggregator that
//! reconnects sees them explained rather than as a sequence gap.

use std::sync::{
    atomic::{AtomicU64, Ordering::Relaxed},
    Arc, Mutex,
};

use nettel_proto::v1;
use tokio::sync::mpsc;

use crate::{counters::Counters, source::wire::Events};

/// One published batch (or heartbeat when `events` is empty).
#[derive(Debug, Default)]
pub struct Batch {
    /// Loader-wide sequence number of the first event, or of the next event.
    pub first_sequence: u64,
    /// Encoded once, shared by every subscriber's delivery.
    pub events: Events,
    /// Running totals at publish time.
    pub kernel_reserve_failures_total: u64,
    pub decode_errors_total: u64,
    /// Kernel-side probe counters at publish time.
    pub probe: v1::ProbeCounters,
    /// Socket refusals at publish time.
    pub socket: v1::SocketCounters,
    /// Kernel HTTP request totals that changed (running totals).
    pub http_totals: Vec<v1::HttpTotals>,
    /// `http_totals` holds every key of the kernel's table but those new
    /// since the previous read (proto `http_totals_complete`).
    pub http_totals_complete: bool,
    /// The running programs' skipped runs at publish time (running totals).
    pub program_runs: Vec<v1::ProgramRuns>,
    /// The ring buffer's size and high-water mark at publish time.
    pub ring: v1::RingBufferStatus,
}

/// What a subscriber's queue carries.
#[derive(Debug)]
pub struct Delivery {
    pub batch: Arc<Batch>,
    /// Events dropped for this subscriber since its previous delivery.
    pub dropped_before: u64,
    /// All events dropped for this subscriber so far, including `dropped_before`.
    pub dropped_total: u64,
}

#[derive(Debug)]
struct Slot {
    id: u64,
    tx: mpsc::Sender<Delivery>,
    pending_drops: u64,
    dropped_total: u64,
}

/// The set of subscribers.
#[derive(Debug)]
pub struct Hub {
    slots: Mutex<Vec<Slot>>,
    next_id: AtomicU64,
    queue_batches: usize,
    counters: Arc<Counters>,
    /// Events left in the queues of subscribers that disconnected, not yet
    /// reported to anyone.
    orphaned: AtomicU64,
}

/// A subscriber's end: its queue and its registration (unregistered on drop).
#[derive(Debug)]
pub struct Subscription {
    pub rx: mpsc::Receiver<Delivery>,
    pub id: u64,
    /// Kernel reserve-failure total this subscriber's loss deltas start from:
    /// the total last reported to any subscriber, so failures while nobody
    /// listened are reported to this one.
    pub reserve_failures_baseline: u64,
    hub: Arc<Hub>,
}

impl Hub {
    /// A hub whose subscriber queues hold at most `queue_batches` batches.
    pub fn new(queue_batches: usize, counters: Arc<Counters>) -> Arc<Self> {
        Arc::new(Self {
            slots: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(1),
            queue_batches: queue_batches.max(1),
            counters,
            orphaned: AtomicU64::new(0),
        })
    }

    /// Registers a subscriber.
    pub fn subscribe(self: &Arc<Self>) -> Subscription {
        let (tx, rx) = mpsc::channel(self.queue_batches);
        let id = self.next_id.fetch_add(1, Relaxed);
        let orphaned = self.orphaned.swap(0, Relaxed);
        let mut slots = self.lock();
        // Read under the lock `publish` updates it under: no batch can fall
        // between the baseline and this subscriber's first delivery.
        let reserve_failures_baseline = self.counters.kernel_reserve_failures_reported.load(Relaxed);
        slots.push(Slot { id, tx, pending_drops: orphaned, dropped_total: orphaned });
        drop(slots);
        self.counters.subscribers_connected.fetch_add(1, Relaxed);
        Subscription { rx, id, reserve_failures_baseline, hub: Arc::clone(self) }
    }

    /// Offers `batch` to every subscriber without waiting; they share it.
    pub fn publish(&self, batch: Batch) {
        let n = batch.events.len() as u64;
        let reserve_failures_total = batch.kernel_reserve_failures_total;
        let mut batch = Some(Arc::new(batch));
        let mut slots = self.lock();
        let last = slots.len().saturating_sub(1);
        for (i, slot) in slots.iter_mut().enumerate() {
            let shared = if i == last { batch.take() } else { batch.clone() }
                .expect("only the last subscriber takes the batch");
            let delivery = Delivery {
                batch: shared,
                dropped_before: slot.pending_drops,
                dropped_total: slot.dropped_total,
            };
            match slot.tx.try_send(delivery) {
                Ok(()) => slot.pending_drops = 0,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    // A dropped heartbeat loses nothing; a dropped batch loses `n` events.
                    slot.pending_drops += n;
                    slot.dropped_total += n;
                    self.counters.subscriber_queue_drops.fetch_add(n, Relaxed);
                }
                // The subscriber is gone; its Subscription drop unregisters it.
                Err(mpsc::error::TrySendError::Closed(_)) => {}
            }
        }
        if slots.is_empty() && n > 0 {
            // Read while a subscriber was there, which left before the batch
            // was full: a queue drop of its, reported to the next subscriber.
            self.orphan(n, 0);
        }
        if !slots.is_empty() {
            // Every subscriber has now heard of these failures.
            self.counters.kernel_reserve_failures_reported.fetch_max(reserve_failures_total, Relaxed);
        }
    }

    /// Records `events` read for a subscriber that left before it got them
    /// (counted now as queue drops) and `unreported` drops already counted
    /// but never reported to it: both are reported to the next subscriber.
    pub fn orphan(&self, events: u64, unreported: u64) {
        self.counters.subscriber_queue_drops.fetch_add(events, Relaxed);
        self.orphaned.fetch_add(events + unreported, Relaxed);
    }

    /// Closes every subscriber queue: their streams end once drained. Used at
    /// shutdown so open streams do not hold the gRPC server open.
    pub fn close(&self) {
        self.lock().clear();
    }

    /// Number of registered subscribers.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no subscriber is registered.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Slot>> {
        // A panic while holding this lock cannot leave the Vec inconsistent.
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Subscription {
    /// Unregisters the subscriber and counts the events still queued for it
    /// as queue drops, to be reported to the next subscriber. Returns them.
    pub fn close(&mut self) -> u64 {
        // Drops counted for this subscriber but not yet reported to it.
        let mut unreported = 0;
        self.hub.lock().retain(|s| {
            if s.id == self.id {
                unreported = s.pending_drops;
            }
            s.id != self.id
        });
        self.rx.close();
        let mut orphaned = 0;
        while let Ok(d) = self.rx.try_recv() {
            orphaned += d.batch.events.len() as u64;
            unreported += d.dropped_before;
        }
        self.hub.orphan(orphaned, unreported);
        orphaned
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hub.lock().retain(|s| s.id != self.id);
        self.hub.counters.subscribers_connected.fetch_sub(1, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(first: u64, n: usize) -> Batch {
        Batch {
            first_sequence: first,
            events: Events { count: n, ..Default::default() },
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn slow_subscriber_drops_are_counted_in_band() {
        let counters = Arc::new(Counters::default());
        let hub = Hub::new(2, Arc::clone(&counters));
        let mut slow = hub.subscribe();
        let mut fast = hub.subscribe();
        let mut seq = 1;
        for _ in 0..5 {
            hub.publish(batch(seq, 10));
            seq += 10;
            // The fast subscriber keeps up.
            let d = fast.rx.recv().await.unwrap();
            assert_eq!(d.dropped_before, 0);
        }
        // The slow one got 2 batches, lost 3 (30 events).
        assert_eq!(counters.subscriber_queue_drops.load(Relaxed), 30);
        let a = slow.rx.recv().await.unwrap();
        let b = slow.rx.recv().await.unwrap();
        assert_eq!((a.batch.first_sequence, b.batch.first_sequence), (1, 11));
        hub.publish(batch(seq, 10));
        let c = slow.rx.recv().await.unwrap();
        // Sequence invariant: 11 + 10 + 30 dropped == 51.
        assert_eq!(c.dropped_before, 30);
        assert_eq!(c.batch.first_sequence, b.batch.first_sequence + 10 + c.dropped_before);
        assert_eq!(c.dropped_total, 30);
        drop(fast);
        assert_eq!(hub.len(), 1);
        assert_eq!(counters.subscribers_connected.load(Relaxed), 1);
    }

    #[tokio::test]
    async fn events_queued_for_a_departed_subscriber_are_reported_to_the_next() {
        let counters = Arc::new(Counters::default());
        let hub = Hub::new(2, Arc::clone(&counters));
        let mut gone = hub.subscribe();
        for first in [1, 11, 21] {
            hub.publish(batch(first, 10)); // the third is dropped: queue of 2
        }
        assert_eq!(gone.close(), 20, "two queued batches");
        drop(gone);
        assert!(hub.is_empty());
        assert_eq!(counters.subscriber_queue_drops.load(Relaxed), 30);
        let mut next = hub.subscribe();
        hub.publish(batch(31, 10));
        let d = next.rx.recv().await.unwrap();
        // 20 orphaned + 10 dropped and never reported: the sequence is explained.
        assert_eq!((d.dropped_before, d.dropped_total), (30, 30));
        assert_eq!(d.batch.first_sequence, 1 + d.dropped_before);
    }

    #[tokio::test]
    async fn every_subscriber_gets_the_one_encoded_batch() {
        let counters = Arc::new(Counters::default());
        let hub = Hub::new(2, Arc::clone(&counters));
        let (mut x, mut y) = (hub.subscribe(), hub.subscribe());
        let mut b = batch(4, 5);
        b.events.bytes = vec![1, 2, 3].into();
        let buffer = b.events.bytes.as_ptr();
        hub.publish(b);
        let (x, y) = (x.rx.recv().await.unwrap(), y.rx.recv().await.unwrap());
        for d in [&x, &y] {
            assert_eq!((d.batch.first_sequence, d.batch.events.len()), (4, 5));
            assert_eq!(d.batch.events.bytes.as_ptr(), buffer, "shared, not copied");
        }
    }

    #[tokio::test]
    async fn a_batch_published_to_nobody_is_reported_to_the_next_subscriber() {
        let counters = Arc::new(Counters::default());
        let hub = Hub::new(2, Arc::clone(&counters));
        hub.publish(batch(1, 0)); // a heartbeat loses nothing
        hub.publish(batch(1, 7)); // read while a subscriber was there, which then left
        assert_eq!(counters.subscriber_queue_drops.load(Relaxed), 7);
        let mut next = hub.subscribe();
        hub.publish(batch(8, 1));
        let d = next.rx.recv().await.unwrap();
        assert_eq!((d.dropped_before, d.batch.first_sequence), (7, 8));
    }
}
