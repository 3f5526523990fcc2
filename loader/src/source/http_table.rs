// SPDX-License-Identifier: Apache-2.0
//! The kernel's HTTP request totals (`nt_http_slots`, see `abi.h`) for the
//! stream: most requests are counted there instead of crossing the ring
//! buffer one by one.
//!
//! The slots hold running totals that only grow and outlive a loader restart
//! (they are pinned), so the loader sends totals, never deltas, and keeps no
//! state a restart could lose: a consumer adds the growth since the totals it
//! last saw (proto `HttpTotals`). Only keys whose totals changed since the
//! previous read go out, plus every key every [`FULL_EVERY`] reads (a
//! complete batch), so a subscriber that joined later or lost a batch to a
//! full queue catches up.
//!
//! The kernel frees the slots of a removed cgroup (`nt_http_rmdir`): its keys
//! drop out of the table and out of the next complete batch, which tells a
//! subscriber it may forget them (proto `http_totals_complete`).
//!
//! The slots are read through `mmap` ([`crate::sys::MappedWords`]), never
//! with a `bpf()` syscall: a map syscall suspends the uprobe and tracepoint
//! programs of its CPU while it runs, and their requests would be lost.

use std::{
    collections::HashMap,
    sync::atomic::{
        fence, AtomicU64,
        Ordering::{Acquire, Relaxed},
    },
};

use aya::maps::MapData;
use nettel_bpf::abi;
use nettel_proto::{v1, Bytes};

use super::convert;
use crate::sys::MappedWords;

/// Every key is sent at least once per this many reads.
pub const FULL_EVERY: u64 = 20;

/// Slots past the last one in use that a read between full reads looks at.
/// The programs claim slots upward from the first free one, so the table's
/// keys sit below its last used slot and new keys right after it: a read
/// finds up to this many new keys at once, and a full read finds the rest.
/// A read of the whole default table (8192 slots) touches a cache line per
/// slot, which is most of the loader's CPU at a few keys.
pub const SCAN_AHEAD: usize = 256;

/// Words (u64) per slot: `struct nt_http_slot` is a multiple of 8 bytes.
const SLOT_WORDS: usize = size_of::<abi::nt_http_slot>() / 8;
const _: () = assert!(size_of::<abi::nt_http_slot>().is_multiple_of(8));
/// Words of the key at the start of a slot; the totals follow, then the
/// generation.
const KEY_WORDS: usize = size_of::<abi::nt_http_key>() / 8;
/// Words of the totals (the sum, then the buckets).
const TOTALS_WORDS: usize = size_of::<abi::nt_http_totals>() / 8;
const _: () = assert!(size_of::<abi::nt_http_key>() == 32 && size_of::<abi::nt_http_totals>() == 120);
const _: () = assert!(SLOT_WORDS == KEY_WORDS + TOTALS_WORDS + 1);

type Key = (u64, [u8; 16], u8, u8, u16, u32);
type Totals = (u64, [u64; abi::NT_HTTP_BUCKETS as usize]);

/// The mapped slots and what was last read and sent from them.
pub struct HttpTable {
    slots: MappedWords,
    /// Keeps the map's descriptor for as long as it is mapped.
    _map: MapData,
    reader: SlotReader,
}

impl std::fmt::Debug for HttpTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpTable").field("slots", &self.slots).field("reader", &self.reader).finish()
    }
}

impl HttpTable {
    /// Maps `nt_http_slots` (an array of `max_entries` `struct nt_http_slot`).
    pub fn new(map: MapData) -> std::io::Result<Self> {
        use std::os::fd::AsFd;
        let entries = map.info().map_err(std::io::Error::other)?.max_entries() as usize;
        let slots = MappedWords::map(map.fd().as_fd(), entries * size_of::<abi::nt_http_slot>())?;
        Ok(Self { slots, _map: map, reader: SlotReader::new(entries) })
    }

    /// Totals of the keys that changed since the previous call, or of all
    /// keys every [`FULL_EVERY`] calls (the first call included).
    pub fn changes(&mut self) -> Changes {
        self.reader.changes(self.slots.words())
    }
}

