// SPDX-License-Identifier: Apache-2.0
//! The `http` object: a BTF raw tracepoint on `sys_exit` for the read/write
//! syscall family, and the `sys_enter_close` tracepoint.

use aya::{programs::BtfTracePoint, Btf, Ebpf};
use nettel_bpf::names;

use super::{Attached, Tracepoint};
use crate::Error;

const EXIT_ATTACH_POINT: &str = "tp_btf/sys_exit";

/// The close program.
pub const CLOSE: Tracepoint = Tracepoint {
    program: names::PROG_HTTP_CLOSE,
    category: "syscalls",
    name: "sys_enter_close",
    attach_point: "tracepoint/syscalls/sys_enter_close",
};

/// Loads and attaches both programs.
pub fn attach(ebpf: &mut Ebpf) -> Result<Vec<Attached>, Error> {
    let program = names::PROG_HTTP_EXIT;
    let btf = Btf::from_sys_fs().map_err(|e| Error::Btf(e.to_string()))?;
    let prog: &mut BtfTracePoint = ebpf
        .program_mut(program)
        .ok_or(Error::ProgramMissing { program })?
        .try_into()
        .map_err(|e| Error::program(program, e))?;
    prog.load("sys_exit", &btf).map_err(|e| Error::program(program, e))?;
    prog.attach().map_err(|source| Error::Attach { program, attach_point: EXIT_ATTACH_POINT, source })?;
    Ok(vec![Attached { name: program, attach_point: EXIT_ATTACH_POINT }, CLOSE.attach(ebpf)?])
}
