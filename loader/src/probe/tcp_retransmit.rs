// SPDX-License-Identifier: Apache-2.0
//! The `tcp_retransmit` object: data and SYN-ACK retransmit tracepoints.

use aya::{programs::TracePoint, Ebpf};
use nettel_bpf::names;

use super::Attached;
use crate::Error;

/// `(program, tracepoint category, tracepoint name, attach point label)`.
pub const PROGRAMS: &[(&str, &str, &str, &str)] = &[
    (names::PROG_TCP_RTX, "tcp", "tcp_retransmit_skb", "tracepoint/tcp/tcp_retransmit_skb"),
    (names::PROG_TCP_RTX_SYNACK, "tcp", "tcp_retransmit_synack", "tracepoint/tcp/tcp_retransmit_synack"),
];

/// Loads and attaches both tracepoint programs.
pub fn attach(ebpf: &mut Ebpf) -> Result<Vec<Attached>, Error> {
    let mut attached = Vec::with_capacity(PROGRAMS.len());
    for &(program, category, name, attach_point) in PROGRAMS {
        let prog: &mut TracePoint = ebpf
            .program_mut(program)
            .ok_or(Error::ProgramMissing { program })?
            .try_into()
            .map_err(|e| Error::program(program, e))?;
        prog.load().map_err(|e| Error::program(program, e))?;
        prog.attach(category, name).map_err(|source| Error::Attach { program, attach_point, source })?;
        attached.push(Attached { name: program, attach_point });
    }
    Ok(attached)
}
