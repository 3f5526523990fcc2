// SPDX-License-Identifier: Apache-2.0
//! The benchmark object: a synthetic event per getppid() of one process.

use aya::{programs::TracePoint, Ebpf};
use nettel_bpf::names;

use super::Attached;
use crate::Error;

/// Attach point label of the benchmark program.
pub const ATTACH_POINT: &str = "tracepoint/syscalls/sys_enter_getppid";

/// Loads and attaches the benchmark program.
pub fn attach(ebpf: &mut Ebpf) -> Result<Attached, Error> {
    let program = names::PROG_BENCH;
    let prog: &mut TracePoint = ebpf
        .program_mut(program)
        .ok_or(Error::ProgramMissing { program })?
        .try_into()
        .map_err(|e| Error::program(program, e))?;
    prog.load().map_err(|e| Error::program(program, e))?;
    prog.attach("syscalls", "sys_enter_getppid").map_err(|source| Error::Attach {
        program,
        attach_point: ATTACH_POINT,
        source,
    })?;
    Ok(Attached { name: program, attach_point: ATTACH_POINT })
}
