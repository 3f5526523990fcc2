// SPDX-License-Identifier: Apache-2.0
//! The benchmark object: a synthetic event per getppid() and a
//! retransmit-shaped event per getpgrp() of one process.

use nettel_bpf::names;

use super::Tracepoint;

/// The benchmark programs.
pub const PROGRAMS: [Tracepoint; 2] = [
    Tracepoint {
        program: names::PROG_BENCH,
        category: "syscalls",
        name: "sys_enter_getppid",
        attach_point: "tracepoint/syscalls/sys_enter_getppid",
    },
    Tracepoint {
        program: names::PROG_BENCH_RTX,
        category: "syscalls",
        name: "sys_enter_getpgrp",
        attach_point: "tracepoint/syscalls/sys_enter_getpgrp",
    },
];
