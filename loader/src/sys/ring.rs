// SPDX-License-Identifier: Apache-2.0
//! The loader's own consumer of the BPF ring buffer (`nt_events`).
//!
//! aya's `RingBuf` frees each record as its item is dropped: one store to the
//! consumer position per record. The probes read that position on every
//! reserve and submit (`bpf_ringbuf_reserve`, `BPF_RB_AVAIL_DATA`), so at
//! millions of records per second its cache line crossed between the two
//! CPUs once per record, on both sides. [`RingReader`] reads records ahead of
//! the position it has published and publishes it when told
//! ([`RingReader::release`]): the drain does so once per batch, just before
//! the batch is offered to subscribers. A loader that stops while building a
//! batch leaves its records in the ring for the next one, instead of
//! losing them with no trace.
//!
//! The layout and protocol are the kernel's (`kernel/bpf/ringbuf.c`): a
//! consumer page (read-write), a producer page, then the data pages mapped
//! twice in a row (read-only), so that a record that wraps is contiguous.
//! Each record starts with an 8-byte header whose first word is its length
//! with two flags: busy (reserved, not yet committed) and discarded.

use std::{
    io,
    os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd},
    ptr::NonNull,
    sync::atomic::{
        AtomicU32, AtomicU64,
        Ordering::{Acquire, Release},
    },
};

use aya::maps::MapData;

/// `BPF_RINGBUF_BUSY_BIT`: reserved, not yet committed.
const BUSY_BIT: u32 = 1 << 31;
/// `BPF_RINGBUF_DISCARD_BIT`: committed as discarded; skip it.
const DISCARD_BIT: u32 = 1 << 30;
/// `BPF_RINGBUF_HDR_SZ`.
const HDR_BYTES: u64 = 8;

/// What the record header at the read position says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// A committed record of `len` bytes, `advance` bytes with its header
    /// and padding.
    Record { len: u32, advance: u64 },
    /// A discarded record: skip `advance` bytes.
    Discarded { advance: u64 },
    /// Reserved and not yet committed: nothing more to read for now.
    Busy,
    /// A length no ring of `size` bytes can hold. The kernel never writes
    /// one; if it ever did, the reader could not find the next record.
    Corrupt,
}

/// Reads a header word (loaded with acquire ordering, which pairs with the
/// kernel's commit) for a ring of `size` bytes.
fn step(header: u32, size: u64) -> Step {
    if header & BUSY_BIT != 0 {
        return Step::Busy;
    }
    let len = header & !(BUSY_BIT | DISCARD_BIT);
    let advance = (u64::from(len) + HDR_BYTES).next_multiple_of(8);
    if advance > size {
        return Step::Corrupt;
    }
    if header & DISCARD_BIT != 0 {
        Step::Discarded { advance }
    } else {
        Step::Record { len, advance }
    }
}

/// The one consumer of a BPF ring buffer map: its shared mappings and the
/// read position.
pub struct RingReader {
    map: MapData,
    /// The consumer page: read-write, `page` bytes.
    consumer: NonNull<libc::c_void>,
    /// The producer page and the data pages twice: read-only,
    /// `page + 2 * size` bytes.
    producer: NonNull<libc::c_void>,
    page: usize,
    size: u64,
    /// The next record to read; ahead of the published consumer position
    /// by the records read since the last [`RingReader::release`].
    pos: u64,
    /// The producer position as last loaded.
    producer_seen: u64,
    /// Records with an impossible length, skipped with everything after
    /// them that was produced.
    corrupt: u64,
}

// SAFETY: the mappings are only accessed through atomics and through slices
// of committed records borrowed from `&mut self`; nothing is tied to the
// thread that made them.
unsafe impl Send for RingReader {}

