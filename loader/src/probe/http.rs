// SPDX-License-Identifier: Apache-2.0
//! The `http` object, with three interchangeable sets of hooks:
//!
//! * sendmsg hooks (kernel >= 6.16): the socket hooks with
//!   `tp_btf/tcp_sendmsg_locked` for sends, which hands over the kernel's
//!   msghdr: a response costs one user read instead of three;
//! * socket hooks (kernel >= 6.3): `tp_btf/sock_recv_length`,
//!   `tp_btf/sock_send_length` and `tp_btf/inet_sock_set_state`. They run
//!   only for socket I/O, so the rest of the node's syscalls pay nothing;
//! * syscall hooks (kernels 5.8 to 6.2): `tp_btf/sys_exit` for the read/write
//!   syscall family (it runs on every syscall exit) and `sys_enter_close`.
//!
//! Each set comes with `tp_btf/cgroup_rmdir`, which frees a removed cgroup's
//! slots of the request table.

use std::path::Path;

use aya::{Btf, Ebpf};
use nettel_bpf::names;

use super::{Attached, BtfTracepoint, Tracepoint};
use crate::{config::HttpHook, Error};

/// The close program of the syscall hooks.
pub const CLOSE: Tracepoint = Tracepoint {
    program: names::PROG_HTTP_CLOSE,
    category: "syscalls",
    name: "sys_enter_close",
    attach_point: "tracepoint/syscalls/sys_enter_close",
};

/// Socket hooks.
const SOCKET_HOOKS: [BtfTracepoint; 3] = [
    BtfTracepoint {
        program: names::PROG_HTTP_RECV,
        tracepoint: "sock_recv_length",
        attach_point: "tp_btf/sock_recv_length",
    },
    BtfTracepoint {
        program: names::PROG_HTTP_SEND,
        tracepoint: "sock_send_length",
        attach_point: "tp_btf/sock_send_length",
    },
    BtfTracepoint {
        program: names::PROG_HTTP_STATE,
        tracepoint: "inet_sock_set_state",
        attach_point: "tp_btf/inet_sock_set_state",
    },
];

/// Sendmsg hooks: the socket hooks with `tcp_sendmsg_locked` for sends.
const SENDMSG_HOOKS: [BtfTracepoint; 3] = [
    SOCKET_HOOKS[0],
    BtfTracepoint {
        program: names::PROG_HTTP_SENDMSG,
        tracepoint: "tcp_sendmsg_locked",
        attach_point: "tp_btf/tcp_sendmsg_locked",
    },
    SOCKET_HOOKS[2],
];

/// Frees a removed cgroup's slots of the request table; attached with every
/// hook set.
const RMDIR: BtfTracepoint = BtfTracepoint {
    program: names::PROG_HTTP_RMDIR,
    tracepoint: "cgroup_rmdir",
    attach_point: "tp_btf/cgroup_rmdir",
};

/// The read/write program of the syscall hooks.
const SYS_EXIT: BtfTracepoint =
    BtfTracepoint { program: names::PROG_HTTP_EXIT, tracepoint: "sys_exit", attach_point: "tp_btf/sys_exit" };

/// The tracefs event whose presence means the socket hooks exist (Linux 6.3).
const SOCK_SEND_EVENT: &str = "events/sock/sock_send_length";
/// The tracefs event whose presence means the sendmsg hooks exist (Linux 6.16).
const TCP_SENDMSG_EVENT: &str = "events/tcp/tcp_sendmsg_locked";

/// Resolves `auto`: sendmsg hooks, else socket hooks, where the kernel has them.
pub fn resolve(hook: HttpHook, tracefs: &Path) -> HttpHook {
    match hook {
        HttpHook::Auto
            if tracefs.join(TCP_SENDMSG_EVENT).exists() && tracefs.join(SOCK_SEND_EVENT).exists() =>
        {
            HttpHook::Sendmsg
        }
        HttpHook::Auto if tracefs.join(SOCK_SEND_EVENT).exists() => HttpHook::Socket,
        HttpHook::Auto => HttpHook::Syscall,
        chosen => chosen,
    }
}

/// Loads the programs of `hook` (already resolved, not `Off`) and adopts or
/// attaches each (see [`super::link`]).
pub fn ensure(ebpf: &mut Ebpf, btf: &Btf, hook: HttpHook, links: &Path) -> Result<Vec<Attached>, Error> {
    let mut attached = match hook {
        HttpHook::Syscall => vec![SYS_EXIT.ensure(ebpf, btf, links)?, CLOSE.ensure(ebpf, links)?],
        HttpHook::Sendmsg => {
            SENDMSG_HOOKS.iter().map(|hook| hook.ensure(ebpf, btf, links)).collect::<Result<_, _>>()?
        }
        _ => SOCKET_HOOKS.iter().map(|hook| hook.ensure(ebpf, btf, links)).collect::<Result<_, _>>()?,
    };
    attached.push(RMDIR.ensure(ebpf, btf, links)?);
    Ok(attached)
}
