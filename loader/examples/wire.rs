// SPDX-License-Identifier: Apache-2.0
//! Microbenchmark of the loader's per-event work between the ring buffer and
//! the stream: ns per record to turn ring records into the `events` entries
//! of a 256-event `StreamEventsResponse` (the default batch), both ways:
//!
//! - prost: `convert::to_proto` builds a `v1::Event` per record and prost
//!   encodes the message (the loader before 402fd3e);
//! - writer: `source::wire::Writer` appends each record's entry to the
//!   batch's buffer (the loader since then).
//!
//! Records of the three kinds the probes write, with the field values a busy
//! node produces (IPv4 and IPv6 peers, HTTP with and without a trace id).
//! Both produce the same bytes; the example checks it before timing.
//!
//! `cargo run --release -p nettel-loader --example wire`

use std::{hint::black_box, time::Instant};

use nettel_bpf::{abi, Record};
use nettel_loader::source::{convert::to_proto, wire::Writer};
use nettel_proto::v1;
use prost::Message;

const EVENTS: usize = 256;
const ROUNDS: u32 = 20_000;

fn main() {
    for (name, make) in [
        ("synthetic", synthetic as fn(usize) -> Record),
        ("TCP retransmit", retransmit),
        ("HTTP request", http),
    ] {
        run(name, &(0..EVENTS).map(make).collect::<Vec<_>>());
    }
}

fn run(name: &str, records: &[Record]) {
    let mut writer = Writer::default();
    let mut out = Vec::with_capacity(1 << 16);
    let prost_bytes = |out: &mut Vec<u8>| {
        out.clear();
        let msg =
            v1::StreamEventsResponse { events: records.iter().map(to_proto).collect(), ..Default::default() };
        msg.encode(out).expect("a Vec grows");
    };
    prost_bytes(&mut out);
    for rec in records {
        writer.push(rec);
    }
    assert_eq!(writer.take().bytes[..], out[..], "the writer and prost disagree on {name} events");

    let per_event = |start: Instant| start.elapsed().as_nanos() as f64 / f64::from(ROUNDS) / EVENTS as f64;
    println!("\n{name} events, {EVENTS} per message, {} bytes; ns per event:\n", out.len());
    println!("| pass | to_proto + prost | wire::Writer |");
    println!("|---|---|---|");
    for pass in 1..=3 {
        let start = Instant::now();
        for _ in 0..ROUNDS {
            prost_bytes(&mut out);
            black_box(&out);
        }
        let prost = per_event(start);
        let start = Instant::now();
        for _ in 0..ROUNDS {
            for rec in records {
                writer.push(rec);
            }
            black_box(writer.take());
        }
        let wire = per_event(start);
        println!("| {pass} | {prost:.1} | {wire:.1} |");
    }
}

/// A peer address of family `family` (`AF_INET` or `AF_INET6`), varied by `i`.
fn addr(family: u8, i: usize) -> [u8; 16] {
    let mut a = [0u8; 16];
    if family == nettel_bpf::AF_INET {
        a[..4].copy_from_slice(&[10, 244, (i >> 8) as u8, i as u8]);
    } else {
        a[..2].copy_from_slice(&[0xfd, 0x00]);
        a[14..].copy_from_slice(&(i as u16).to_be_bytes());
    }
    a
}

fn family(i: usize) -> u8 {
    if i % 4 == 3 {
        nettel_bpf::AF_INET6
    } else {
        nettel_bpf::AF_INET
    }
}

fn synthetic(i: usize) -> Record {
    let mut ev = abi::nt_synthetic_event::default();
    ev.hdr.ts_boot_ns = 1_000_000_000_000 + i as u64 * 997;
    ev.seq = 1_000_000 + i as u64;
    Record::Synthetic(ev)
}

fn retransmit(i: usize) -> Record {
    let mut ev = abi::nt_tcp_retransmit_event::default();
    let fam = family(i);
    ev.hdr.ts_boot_ns = 1_000_000_000_000 + i as u64 * 997;
    (ev.saddr, ev.daddr) = (addr(fam, 1), addr(fam, i));
    (ev.sport, ev.dport) = (40_000 + i as u16, 8080);
    ev.family = fam;
    ev.state = 1;
    ev.rtx_kind = 0;
    ev.segs = 1;
    ev.netns_cookie = 4096;
    Record::TcpRetransmit(ev)
}

fn http(i: usize) -> Record {
    let mut ev = abi::nt_http_event::default();
    let fam = family(i);
    ev.hdr.ts_boot_ns = 1_000_000_000_000 + i as u64 * 997;
    (ev.saddr, ev.daddr) = (addr(fam, 1), addr(fam, i));
    (ev.sport, ev.dport) = (8080, 40_000 + i as u16);
    ev.family = fam;
    ev.method = 1;
    ev.status = if i.is_multiple_of(16) { 503 } else { 200 };
    ev.duration_ns = 150_000 + i as u64 * 31;
    ev.cgroup_id = 12_345;
    if i.is_multiple_of(2) {
        ev.flags = abi::NT_HTTP_F_TRACE;
        ev.trace_id = std::array::from_fn(|b| (b * 17 + i) as u8);
    }
    Record::Http(ev)
}
