// SPDX-License-Identifier: Apache-2.0
//! The `tcp_retransmit` object: data and SYN-ACK retransmit BTF tracepoints.

use nettel_bpf::names;

use super::BtfTracepoint;

/// Programs of the object, attached in this order.
pub const PROGRAMS: &[BtfTracepoint] = &[
    BtfTracepoint {
        program: names::PROG_TCP_RTX,
        tracepoint: "tcp_retransmit_skb",
        attach_point: "tp_btf/tcp_retransmit_skb",
    },
    BtfTracepoint {
        program: names::PROG_TCP_RTX_SYNACK,
        tracepoint: "tcp_retransmit_synack",
        attach_point: "tp_btf/tcp_retransmit_synack",
    },
];
