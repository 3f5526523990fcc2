// SPDX-License-Identifier: Apache-2.0
//! The hand decoder against prost's: on valid messages, on every truncation of
//! one, on repeated and unknown fields, on wrong wire types and in pieces, it
//! accepts what prost accepts and yields what prost's event converts to.

use nettel_proto::v1;
use prost::{
    bytes::{Buf, Bytes},
    Message,
};

use super::{Event, Field, Kind, StreamMessage};

/// xorshift64: varied field values without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn field(&mut self) -> u64 {
        match self.next() % 3 {
            0 => 0,
            1 => u64::MAX,
            _ => self.next() >> (self.next() % 64),
        }
    }

    /// 0 to 20 bytes: empty, valid and invalid addresses and trace ids.
    fn bytes(&mut self) -> Bytes {
        let len = [0, 4, 16, 16, 3, 17, 20][(self.next() % 7) as usize];
        (0..len).map(|_| self.next() as u8).collect::<Vec<u8>>().into()
    }

    fn event(&mut self) -> v1::Event {
        let kind = match self.next() % 4 {
            0 => None,
            1 => Some(v1::event::Kind::Synthetic(v1::Synthetic { sequence: self.field() })),
            2 => Some(v1::event::Kind::TcpRetransmit(v1::TcpRetransmit {
                local_addr: self.bytes(),
                remote_addr: self.bytes(),
                local_port: self.field() as u32,
                remote_port: self.field() as u32,
                kind: self.field() as i32,
                tcp_state: self.field() as u32,
                error: self.field() as i32,
                netns_cookie: self.field(),
                segments: self.field() as u32,
            })),
            _ => Some(v1::event::Kind::HttpRequest(v1::HttpRequest {
                local_addr: self.bytes(),
                remote_addr: self.bytes(),
                local_port: self.field() as u32,
                remote_port: self.field() as u32,
                method: self.field() as i32,
                status: self.field() as u32,
                duration_ns: self.field(),
                cgroup_id: self.field(),
                trace_id: self.bytes(),
                tls: self.next() % 2 == 1,
                exemplar_only: self.next() % 2 == 1,
            })),
        };
        v1::Event { timestamp_boot_ns: self.field(), kind }
    }

    fn message(&mut self, events: usize) -> v1::StreamEventsResponse {
        v1::StreamEventsResponse {
            epoch: self.next(),
            first_event_sequence: self.field(),
            events: (0..events).map(|_| self.event()).collect(),
            loss: Some(v1::LossReport { decode_errors: self.field(), ..Default::default() }),
            schema_version: v1::SCHEMA_VERSION,
            http_totals_complete: true,
            ..Default::default()
        }
    }
}

/// Both decoders on `bytes`: prost's (its events converted) and ours.
fn both(
    bytes: &[u8],
) -> (Result<StreamMessage, prost::DecodeError>, Result<StreamMessage, prost::DecodeError>) {
    let reference = v1::StreamEventsResponse::decode(Bytes::copy_from_slice(bytes)).map(StreamMessage::from);
    (reference, StreamMessage::decode(Bytes::copy_from_slice(bytes)))
}

/// Both decoders agree on `bytes`; returns whether they decoded it.
fn assert_same(bytes: &[u8], what: &str) -> bool {
    match both(bytes) {
        (Ok(a), Ok(b)) => {
            assert_eq!(a, b, "{what}");
            true
        }
        (Err(_), Err(_)) => false,
        (a, b) => panic!("{what}: prost {a:?}, ours {b:?}"),
    }
}

#[test]
fn messages_decode_as_prosts_events_convert() {
    let mut r = Rng(0x2545_f491_4f6c_dd1d);
    for _ in 0..50 {
        let msg = r.message(64);
        let bytes = msg.encode_to_vec();
        let ours = StreamMessage::decode(&bytes[..]).unwrap();
        assert_eq!(ours.events.len(), 64);
        assert_eq!(ours, StreamMessage::from(msg));
    }
}

#[test]
fn every_truncation_is_refused_or_decoded_alike() {
    let mut r = Rng(7);
    let bytes = r.message(6).encode_to_vec();
    for end in 0..bytes.len() {
        let _ = assert_same(&bytes[..end], &format!("cut at {end} of {}", bytes.len()));
    }
}

