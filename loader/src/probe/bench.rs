// SPDX-License-Identifier: Apache-2.0
//! The benchmark object: a synthetic event per getppid() of one process.

use nettel_bpf::names;

use super::Tracepoint;

/// The benchmark program.
pub const PROGRAM: Tracepoint = Tracepoint {
    program: names::PROG_BENCH,
    category: "syscalls",
    name: "sys_enter_getppid",
    attach_point: "tracepoint/syscalls/sys_enter_getppid",
};
