// SPDX-License-Identifier: Apache-2.0
//! Microbenchmark of the aggregator's per-event decode: ns per event to
//! decode a 256-event `StreamEventsResponse` (the loader's default batch)
//! through the stream's codec (`nettel_proto::codec::decode`, from one
//! contiguous buffer as tonic hands it over), both ways:
//!
//! - prost: into `v1::StreamEventsResponse` (the aggregator before 19839b2);
//! - message: into `source::message::StreamMessage`, the fields the
//!   aggregator counts with addresses inline (the aggregator since then).
//!
//! Events of the three kinds the loader sends, with the field values a busy
//! node produces. Both decodes are checked to agree before timing.
//!
//! `cargo run --release -p nettel-aggregator --example decode`

use std::{hint::black_box, time::Instant};

use nettel_aggregator::source::message::{Event, StreamMessage};
use nettel_proto::{codec, v1, Bytes};
use prost::Message;

const EVENTS: usize = 256;
const ROUNDS: u32 = 20_000;

fn main() {
    for (name, make) in [
        ("synthetic", synthetic as fn(usize) -> v1::event::Kind),
        ("TCP retransmit", retransmit),
        ("HTTP request", http),
    ] {
        let events = (0..EVENTS)
            .map(|i| v1::Event { timestamp_boot_ns: 1_000_000_000_000 + i as u64 * 997, kind: Some(make(i)) })
            .collect();
        let msg = v1::StreamEventsResponse { first_event_sequence: 1_000_000, events, ..Default::default() };
        run(name, &msg);
    }
}

fn run(name: &str, msg: &v1::StreamEventsResponse) {
    let bytes = Bytes::from(msg.encode_to_vec());
    let decode_prost = || codec::decode::<v1::StreamEventsResponse, _>(&mut bytes.clone()).expect("valid");
    let decode_message = || codec::decode::<StreamMessage, _>(&mut bytes.clone()).expect("valid");
    let ours = decode_message();
    let expected: Vec<Event> = decode_prost().events.iter().map(Event::from).collect();
    assert_eq!(ours.events, expected, "the two decoders disagree on {name} events");

    let per_event = |start: Instant| start.elapsed().as_nanos() as f64 / f64::from(ROUNDS) / EVENTS as f64;
    println!("\n{name} events, {EVENTS} per message, {} bytes; ns per event:\n", bytes.len());
    println!("| pass | prost (v1::StreamEventsResponse) | source::message::StreamMessage |");
    println!("|---|---|---|");
    for pass in 1..=3 {
        let start = Instant::now();
        for _ in 0..ROUNDS {
            black_box(decode_prost());
        }
        let prost = per_event(start);
        let start = Instant::now();
        for _ in 0..ROUNDS {
            black_box(decode_message());
        }
        let message = per_event(start);
        println!("| {pass} | {prost:.1} | {message:.1} |");
    }
}

/// A peer address, IPv6 for every fourth event, varied by `i`.
fn addr(i: usize, n: usize) -> Bytes {
    if i % 4 == 3 {
        let mut a = vec![0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        a.extend_from_slice(&(n as u16).to_be_bytes());
        a.into()
    } else {
        vec![10, 244, (n >> 8) as u8, n as u8].into()
    }
}

fn synthetic(i: usize) -> v1::event::Kind {
    v1::event::Kind::Synthetic(v1::Synthetic { sequence: 1_000_000 + i as u64 })
}

fn retransmit(i: usize) -> v1::event::Kind {
    v1::event::Kind::TcpRetransmit(v1::TcpRetransmit {
        local_addr: addr(i, 1),
        remote_addr: addr(i, i),
        local_port: 40_000 + i as u32,
        remote_port: 8080,
        kind: v1::RetransmitKind::Data as i32,
        tcp_state: 1,
        error: 0,
        netns_cookie: 4096,
        segments: 1,
    })
}

fn http(i: usize) -> v1::event::Kind {
    v1::event::Kind::HttpRequest(v1::HttpRequest {
        local_addr: addr(i, 1),
        remote_addr: addr(i, i),
        local_port: 8080,
        remote_port: 40_000 + i as u32,
        method: v1::HttpMethod::Get as i32,
        status: if i.is_multiple_of(16) { 503 } else { 200 },
        duration_ns: 150_000 + i as u64 * 31,
        cgroup_id: 12_345,
        trace_id: if i.is_multiple_of(2) {
            (0..16).map(|b| (b * 17 + i) as u8).collect::<Vec<_>>().into()
        } else {
            Bytes::new()
        },
        ..Default::default()
    })
}
