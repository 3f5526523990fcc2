// SPDX-License-Identifier: Apache-2.0
//! Hostile ring-buffer records through the loader's ingest path: each is
//! dropped with its own error and counted in `decode_errors`, which reaches
//! aggregators as `LossReport.decode_errors` (`nettel_loader_decode_errors_total`).

use std::mem::{offset_of, size_of};

use nettel_bpf::abi;

use super::*;

/// A valid retransmit record, built byte by byte (no `unsafe` in the loader).
fn retransmit() -> Vec<u8> {
    let len = size_of::<abi::nt_tcp_retransmit_event>();
    let mut b = vec![0u8; len];
    b[..2].copy_from_slice(&(abi::NT_ABI_VERSION as u16).to_ne_bytes());
    b[offset_of!(abi::nt_event_hdr, kind)] = abi::NT_EVENT_TCP_RETRANSMIT as u8;
    b[offset_of!(abi::nt_event_hdr, len)..][..4].copy_from_slice(&(len as u32).to_ne_bytes());
    let daddr = offset_of!(abi::nt_tcp_retransmit_event, daddr);
    b[daddr..daddr + 4].copy_from_slice(&[10, 0, 0, 2]);
    b[offset_of!(abi::nt_tcp_retransmit_event, dport)..][..2].copy_from_slice(&8080u16.to_ne_bytes());
    b[offset_of!(abi::nt_tcp_retransmit_event, family)] = 2;
    b[offset_of!(abi::nt_tcp_retransmit_event, rtx_kind)] = abi::NT_RTX_DATA as u8;
    b
}

#[test]
fn hostile_records_are_dropped_and_counted() {
    let good = retransmit();
    let mut version = good.clone();
    version[..2].copy_from_slice(&7u16.to_ne_bytes());
    let mut kind = good.clone();
    kind[offset_of!(abi::nt_event_hdr, kind)] = 99;
    let mut family = good.clone();
    family[offset_of!(abi::nt_tcp_retransmit_event, family)] = 3;
    let mut oversized = good.clone();
    oversized.extend_from_slice(&[0; 4096]);
    let cases: [(&str, &[u8], &str); 7] = [
        ("zero-length", &[], "short"),
        ("truncated header", &good[..7], "short"),
        ("truncated body", &good[..good.len() - 1], "length_mismatch"),
        ("oversized", &oversized, "length_mismatch"),
        ("wrong ABI version", &version, "abi_version"),
        ("unknown kind", &kind, "unknown_kind"),
        ("unknown family", &family, "unknown_family"),
    ];
    let counters = Counters::default();
    let mut batch = Writer::default();
    for (i, (what, input, reason)) in cases.iter().enumerate() {
        let e = ingest(input, &mut batch, &counters).expect_err(what);
        assert_eq!(e.reason(), *reason, "{what}: {e}");
        assert_eq!(counters.decode_errors.load(Relaxed), i as u64 + 1, "{what} is counted");
    }
    assert!(batch.is_empty(), "nothing undecodable reaches subscribers");

    ingest(&good, &mut batch, &counters).unwrap();
    assert_eq!(counters.decode_errors.load(Relaxed), cases.len() as u64);
    let events = batch.take();
    let msg = <v1::StreamEventsResponse as prost::Message>::decode(events.bytes).unwrap();
    let Some(v1::event::Kind::TcpRetransmit(t)) = &msg.events[0].kind else { panic!("{msg:?}") };
    assert_eq!((&t.remote_addr[..], t.remote_port), (&[10, 0, 0, 2][..], 8080));
}
