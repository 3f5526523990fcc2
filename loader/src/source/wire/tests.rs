// SPDX-License-Identifier: Apache-2.0
//! The hand-written encoding against prost's: for every kind of record, with
//! values from zero to each field's widest, the bytes are exactly prost's
//! encoding of the event `to_proto` builds, and they decode back to it.

use nettel_bpf::{abi, Record};
use nettel_proto::v1;
use prost::Message;

use super::{Writer, MAX_EVENT_BYTES};
use crate::source::convert::to_proto;

/// xorshift64: varied field values without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Zero, the widest value, or anything between, a third of the time each.
    fn field(&mut self) -> u64 {
        match self.next() % 3 {
            0 => 0,
            1 => u64::MAX,
            _ => self.next() >> (self.next() % 64),
        }
    }

    fn addr(&mut self) -> [u8; 16] {
        std::array::from_fn(|_| self.next() as u8)
    }
}

fn retransmit(r: &mut Rng) -> Record {
    let mut ev = abi::nt_tcp_retransmit_event::default();
    ev.hdr.ts_boot_ns = r.field();
    (ev.saddr, ev.daddr) = (r.addr(), r.addr());
    (ev.sport, ev.dport) = (r.field() as u16, r.field() as u16);
    ev.family = if r.next() & 1 == 0 { 2 } else { 10 };
    ev.state = r.field() as u8;
    ev.rtx_kind = (r.next() % 4) as u8;
    ev.err = r.field() as i32;
    ev.segs = r.field() as u16;
    ev.netns_cookie = r.field();
    Record::TcpRetransmit(ev)
}

fn http(r: &mut Rng) -> Record {
    let mut ev = abi::nt_http_event::default();
    ev.hdr.ts_boot_ns = r.field();
    (ev.saddr, ev.daddr) = (r.addr(), r.addr());
    (ev.sport, ev.dport) = (r.field() as u16, r.field() as u16);
    ev.family = if r.next() & 1 == 0 { 2 } else { 10 };
    ev.method = (r.next() % 12) as u8;
    ev.status = r.field() as u16;
    ev.flags = r.next() as u32 & 7;
    ev.duration_ns = r.field();
    ev.cgroup_id = r.field();
    ev.trace_id = r.addr();
    Record::Http(ev)
}

fn synthetic(r: &mut Rng) -> Record {
    let mut ev = abi::nt_synthetic_event::default();
    ev.hdr.ts_boot_ns = r.field();
    ev.seq = r.field();
    Record::Synthetic(ev)
}

/// The records of one kind, with every field at zero and at its widest first.
fn records(make: fn(&mut Rng) -> Record) -> Vec<Record> {
    let mut r = Rng(0x9e37_79b9_7f4a_7c15);
    (0..2000).map(|_| make(&mut r)).collect()
}

#[test]
fn every_kind_encodes_as_prost_encodes_its_event() {
    for make in [retransmit, http, synthetic] {
        let records = records(make);
        let mut writer = Writer::default();
        let mut expected = v1::StreamEventsResponse::default();
        for rec in &records {
            writer.push(rec);
            expected.events.push(to_proto(rec));
        }
        assert_eq!(writer.len(), records.len());
        let events = writer.take();
        assert_eq!((events.count, writer.len()), (records.len(), 0), "taken, and the writer starts over");
        assert_eq!(&events.bytes[..], &expected.encode_to_vec()[..], "the same bytes as prost's");
        let decoded = v1::StreamEventsResponse::decode(events.bytes).unwrap();
        assert_eq!(decoded.events, expected.events);
    }
}

#[test]
fn the_widest_event_fits_one_length_byte() {
    let mut ev = abi::nt_http_event::default();
    ev.hdr.ts_boot_ns = u64::MAX;
    ev.family = 10;
    (ev.sport, ev.dport, ev.status, ev.method) = (u16::MAX, u16::MAX, u16::MAX, abi::NT_HTTP_TRACE as u8);
    (ev.duration_ns, ev.cgroup_id) = (u64::MAX, u64::MAX);
    ev.flags = abi::NT_HTTP_F_TRACE | abi::NT_HTTP_F_TLS | abi::NT_HTTP_F_COUNTED;
    (ev.saddr, ev.daddr, ev.trace_id) = ([0xff; 16], [0xff; 16], [0xff; 16]);
    let mut writer = Writer::default();
    writer.push(&Record::Http(ev));
    let bytes = writer.take().bytes;
    // Key and length of the `events` entry, then the event.
    assert_eq!(bytes.len() - 2, 107);
    assert!(bytes.len() - 2 <= MAX_EVENT_BYTES);
}

#[test]
fn after_the_other_fields_the_events_decode_into_the_same_message() {
    let records = records(retransmit);
    let mut writer = Writer::default();
    let mut expected = v1::StreamEventsResponse {
        first_event_sequence: 41,
        loss: Some(v1::LossReport { decode_errors: 3, ..Default::default() }),
        ring_buffer: Some(v1::RingBufferStatus { size_bytes: 1 << 22, high_water_bytes: 80 }),
        ..Default::default()
    };
    let mut wire = expected.encode_to_vec();
    for rec in &records[..300] {
        writer.push(rec);
        expected.events.push(to_proto(rec));
    }
    wire.extend_from_slice(&writer.take().bytes);
    assert_eq!(v1::StreamEventsResponse::decode(&wire[..]).unwrap(), expected);
}
