// SPDX-License-Identifier: Apache-2.0
//! Microbenchmark of the stream codec (`src/codec.rs`) against prost through
//! buffers shaped like tonic's: ns per event to encode and decode a
//! 256-event stream message (the loader's default batch), of synthetic events
//! (what `nettel-bench` sends) and of TCP retransmit events (two `bytes`
//! fields each).
//!
//! `cargo run --release -p nettel-proto --example codec`
//!
//! tonic's `EncodeBuf` forwards only `put_slice` to its `BytesMut` and its
//! `DecodeBuf` advances the `BytesMut` on every call; [`TonicLikeEncode`] and
//! [`TonicLikeDecode`] do the same, so the "prost" columns are what the stock
//! tonic-prost codec costs.

use std::{hint::black_box, time::Instant};

use nettel_proto::{codec, v1};
use prost::{
    bytes::{buf::UninitSlice, Buf, BufMut, BytesMut},
    Message,
};

struct TonicLikeEncode<'a>(&'a mut BytesMut);

// SAFETY: every method forwards to `BytesMut`'s own implementation.
unsafe impl BufMut for TonicLikeEncode<'_> {
    fn remaining_mut(&self) -> usize {
        self.0.remaining_mut()
    }
    unsafe fn advance_mut(&mut self, cnt: usize) {
        // SAFETY: the caller's contract is `BytesMut::advance_mut`'s.
        unsafe { self.0.advance_mut(cnt) }
    }
    fn chunk_mut(&mut self) -> &mut UninitSlice {
        self.0.chunk_mut()
    }
    fn put_slice(&mut self, src: &[u8]) {
        self.0.put_slice(src)
    }
}

struct TonicLikeDecode<'a> {
    buf: &'a mut BytesMut,
    len: usize,
}

impl Buf for TonicLikeDecode<'_> {
    fn remaining(&self) -> usize {
        self.len
    }
    fn chunk(&self) -> &[u8] {
        let c = self.buf.chunk();
        &c[..c.len().min(self.len)]
    }
    fn advance(&mut self, cnt: usize) {
        assert!(cnt <= self.len);
        self.buf.advance(cnt);
        self.len -= cnt;
    }
    fn copy_to_bytes(&mut self, len: usize) -> prost::bytes::Bytes {
        assert!(len <= self.len);
        self.len -= len;
        self.buf.copy_to_bytes(len)
    }
}

fn main() {
    let synthetic = v1::event::Kind::Synthetic(v1::Synthetic { sequence: 123_456 });
    let retransmit = v1::event::Kind::TcpRetransmit(v1::TcpRetransmit {
        local_addr: vec![10, 0, 0, 1].into(),
        remote_addr: vec![10, 0, 0, 2].into(),
        local_port: 43_210,
        remote_port: 8080,
        kind: v1::RetransmitKind::Data as i32,
        tcp_state: 1,
        error: 0,
        netns_cookie: 4096,
        segments: 1,
    });
    for (name, kind) in [("synthetic (the pipeline benchmark's)", synthetic), ("TCP retransmit", retransmit)]
    {
        run(name, kind);
    }
}

fn run(name: &str, kind: v1::event::Kind) {
    const ROUNDS: u32 = 20_000;
    const EVENTS: usize = 256;
    let event = v1::Event { timestamp_boot_ns: 123_456_789_012_345, kind: Some(kind) };
    let msg = v1::StreamEventsResponse {
        first_event_sequence: 99_999_999,
        events: vec![event; EVENTS],
        ..Default::default()
    };
    let bytes = msg.encode_to_vec();
    let per_event = |start: Instant| start.elapsed().as_nanos() as f64 / f64::from(ROUNDS) / EVENTS as f64;
    println!("\n{name} events, {EVENTS} per message, {} bytes; ns per event:\n", bytes.len());
    println!("| pass | encode, prost | encode, codec | decode, prost | decode, codec |");
    println!("|---|---|---|---|---|");
    let mut out = BytesMut::with_capacity(1 << 20);
    let mut scratch = Vec::new();
    for pass in 1..=3 {
        let start = Instant::now();
        for _ in 0..ROUNDS {
            out.clear();
            msg.encode(&mut TonicLikeEncode(&mut out)).expect("room");
        }
        let enc_prost = per_event(start);
        let start = Instant::now();
        for _ in 0..ROUNDS {
            out.clear();
            codec::encode(&msg, &mut scratch, &mut TonicLikeEncode(&mut out));
        }
        let enc_codec = per_event(start);
        assert_eq!(out[..], bytes[..]);
        let start = Instant::now();
        for _ in 0..ROUNDS {
            let mut buf = BytesMut::from(&bytes[..]);
            let len = buf.len();
            black_box(
                v1::StreamEventsResponse::decode(TonicLikeDecode { buf: &mut buf, len }).expect("valid"),
            );
        }
        let dec_prost = per_event(start);
        let start = Instant::now();
        for _ in 0..ROUNDS {
            let mut buf = BytesMut::from(&bytes[..]);
            let len = buf.len();
            let got: v1::StreamEventsResponse =
                codec::decode(&mut TonicLikeDecode { buf: &mut buf, len }).expect("valid");
            black_box(got);
        }
        let dec_codec = per_event(start);
        println!("| {pass} | {enc_prost:.1} | {enc_codec:.1} | {dec_prost:.1} | {dec_codec:.1} |");
    }
}
