// SPDX-License-Identifier: Apache-2.0
//! The `tcp_retransmit` object: data and SYN-ACK retransmit tracepoints.

use nettel_bpf::names;

use super::Tracepoint;

/// Programs of the object, attached in this order.
pub const PROGRAMS: &[Tracepoint] = &[
    Tracepoint {
        program: names::PROG_TCP_RTX,
        category: "tcp",
        name: "tcp_retransmit_skb",
        attach_point: "tracepoint/tcp/tcp_retransmit_skb",
    },
    Tracepoint {
        program: names::PROG_TCP_RTX_SYNACK,
        category: "tcp",
        name: "tcp_retransmit_synack",
        attach_point: "tracepoint/tcp/tcp_retransmit_synack",
    },
];