/// One read of the table.
#[derive(Debug)]
pub struct Changes {
    pub totals: Vec<v1::HttpTotals>,
    /// `totals` holds every key in the table but those new since the
    /// previous read: a key sent before and missing now was freed.
    pub complete: bool,
}

/// Reads slots from their words; separate from the mapping so that it can
/// be tested on plain memory.
#[derive(Debug)]
struct SlotReader {
    /// Each slot's key at the previous read (`None`: free). A key is trusted
    /// once two reads agree: the programs write a new slot's key with no
    /// barrier this process could pair with, so one read may see it torn.
    last_keys: Vec<Option<Key>>,
    /// Totals as last sent, per key (at most one per slot).
    sent: HashMap<Key, Totals>,
    reads: u64,
    /// The last full read missed a key sent before (a second slot of it, or
    /// a slot freed during the read): the next is full too.
    full_again: bool,
    /// One past the last slot holding a key at the previous read (0: none).
    used_end: usize,
    /// Slots the previous read looked at: `last_keys` past them is stale.
    scanned: usize,
}

impl SlotReader {
    fn new(entries: usize) -> Self {
        Self {
            last_keys: vec![None; entries],
            sent: HashMap::new(),
            reads: 0,
            full_again: false,
            used_end: 0,
            scanned: 0,
        }
    }

    fn changes(&mut self, words: &[AtomicU64]) -> Changes {
        let first = self.reads == 0;
        let full = self.reads.is_multiple_of(FULL_EVERY) || self.full_again;
        self.reads += 1;
        let mut now: HashMap<Key, Totals> = HashMap::new();
        // Keys read but not sent that a subscriber may know (sent before):
        // torn, or being freed. A key read but not sent for the first time is
        // new: a batch without it makes a subscriber forget nothing.
        let mut unconfirmed_known = 0;
        // A full read looks at every slot; the others up to SCAN_AHEAD past
        // the last key (all keys a subscriber knows are below it).
        let scan =
            if full { self.last_keys.len() } else { (self.used_end + SCAN_AHEAD).min(self.last_keys.len()) };
        let (scanned, mut used_end) = (self.scanned, 0);
        for (i, (slot, last)) in
            words.chunks_exact(SLOT_WORDS).zip(self.last_keys.iter_mut()).take(scan).enumerate()
        {
            let key = read_key(slot);
            // A slot the previous read skipped: what it held then is unknown.
            let confirmed = key.is_some() && i < scanned && key == *last;
            *last = key;
            let Some(key) = key else { continue };
            used_end = i + 1;
            if !confirmed {
                unconfirmed_known += usize::from(self.sent.contains_key(&key));
                continue;
            }
            let mut totals: Totals = (slot[KEY_WORDS].load(Relaxed), [0; abi::NT_HTTP_BUCKETS as usize]);
            for (b, w) in totals.1.iter_mut().zip(&slot[KEY_WORDS + 1..KEY_WORDS + TOTALS_WORDS]) {
                *b = w.load(Relaxed);
            }
            // The key again: a slot freed meanwhile (abi.h: key zeroed
            // before the totals) may have had its totals zeroed under us.
            fence(Acquire);
            if read_key(slot) != Some(key) {
                *last = None;
                unconfirmed_known += usize::from(self.sent.contains_key(&key));
                continue;
            }
            // Two slots may hold one key (two CPUs claimed one each): sum them.
            let (sum, buckets) = now.entry(key).or_insert((0, [0; abi::NT_HTTP_BUCKETS as usize]));
            *sum = sum.wrapping_add(totals.0);
            for (b, t) in buckets.iter_mut().zip(totals.1) {
                *b = b.wrapping_add(t);
            }
        }
        // Keys gone from the table were freed (or read torn, and then go out
        // again once confirmed): their last totals need not be kept.
        self.sent.retain(|key, _| now.contains_key(key));
        (self.used_end, self.scanned) = (used_end, scan);
        let mut totals = Vec::new();
        for (key, t) in now {
            if !full && self.sent.get(&key) == Some(&t) {
                continue;
            }
            totals.push(to_proto(&key, &t));
            self.sent.insert(key, t);
        }
        // A full read is complete only if it sent every key in the table a
        // subscriber may know: it forgets the keys a complete batch lacks.
        // Keys new since the last read do not count, so that a node whose
        // pods keep coming still gets complete batches. A fresh reader's
        // first read confirms nothing, and a subscriber that stayed
        // connected across a loader restart must not forget its keys then.
        let complete = full && !first && unconfirmed_known == 0;
        self.full_again = full && !complete;
        Changes { totals, complete }
    }
}

