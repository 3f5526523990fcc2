// SPDX-License-Identifier: Apache-2.0
//! Ring-buffer records (the kernel ABI) to proto events (the public contract).

use nettel_bpf::{abi, Record, AF_INET};
use nettel_proto::{v1, Bytes};

/// An ABI address (16 bytes, IPv4 in the first 4): its 4 or 16 proto bytes.
pub fn addr(a: &[u8; 16], family: u8) -> &[u8] {
    let len = if family == AF_INET { 4 } else { 16 };
    &a[..len]
}

/// An ABI method (`enum nt_http_method`) as its proto value.
pub fn method(m: u8) -> v1::HttpMethod {
    match u32::from(m) {
        abi::NT_HTTP_GET => v1::HttpMethod::Get,
        abi::NT_HTTP_POST => v1::HttpMethod::Post,
        abi::NT_HTTP_PUT => v1::HttpMethod::Put,
        abi::NT_HTTP_DELETE => v1::HttpMethod::Delete,
        abi::NT_HTTP_HEAD => v1::HttpMethod::Head,
        abi::NT_HTTP_PATCH => v1::HttpMethod::Patch,
        abi::NT_HTTP_OPTIONS => v1::HttpMethod::Options,
        abi::NT_HTTP_CONNECT => v1::HttpMethod::Connect,
        abi::NT_HTTP_TRACE => v1::HttpMethod::Trace,
        _ => v1::HttpMethod::Other,
    }
}

/// An ABI retransmit kind (`enum nt_retransmit_kind`) as its proto value.
pub fn retransmit_kind(k: u8) -> v1::RetransmitKind {
    match u32::from(k) {
        abi::NT_RTX_DATA => v1::RetransmitKind::Data,
        abi::NT_RTX_SYNACK => v1::RetransmitKind::Synack,
        _ => v1::RetransmitKind::Unspecified,
    }
}

/// Converts a decoded record to its proto event: the reference for the
/// stream's encoding, which [`super::wire`] writes without building the
/// event (its tests hold the two to the same bytes).
pub fn to_proto(rec: &Record) -> v1::Event {
    match rec {
        Record::Http(ev) => {
            let method = method(ev.method);
            let traced = ev.flags & abi::NT_HTTP_F_TRACE != 0;
            v1::Event {
                timestamp_boot_ns: ev.hdr.ts_boot_ns,
                kind: Some(v1::event::Kind::HttpRequest(v1::HttpRequest {
                    local_addr: Bytes::copy_from_slice(addr(&ev.saddr, ev.family)),
                    remote_addr: Bytes::copy_from_slice(addr(&ev.daddr, ev.family)),
                    local_port: ev.sport.into(),
                    remote_port: ev.dport.into(),
                    method: method as i32,
                    status: ev.status.into(),
                    duration_ns: ev.duration_ns,
                    cgroup_id: ev.cgroup_id,
                    trace_id: if traced { Bytes::copy_from_slice(&ev.trace_id) } else { Bytes::new() },
                    tls: ev.flags & abi::NT_HTTP_F_TLS != 0,
                    exemplar_only: ev.flags & abi::NT_HTTP_F_COUNTED != 0,
                })),
            }
        }
        Record::Synthetic(ev) => v1::Event {
            timestamp_boot_ns: ev.hdr.ts_boot_ns,
            kind: Some(v1::event::Kind::Synthetic(v1::Synthetic { sequence: ev.seq })),
        },
        Record::TcpRetransmit(ev) => {
            let kind = retransmit_kind(ev.rtx_kind);
            v1::Event {
                timestamp_boot_ns: ev.hdr.ts_boot_ns,
                kind: Some(v1::event::Kind::TcpRetransmit(v1::TcpRetransmit {
                    local_addr: Bytes::copy_from_slice(addr(&ev.saddr, ev.family)),
                    remote_addr: Bytes::copy_from_slice(addr(&ev.daddr, ev.family)),
                    local_port: ev.sport.into(),
                    remote_port: ev.dport.into(),
                    kind: kind as i32,
                    tcp_state: ev.state.into(),
                    error: ev.err,
                    netns_cookie: ev.netns_cookie,
                    segments: ev.segs.into(),
                })),
            }
        }
    }
}
