// SPDX-License-Identifier: Apache-2.0
//! The `http` object, with two interchangeable sets of hooks:
//!
//! * socket hooks (kernel >= 6.3): `tp_btf/sock_recv_length`,
//!   `tp_btf/sock_send_length` and `tp_btf/inet_sock_set_state`. They run
//!   only for socket I/O, so the rest of the node's syscalls pay nothing;
//! * syscall hooks (kernels 5.8 to 6.2): `tp_btf/sys_exit` for the read/write
//!   syscall family (it runs on every syscall exit) and `sys_enter_close`.

use std::path::Path;

use aya::{
    programs::{links::FdLink, BtfTracePoint},
    Btf, Ebpf,
};
use nettel_bpf::names;

use super::{link, Attached, Tracepoint};
use crate::{config::HttpHook, Error};

/// The close program of the syscall hooks.
pub const CLOSE: Tracepoint = Tracepoint {
    program: names::PROG_HTTP_CLOSE,
    category: "syscalls",
    name: "sys_enter_close",
    attach_point: "tracepoint/syscalls/sys_enter_close",
};

/// Socket hooks: (program, BTF tracepoint, attach point).
const SOCKET_HOOKS: [(&str, &str, &str); 3] = [
    (names::PROG_HTTP_RECV, "sock_recv_length", "tp_btf/sock_recv_length"),
    (names::PROG_HTTP_SEND, "sock_send_length", "tp_btf/sock_send_length"),
    (names::PROG_HTTP_STATE, "inet_sock_set_state", "tp_btf/inet_sock_set_state"),
];

/// The tracefs event whose presence means the socket hooks exist (Linux 6.3).
const SOCK_SEND_EVENT: &str = "events/sock/sock_send_length";

/// Resolves `auto`: socket hooks where the kernel has them.
pub fn resolve(hook: HttpHook, tracefs: &Path) -> HttpHook {
    match hook {
        HttpHook::Auto if tracefs.join(SOCK_SEND_EVENT).exists() => HttpHook::Socket,
        HttpHook::Auto => HttpHook::Syscall,
        chosen => chosen,
    }
}

/// Loads the programs of `hook` (already resolved, not `Off`) and adopts or
/// attaches each (see [`link`]).
pub fn ensure(ebpf: &mut Ebpf, hook: HttpHook, links: &Path) -> Result<Vec<Attached>, Error> {
    let btf = Btf::from_sys_fs().map_err(|e| Error::Btf(e.to_string()))?;
    match hook {
        HttpHook::Syscall => Ok(vec![
            btf_tracepoint(ebpf, &btf, (names::PROG_HTTP_EXIT, "sys_exit", "tp_btf/sys_exit"), links)?,
            CLOSE.ensure(ebpf, links)?,
        ]),
        _ => SOCKET_HOOKS.iter().map(|hook| btf_tracepoint(ebpf, &btf, *hook, links)).collect(),
    }
}

fn btf_tracepoint(
    ebpf: &mut Ebpf,
    btf: &Btf,
    (program, tracepoint, attach_point): (&'static str, &str, &'static str),
    links: &Path,
) -> Result<Attached, Error> {
    let prog: &mut BtfTracePoint = ebpf
        .program_mut(program)
        .ok_or(Error::ProgramMissing { program })?
        .try_into()
        .map_err(|e| Error::program(program, e))?;
    prog.load(tracepoint, btf).map_err(|e| Error::program(program, e))?;
    let tag = prog.info().map_err(|e| Error::program(program, e))?.tag();
    let origin = link::ensure(links, program, tag, || {
        let attach_err = |source| Error::Attach { program, attach_point, source };
        let id = prog.attach().map_err(attach_err)?;
        Ok(FdLink::from(prog.take_link(id).map_err(attach_err)?))
    })?;
    Ok(Attached { name: program, attach_point, origin })
}