/// A slot's key, `None` while the slot is free (family 0).
fn read_key(slot: &[AtomicU64]) -> Option<Key> {
    let w = |i: usize| slot[i].load(Relaxed).to_ne_bytes();
    let tail = w(3);
    let family = tail[0];
    if family == 0 {
        return None;
    }
    let mut addr = [0u8; 16];
    addr[..8].copy_from_slice(&w(1));
    addr[8..].copy_from_slice(&w(2));
    let status = u16::from_ne_bytes([tail[2], tail[3]]);
    let flags = u32::from_ne_bytes([tail[4], tail[5], tail[6], tail[7]]);
    Some((u64::from_ne_bytes(w(0)), addr, family, tail[1], status, flags))
}

/// One key's totals as their proto message.
fn to_proto(k: &Key, v: &Totals) -> v1::HttpTotals {
    let (cgroup_id, addr, family, method, status, flags) = *k;
    v1::HttpTotals {
        cgroup_id,
        local_addr: Bytes::copy_from_slice(convert::addr(&addr, family)),
        method: convert::method(method) as i32,
        status: status.into(),
        tls: flags & abi::NT_HTTP_F_TLS != 0,
        sum_ns: v.0,
        bucket_counts: v.1.to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Slots as the kernel lays them out (`struct nt_http_slot`, whose
    /// field offsets the bpf crate's BTF layout test pins).
    fn memory(slots: &[abi::nt_http_slot]) -> Vec<AtomicU64> {
        let mut words = Vec::new();
        for s in slots {
            let k = &s.key;
            let mut tail = [k.family, k.method, 0, 0, 0, 0, 0, 0];
            tail[2..4].copy_from_slice(&k.status.to_ne_bytes());
            tail[4..].copy_from_slice(&k.flags.to_ne_bytes());
            words.push(k.cgroup_id);
            words.push(u64::from_ne_bytes(k.addr[..8].try_into().unwrap()));
            words.push(u64::from_ne_bytes(k.addr[8..].try_into().unwrap()));
            words.push(u64::from_ne_bytes(tail));
            words.push(s.totals.sum_ns);
            words.extend(s.totals.buckets);
            words.push(s.generation);
        }
        assert_eq!(words.len(), slots.len() * SLOT_WORDS);
        words.into_iter().map(AtomicU64::new).collect()
    }

    fn slot(cgroup_id: u64, status: u16, bucket: usize, n: u64) -> abi::nt_http_slot {
        let mut s = abi::nt_http_slot::default();
        s.key.cgroup_id = cgroup_id;
        s.key.family = 2;
        s.key.method = abi::NT_HTTP_POST as u8;
        s.key.status = status;
        s.key.flags = abi::NT_HTTP_F_TLS;
        s.key.addr[..4].copy_from_slice(&[10, 0, 0, 9]);
        s.totals.sum_ns = 1000 * n;
        s.totals.buckets[bucket] = n;
        s
    }

    #[test]
    fn a_slot_becomes_its_proto_totals_once_its_key_is_read_twice() {
        let mem = memory(&[slot(7, 503, 3, 2), abi::nt_http_slot::default()]);
        let mut r = SlotReader::new(2);
        assert!(r.changes(&mem).totals.is_empty(), "a key seen once is not trusted yet");
        let out = r.changes(&mem).totals;
        assert_eq!(out.len(), 1, "{out:?}");
        let p = &out[0];
        assert_eq!(p.local_addr[..], [10, 0, 0, 9]);
        assert_eq!(
            (p.cgroup_id, p.method(), p.status, p.tls, p.sum_ns),
            (7, v1::HttpMethod::Post, 503, true, 2000)
        );
        assert_eq!(p.bucket_counts.len(), nettel_bpf::HTTP_BOUNDS_NS.len() + 1);
        assert_eq!(p.bucket_counts[3], 2);
    }

    #[test]
    fn only_changed_keys_go_out_until_the_full_read() {
        let mem = memory(&[slot(7, 200, 0, 1), slot(8, 200, 0, 1)]);
        let mut r = SlotReader::new(2);
        r.changes(&mem);
        assert_eq!(r.changes(&mem).totals.len(), 2, "first trusted read sends everything");
        assert!(r.changes(&mem).totals.is_empty(), "nothing changed");
        // A request lands in slot 1's bucket 0 (word 4 + 1 + 0).
        mem[SLOT_WORDS + KEY_WORDS + 1].fetch_add(1, Relaxed);
        let out = r.changes(&mem).totals;
        assert_eq!(out.iter().map(|p| (p.cgroup_id, p.bucket_counts[0])).collect::<Vec<_>>(), [(8, 2)]);
        while !r.reads.is_multiple_of(FULL_EVERY) {
            r.changes(&mem);
        }
        assert_eq!(r.changes(&mem).totals.len(), 2, "every key on the full read");
    }

    #[test]
    fn a_freed_slot_drops_its_key_and_the_next_complete_read_lacks_it() {
        let mem = memory(&[slot(7, 200, 0, 4), slot(8, 200, 0, 1)]);
        let mut r = SlotReader::new(2);
        assert!(!r.changes(&mem).complete, "the first read confirms no key: not complete");
        let second = r.changes(&mem);
        assert!(second.complete, "the next read is full, and complete");
        assert_eq!(second.totals.len(), 2);
        // The kernel frees slot 0 (cgroup 7 removed): key zeroed, generation
        // bumped, totals zeroed.
        for w in &mem[..KEY_WORDS] {
            w.store(0, Relaxed);
        }
        mem[SLOT_WORDS - 1].fetch_add(1, Relaxed);
        for w in &mem[KEY_WORDS..KEY_WORDS + TOTALS_WORDS] {
            w.store(0, Relaxed);
        }
        assert!(r.changes(&mem).totals.is_empty(), "a freed key is not sent with zero totals");
        assert_eq!(r.sent.len(), 1, "nothing kept of the freed key");
        while !r.reads.is_multiple_of(FULL_EVERY) {
            r.changes(&mem);
        }
        let full = r.changes(&mem);
        assert!(full.complete);
        assert_eq!(full.totals.iter().map(|p| p.cgroup_id).collect::<Vec<_>>(), [8]);
    }

    /// New keys on every read (a node whose pods keep coming) neither make
    /// the full read incomplete nor keep the next reads full.
    #[test]
    fn a_key_new_at_the_full_read_leaves_it_complete() {
        let empty = abi::nt_http_slot::default();
        let mem = memory(&[slot(7, 200, 0, 4), empty, empty]);
        let mut r = SlotReader::new(3);
        r.changes(&mem);
        while !r.reads.is_multiple_of(FULL_EVERY) {
            r.changes(&mem);
        }
        // A pod's first request claims slot 1 right before the full read.
        let claim = |i: usize, s: abi::nt_http_slot| {
            for (w, v) in mem[i * SLOT_WORDS..].iter().zip(memory(&[s])) {
                w.store(v.into_inner(), Relaxed);
            }
        };
        claim(1, slot(8, 200, 0, 1));
        let full = r.changes(&mem);
        assert!(full.complete, "the new key is not one a subscriber knows");
        assert_eq!(full.totals.iter().map(|p| p.cgroup_id).collect::<Vec<_>>(), [7]);
        assert!(!r.full_again);
        let next = r.changes(&mem);
        assert!(!next.complete, "not a full read");
        assert_eq!(next.totals.iter().map(|p| p.cgroup_id).collect::<Vec<_>>(), [8], "confirmed: sent");
        // A second slot of a known key (two CPUs claimed it) is not yet
        // confirmed at the full read: not complete, and the next read is full.
        while !r.reads.is_multiple_of(FULL_EVERY) {
            r.changes(&mem);
        }
        claim(2, slot(7, 200, 0, 1));
        assert!(!r.changes(&mem).complete, "slot 2's part of key 7 is missing");
        assert!(r.full_again);
        let again = r.changes(&mem);
        assert!(again.complete);
        let mut got: Vec<_> = again.totals.iter().map(|p| (p.cgroup_id, p.sum_ns)).collect();
        got.sort_unstable();
        assert_eq!(got, [(7, 5000), (8, 1000)]);
    }

    /// Between full reads, a read looks at the slots up to SCAN_AHEAD past
    /// the last key: a key claimed within them is sent at once (after its
    /// confirming read), one claimed further out at the next full read.
    #[test]
    fn reads_between_full_reads_look_only_just_past_the_last_key() {
        let entries = 2 * SCAN_AHEAD + 100;
        let mut slots = vec![abi::nt_http_slot::default(); entries];
        slots[0] = slot(7, 200, 0, 1);
        let mem = memory(&slots);
        let mut r = SlotReader::new(entries);
        r.changes(&mem);
        assert_eq!(r.changes(&mem).totals.len(), 1);
        let claim = |i: usize, s: abi::nt_http_slot| {
            for (w, v) in mem[i * SLOT_WORDS..].iter().zip(memory(&[s])) {
                w.store(v.into_inner(), Relaxed);
            }
        };
        // The last slot within reach of a read (key at 0: slots 0..=SCAN_AHEAD),
        // and the first past it.
        claim(SCAN_AHEAD, slot(8, 200, 0, 1));
        claim(SCAN_AHEAD + 1, slot(9, 200, 0, 1));
        assert!(r.changes(&mem).totals.is_empty(), "read once: not confirmed");
        // Key 8 moved the reach: slot SCAN_AHEAD + 1 is read from now on, and
        // its first sight confirms nothing (the slot was skipped before).
        assert_eq!(r.changes(&mem).totals.iter().map(|p| p.cgroup_id).collect::<Vec<_>>(), [8]);
        assert_eq!(r.changes(&mem).totals.iter().map(|p| p.cgroup_id).collect::<Vec<_>>(), [9]);
        // Far past the reach: only the full read sees it.
        claim(entries - 1, slot(10, 200, 0, 1));
        while !r.reads.is_multiple_of(FULL_EVERY) {
            assert!(
                r.changes(&mem).totals.is_empty(),
                "read {}: slot {} is out of reach",
                r.reads,
                entries - 1
            );
        }
        let full = r.changes(&mem);
        assert_eq!(full.totals.len(), 3, "the full read sends every confirmed key");
        assert!(full.complete, "key 10 is new: it does not make the read incomplete");
        assert_eq!(r.changes(&mem).totals.iter().map(|p| p.cgroup_id).collect::<Vec<_>>(), [10]);
    }

    #[test]
    fn two_slots_of_one_key_are_summed_and_a_changed_key_is_retrusted() {
        let mem = memory(&[slot(7, 200, 1, 2), slot(7, 200, 1, 3), slot(9, 404, 0, 1)]);
        let mut r = SlotReader::new(3);
        r.changes(&mem);
        let mut out = r.changes(&mem).totals;
        out.sort_by_key(|p| p.cgroup_id);
        assert_eq!(
            out.iter().map(|p| (p.cgroup_id, p.bucket_counts[1], p.sum_ns)).collect::<Vec<_>>(),
            [(7, 5, 5000), (9, 0, 1000)]
        );
        // Slot 2's key reads differently (a torn read): not trusted until confirmed.
        mem[2 * SLOT_WORDS].store(10, Relaxed);
        assert!(r.changes(&mem).totals.is_empty());
        assert_eq!(r.changes(&mem).totals.iter().map(|p| p.cgroup_id).collect::<Vec<_>>(), [10]);
    }
}
