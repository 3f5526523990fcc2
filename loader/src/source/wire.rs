// SPDX-License-Identifier: Apache-2.0
//! Ring-buffer records written straight to the stream's wire format.
//!
//! Each record becomes one `events` entry of a `StreamEventsResponse` (field
//! 4: the key, the length, the `Event` message), appended to the batch's
//! buffer. The server sends the buffer after the message's other fields
//! ([`crate::server`]); protobuf lets a repeated field's entries come anywhere
//! in a message, so a consumer decodes it as if prost had encoded the
//! events. The batch is encoded once, whatever the number of subscribers.
//!
//! Why not build `v1::Event`s and let prost encode them: at 1 M retransmit
//! events/s that was most of the loader's CPU (`perf record`: each address a
//! `Bytes` with its reference counts, each nested message's length computed
//! three times, the events built and dropped). Here a record costs a few
//! stores.
//!
//! [`convert::to_proto`](super::convert::to_proto) remains the reference:
//! the tests check that every kind of record encodes to bytes prost decodes
//! into exactly the event `to_proto` builds.

use nettel_bpf::{abi, Record};
use nettel_proto::Bytes;

use super::convert::{addr, method, retransmit_kind};

/// `StreamEventsResponse.events`.
const RESPONSE_EVENTS: u32 = 4;
/// `Event` fields.
const EVENT_TIMESTAMP: u32 = 1;
const EVENT_TCP_RETRANSMIT: u32 = 10;
const EVENT_SYNTHETIC: u32 = 11;
const EVENT_HTTP_REQUEST: u32 = 12;

/// Wire types.
const VARINT: u32 = 0;
const LEN: u32 = 2;

/// The longest `Event` this module writes: an HTTP request over IPv6 with a
/// trace id and every number at its widest is 107 bytes. Under 128, so every
/// length (of the event and of its kind's message) is one varint byte,
/// written as a placeholder and patched.
const MAX_EVENT_BYTES: usize = 127;

/// A batch's events, encoded.
#[derive(Debug, Clone, Default)]
pub struct Events {
    /// `events` entries of a `StreamEventsResponse`, back to back.
    pub bytes: Bytes,
    /// How many.
    pub count: usize,
}

impl Events {
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
}

/// Appends records to the current batch's buffer.
#[derive(Debug, Default)]
pub struct Writer {
    buf: Vec<u8>,
    count: usize,
}

impl Writer {
    /// Events written since the last [`Writer::take`].
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The events written so far; the writer starts a new batch, with room
    /// for as many bytes as this one took.
    pub fn take(&mut self) -> Events {
        let next = Vec::with_capacity(self.buf.len());
        let bytes = Bytes::from(std::mem::replace(&mut self.buf, next));
        Events { bytes, count: std::mem::take(&mut self.count) }
    }

    /// Appends `rec` as one `events` entry.
    pub fn push(&mut self, rec: &Record) {
        let b = &mut self.buf;
        b.reserve(2 + MAX_EVENT_BYTES);
        key(b, RESPONSE_EVENTS, LEN);
        let event_len = b.len();
        b.push(0);
        match rec {
            Record::TcpRetransmit(ev) => {
                uint(b, EVENT_TIMESTAMP, ev.hdr.ts_boot_ns);
                let kind = begin(b, EVENT_TCP_RETRANSMIT);
                endpoints(b, (&ev.saddr, ev.sport), (&ev.daddr, ev.dport), ev.family);
                uint(b, 5, retransmit_kind(ev.rtx_kind) as u64);
                uint(b, 6, ev.state.into());
                // sint32: zigzag.
                uint(b, 7, u64::from(((ev.err << 1) ^ (ev.err >> 31)) as u32));
                uint(b, 8, ev.netns_cookie);
                uint(b, 9, ev.segs.into());
                end(b, kind);
            }
            Record::Http(ev) => {
                uint(b, EVENT_TIMESTAMP, ev.hdr.ts_boot_ns);
                let kind = begin(b, EVENT_HTTP_REQUEST);
                endpoints(b, (&ev.saddr, ev.sport), (&ev.daddr, ev.dport), ev.family);
                uint(b, 5, method(ev.method) as u64);
                uint(b, 6, ev.status.into());
                uint(b, 7, ev.duration_ns);
                uint(b, 8, ev.cgroup_id);
                if ev.flags & abi::NT_HTTP_F_TRACE != 0 {
                    bytes(b, 9, &ev.trace_id);
                }
                uint(b, 10, u64::from(ev.flags & abi::NT_HTTP_F_TLS != 0));
                uint(b, 11, u64::from(ev.flags & abi::NT_HTTP_F_COUNTED != 0));
                end(b, kind);
            }
            Record::Synthetic(ev) => {
                uint(b, EVENT_TIMESTAMP, ev.hdr.ts_boot_ns);
                let kind = begin(b, EVENT_SYNTHETIC);
                uint(b, 1, ev.seq);
                end(b, kind);
            }
        }
        end(b, event_len);
        self.count += 1;
    }
}

/// Fields 1 to 4 of `TcpRetransmit` and `HttpRequest` alike: the local and
/// remote addresses, then ports.
fn endpoints(b: &mut Vec<u8>, local: (&[u8; 16], u16), remote: (&[u8; 16], u16), family: u8) {
    bytes(b, 1, addr(local.0, family));
    bytes(b, 2, addr(remote.0, family));
    uint(b, 3, local.1.into());
    uint(b, 4, remote.1.into());
}

fn varint(b: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        b.push(v as u8 | 0x80);
        v >>= 7;
    }
    b.push(v as u8);
}

fn key(b: &mut Vec<u8>, field: u32, wire_type: u32) {
    varint(b, u64::from(field << 3 | wire_type));
}

/// A varint field; proto3 leaves a zero out.
fn uint(b: &mut Vec<u8>, field: u32, v: u64) {
    if v != 0 {
        key(b, field, VARINT);
        varint(b, v);
    }
}

/// A `bytes` field of under 128 bytes; proto3 leaves an empty one out.
fn bytes(b: &mut Vec<u8>, field: u32, v: &[u8]) {
    if !v.is_empty() {
        key(b, field, LEN);
        b.push(v.len() as u8);
        b.extend_from_slice(v);
    }
}

/// Starts a nested message: its key and a one-byte length placeholder,
/// whose position [`end`] patches.
fn begin(b: &mut Vec<u8>, field: u32) -> usize {
    key(b, field, LEN);
    b.push(0);
    b.len() - 1
}

/// Patches the length placeholder at `at` with the bytes written after it.
fn end(b: &mut [u8], at: usize) {
    let len = b.len() - at - 1;
    debug_assert!(len <= MAX_EVENT_BYTES, "an event's message is {len} bytes, over one length byte");
    b[at] = len as u8;
}

#[cfg(test)]
mod tests;