impl RingReader {
    /// Maps the ring buffer `map` of `size` bytes (a power of two, at least a
    /// page) and continues from its consumer position (a restarted loader
    /// carries on where the last one stopped).
    pub fn new(map: MapData, size: u32) -> io::Result<Self> {
        use rustix::mm::{mmap, munmap, MapFlags, ProtFlags};
        let page = rustix::param::page_size();
        let bytes = usize::try_from(size).map_err(io::Error::other)?;
        if !bytes.is_power_of_two() || bytes < page {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("ring buffer size {size}")));
        }
        // The mask and the mapping's length come from `size`: it must be the
        // map's own.
        let actual = map.info().map_err(io::Error::other)?.max_entries();
        if actual != size {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("the ring buffer has {actual} bytes, not {size}"),
            ));
        }
        let fd = map.fd().as_fd();
        // SAFETY: fresh mappings at addresses the kernel picks alias no Rust
        // object. The kernel maps a ring buffer's consumer page at offset 0
        // (writable), and its producer page and then its data pages twice from
        // offset `page` (read-only), refusing any other length or protection
        // (EINVAL, EPERM). On success the whole lengths stay mapped until
        // `munmap` in `Drop`.
        let consumer = unsafe {
            mmap(std::ptr::null_mut(), page, ProtFlags::READ | ProtFlags::WRITE, MapFlags::SHARED, fd, 0)
        }?;
        // SAFETY: as above.
        let producer = unsafe {
            mmap(std::ptr::null_mut(), page + 2 * bytes, ProtFlags::READ, MapFlags::SHARED, fd, page as u64)
        };
        let producer = match producer {
            Ok(p) => p,
            Err(e) => {
                // SAFETY: `consumer` is the mapping just made, borrowed by
                // nothing.
                let _ = unsafe { munmap(consumer, page) };
                return Err(e.into());
            }
        };
        let (Some(consumer), Some(producer)) = (NonNull::new(consumer), NonNull::new(producer)) else {
            return Err(io::Error::other("mmap returned null"));
        };
        let mut reader =
            Self { map, consumer, producer, page, size: size.into(), pos: 0, producer_seen: 0, corrupt: 0 };
        reader.pos = reader.consumer_pos().load(Acquire);
        reader.producer_seen = reader.pos;
        Ok(reader)
    }

    fn consumer_pos(&self) -> &AtomicU64 {
        // SAFETY: the consumer page is mapped readable and writable, page
        // aligned, for `self`'s lifetime; its first word is the kernel's
        // `consumer_pos`, which the kernel only loads (`smp_load_acquire`).
        unsafe { self.consumer.cast::<AtomicU64>().as_ref() }
    }

    fn producer_pos(&self) -> &AtomicU64 {
        // SAFETY: the producer page is mapped readable, page aligned, for
        // `self`'s lifetime; its first word is the kernel's `producer_pos`,
        // written with `smp_store_release`. Atomic loads from read-only
        // memory are allowed up to 8 bytes (std::sync::atomic docs).
        unsafe { self.producer.cast::<AtomicU64>().as_ref() }
    }

    /// The header word at byte `off` of the data pages.
    fn header(&self, off: u64) -> &AtomicU32 {
        debug_assert!(off < self.size && off.is_multiple_of(8));
        // SAFETY: `off < size` (it is a position masked by `size - 1`) and a
        // multiple of 8, so the 4 bytes lie in the first copy of the data
        // pages, aligned; the kernel writes the word with atomic stores.
        unsafe { self.producer.byte_add(self.page + off as usize).cast::<AtomicU32>().as_ref() }
    }

    /// The next committed record, or `None` when every record produced so
    /// far was read (or the next is still being written). The record stays
    /// in the ring, and its bytes unchanged, until [`RingReader::release`].
    pub fn read(&mut self) -> Option<&[u8]> {
        loop {
            if self.pos == self.producer_seen {
                self.producer_seen = self.producer_pos().load(Acquire);
                if self.pos == self.producer_seen {
                    return None;
                }
            }
            let off = self.pos & (self.size - 1);
            match step(self.header(off).load(Acquire), self.size) {
                Step::Busy => return None,
                Step::Discarded { advance } => self.pos += advance,
                Step::Corrupt => {
                    self.corrupt += 1;
                    self.pos = self.producer_seen;
                }
                Step::Record { len, advance } => {
                    self.pos += advance;
                    let start = self.page + (off + HDR_BYTES) as usize;
                    // SAFETY: the record was committed (its busy bit is clear,
                    // loaded with acquire after the kernel's committing xchg),
                    // so the kernel does not write its bytes until the consumer
                    // position passes them, which only `release` does, and
                    // `release` needs `&mut self`, which the returned slice
                    // borrows. `off + 8 + len <= off + size < 2 * size`
                    // (`step` refuses longer records), inside the data pages'
                    // double mapping.
                    return Some(unsafe {
                        std::slice::from_raw_parts(
                            self.producer.byte_add(start).cast::<u8>().as_ptr(),
                            len as usize,
                        )
                    });
                }
            }
        }
    }

    /// Frees every record read so far for the kernel to reuse.
    pub fn release(&mut self) {
        if self.consumer_pos().load(Acquire) != self.pos {
            self.consumer_pos().store(self.pos, Release);
        }
    }

    /// Bytes of records (headers included) produced and not yet released.
    pub fn waiting(&self) -> u64 {
        self.producer_pos().load(Acquire).wrapping_sub(self.consumer_pos().load(Acquire))
    }

    /// Records found with an impossible length (which the kernel never writes)
    /// since the last call.
    pub fn take_corrupt(&mut self) -> u64 {
        std::mem::take(&mut self.corrupt)
    }
}

impl AsRawFd for RingReader {
    fn as_raw_fd(&self) -> RawFd {
        self.map.fd().as_fd().as_raw_fd()
    }
}

impl AsFd for RingReader {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.map.fd().as_fd()
    }
}

impl Drop for RingReader {
    fn drop(&mut self) {
        // SAFETY: both are exactly the mappings made in `new`, and no borrow of
        // them outlives `self`.
        unsafe {
            let _ = rustix::mm::munmap(self.consumer.as_ptr(), self.page);
            let _ = rustix::mm::munmap(self.producer.as_ptr(), self.page + 2 * self.size as usize);
        }
    }
}

impl std::fmt::Debug for RingReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RingReader").field("size", &self.size).field("pos", &self.pos).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_step_by_their_length_rounded_to_eight_with_the_header() {
        let size = 4096;
        assert_eq!(step(80, size), Step::Record { len: 80, advance: 88 });
        assert_eq!(step(1, size), Step::Record { len: 1, advance: 16 });
        assert_eq!(step(0, size), Step::Record { len: 0, advance: 8 });
        assert_eq!(step(80 | DISCARD_BIT, size), Step::Discarded { advance: 88 });
        assert_eq!(step(80 | BUSY_BIT, size), Step::Busy);
        assert_eq!(step(80 | BUSY_BIT | DISCARD_BIT, size), Step::Busy, "busy wins");
    }

    #[test]
    fn a_length_the_ring_cannot_hold_is_corrupt() {
        let size = 4096;
        assert_eq!(step(4088, size), Step::Record { len: 4088, advance: 4096 }, "the largest record");
        assert_eq!(step(4089, size), Step::Corrupt);
        assert_eq!(step(DISCARD_BIT - 1, size), Step::Corrupt);
        assert_eq!(step((DISCARD_BIT - 1) | DISCARD_BIT, size), Step::Corrupt);
    }
}