#[test]
fn repeated_unknown_and_mistyped_fields_follow_prost() {
    // An `events` entry from the raw bytes of an `Event`.
    let entry = |event: &[u8]| [&[4 << 3 | 2, event.len() as u8][..], event].concat();
    let rtx = |body: &[u8]| [&[10 << 3 | 2, body.len() as u8][..], body].concat();
    let http = |body: &[u8]| [&[12 << 3 | 2, body.len() as u8][..], body].concat();
    // Decoded by both.
    let decoded: Vec<(&str, Vec<u8>)> = vec![
        // remote_port twice (last wins), remote_addr twice (last wins).
        (
            "repeated scalars",
            entry(&rtx(&[4 << 3, 80, 4 << 3, 81, 2 << 3 | 2, 4, 1, 2, 3, 4, 2 << 3 | 2, 0])),
        ),
        // Two TcpRetransmit messages merge; an HttpRequest replaces them.
        ("merged kind", entry(&[rtx(&[4 << 3, 80]), rtx(&[9 << 3, 3])].concat())),
        ("replaced kind", entry(&[rtx(&[4 << 3, 80]), http(&[6 << 3, 200, 1])].concat())),
        ("replaced back", entry(&[http(&[6 << 3, 200, 1]), rtx(&[4 << 3, 80])].concat())),
        // Unknown fields of every wire type, a group included, at every
        // level (one-byte keys: tags under 16 the messages do not use).
        (
            "unknown fields",
            [
                vec![14 << 3, 1, 15 << 3 | 5, 0, 0, 0, 0],
                entry(
                    &[
                        &[13 << 3 | 1, 0, 0, 0, 0, 0, 0, 0, 0][..],
                        &rtx(&[14 << 3 | 3, 1 << 3, 5, 14 << 3 | 4]),
                    ]
                    .concat(),
                ),
                entry(&http(&[15 << 3 | 2, 2, 0, 0, 6 << 3, 200, 1])),
            ]
            .concat(),
        ),
        // sint32 error: zigzag of -3.
        ("negative error", entry(&rtx(&[7 << 3, 5]))),
    ];
    // Refused by both.
    let refused: Vec<(&str, Vec<u8>)> = vec![
        // A known field with the wrong wire type.
        ("mistyped port", entry(&rtx(&[4 << 3 | 2, 1, 80]))),
        ("mistyped address", entry(&rtx(&[2 << 3, 4]))),
        ("mistyped kind", entry(&[10 << 3, 1])),
        ("mistyped events", vec![4 << 3, 1]),
        ("unmatched end group", entry(&rtx(&[14 << 3 | 4]))),
        ("tag zero", entry(&rtx(&[0, 1]))),
        (
            "overlong varint",
            entry(&rtx(&[4 << 3, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02])),
        ),
        // A nested length past its parent's end.
        ("nested length past the event", entry(&[10 << 3 | 2, 9, 4 << 3, 80])),
    ];
    for (what, bytes) in &decoded {
        assert!(assert_same(bytes, what), "{what}: refused");
    }
    for (what, bytes) in refused {
        assert!(!assert_same(&bytes, what), "{what}: decoded");
    }
    let unknown = &decoded_bytes(&decoded, "unknown fields");
    let kinds: Vec<_> =
        StreamMessage::decode(&unknown[..]).unwrap().events.into_iter().map(|e| e.kind).collect();
    let Kind::HttpRequest(h) = &kinds[1] else { panic!("{kinds:?}") };
    assert_eq!(
        (&kinds[0], h.status),
        (&Kind::TcpRetransmit(Default::default()), 200),
        "unknown fields skipped"
    );
    let (_, ours) = both(&entry(&[rtx(&[4 << 3, 80]), rtx(&[9 << 3, 3])].concat()));
    let Kind::TcpRetransmit(t) = &ours.unwrap().events[0].kind else { panic!("not merged") };
    assert_eq!((t.remote_port, t.segments), (80, 3), "merged like prost");
}

fn decoded_bytes(cases: &[(&str, Vec<u8>)], what: &str) -> Vec<u8> {
    cases.iter().find(|(w, _)| *w == what).map(|(_, b)| b.clone()).expect("a case of that name")
}

#[test]
fn a_message_in_pieces_decodes_alike() {
    let mut r = Rng(99);
    let msg = r.message(16);
    let bytes = msg.encode_to_vec();
    let (a, b) = bytes.split_at(bytes.len() / 3);
    let mut pieces = Bytes::copy_from_slice(a).chain(Bytes::copy_from_slice(b));
    assert!(pieces.chunk().len() < pieces.remaining(), "two pieces");
    let mut ours = StreamMessage::default();
    ours.merge(&mut pieces).unwrap();
    assert_eq!(ours, StreamMessage::from(msg));
}

#[test]
fn fields_hold_up_to_16_bytes_and_know_longer_ones() {
    let four = Field::from(&[10, 0, 0, 1][..]);
    assert_eq!(four.addr(), Some([10, 0, 0, 1].into()));
    let long = Field::from(&[1u8; 17][..]);
    assert_eq!((long.get(), long.addr(), long.is_empty()), (None, None, false));
    assert!(Field::default().is_empty());
    // Encoding keeps what the aggregator reads, a long field as long.
    let ev = Event::from(&v1::Event {
        kind: Some(v1::event::Kind::HttpRequest(v1::HttpRequest {
            trace_id: vec![7; 20].into(),
            status: 200,
            ..Default::default()
        })),
        ..Default::default()
    });
    let msg = StreamMessage { events: vec![ev], ..Default::default() };
    assert_eq!(StreamMessage::decode(&msg.encode_to_vec()[..]).unwrap(), msg);
}
