// SPDX-License-Identifier: Apache-2.0
//! Attaching and detaching the OpenSSL uprobes of the `http` object, one set
//! per file (deduplicated by device and inode: a uprobe is per inode, so it
//! fires in every process, container or not, that maps that file, including
//! processes started later).
//!
//! The file is opened safely first (`open`), and the kernel is given
//! `/proc/self/fd/N` of that open file: it resolves the magic link to exactly
//! the inode opened, so nothing a container controls is resolved twice.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs::File,
    io,
    path::Path,
    sync::{Arc, Mutex},
};

use aya::{
    programs::{
        uprobe::{UProbeAttachLocation, UProbeLinkId, UProbeScope},
        UProbe,
    },
    Ebpf,
};
use nettel_bpf::names;

use super::{
    discover::{Source, Target},
    elf::{self, Kind, Offsets},
    maps::FileId,
    open, Reason,
};
use crate::{
    caps::{self, Operation},
    error::capability_hint,
    Error,
};

/// The http object, shared between the main thread (which keeps it alive)
/// and the attacher thread (which attaches uprobes to it).
pub type SharedEbpf = Arc<Mutex<Ebpf>>;

/// The uprobe programs, as (program, uretprobe?) loaded once at start.
pub const PROGRAMS: [&str; 5] = [
    names::PROG_TLS_ENT,
    names::PROG_TLS_ENTX,
    names::PROG_TLS_ENTX5,
    names::PROG_TLS_RD_RET,
    names::PROG_TLS_WR_RET,
];

/// Loads the uprobe programs into the kernel (BPF_PROG_LOAD, verifier).
pub fn load_programs(ebpf: &mut Ebpf) -> Result<(), Error> {
    for program in PROGRAMS {
        uprobe(ebpf, program)?.load().map_err(|e| Error::program(program, e))?;
    }
    Ok(())
}

fn uprobe<'a>(ebpf: &'a mut Ebpf, program: &'static str) -> Result<&'a mut UProbe, Error> {
    ebpf.program_mut(program)
        .ok_or(Error::ProgramMissing { program })?
        .try_into()
        .map_err(|e| Error::program(program, e))
}

/// The links of one file: return probes first, so an entry probe never runs
/// without its return probe (a thread would otherwise stay "in an SSL call").
/// Where the internal read and write functions were found, one pair each
/// there (they take the `_ex` variants' arguments) instead of the four
/// exported functions (`internal`).
fn hooks(off: &Offsets) -> Vec<(&'static str, u64)> {
    if let Some(i) = off.internal {
        let write_entry = if i.write_flags { names::PROG_TLS_ENTX5 } else { names::PROG_TLS_ENTX };
        return vec![
            (names::PROG_TLS_RD_RET, i.read),
            (names::PROG_TLS_WR_RET, i.write),
            (names::PROG_TLS_ENTX, i.read),
            (write_entry, i.write),
        ];
    }
    let mut v = vec![
        (names::PROG_TLS_RD_RET, off.read),
        (names::PROG_TLS_WR_RET, off.write),
        (names::PROG_TLS_ENT, off.read),
        (names::PROG_TLS_ENT, off.write),
    ];
    if let (Some(r), Some(w)) = (off.read_ex, off.write_ex) {
        v.splice(2..2, [(names::PROG_TLS_RD_RET, r), (names::PROG_TLS_WR_RET, w)]);
        v.extend([(names::PROG_TLS_ENTX, r), (names::PROG_TLS_ENTX, w)]);
    }
    v
}

/// Why attaching to a file failed, mapped to a [`Reason`].
#[derive(Debug)]
pub struct AttachFailure {
    pub reason: Reason,
    pub error: String,
}

/// Attached files and their links.
#[derive(Debug, Default)]
pub struct Links {
    attached: BTreeMap<FileId, Vec<(&'static str, UProbeLinkId)>>,
}

impl Links {
    /// Files with uprobes attached.
    pub fn files(&self) -> BTreeSet<FileId> {
        self.attached.keys().copied().collect()
    }

    pub fn contains(&self, id: FileId) -> bool {
        self.attached.contains_key(&id)
    }

    /// Opens the file of `target` safely, finds the hooks and attaches them.
    pub fn attach(
        &mut self,
        ebpf: &SharedEbpf,
        proc_root: &Path,
        id: FileId,
        target: &Target,
        cached: Option<Kind>,
    ) -> Result<Kind, AttachFailure> {
        let unreadable =
            |e: &dyn std::fmt::Display| AttachFailure { reason: Reason::Unreadable, error: e.to_string() };
        let file: File = match &target.source {
            Source::Library { pid, path } => {
                let root = open::open_root(&proc_root.join(pid.to_string()).join("root"))
                    .map_err(|e| unreadable(&e))?;
                open::open_in_root(&root, path, id).map_err(|e| unreadable(&e))?
            }
            Source::Exe { pid } => {
                open::open_exe(&proc_root.join(pid.to_string()), id).map_err(|e| unreadable(&e))?
            }
        };
        let kind = match cached {
            Some(k) => k,
            None => elf::inspect(&file).map_err(|e| unreadable(&e))?,
        };
        let Kind::OpenSsl(off) = kind else {
            return Err(AttachFailure {
                reason: Reason::Stripped,
                error: "no SSL_read/SSL_write symbols".into(),
            });
        };
        // The kernel resolves this magic link to the inode opened above.
        let fd_path = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&file));
        let mut guard = ebpf.lock().unwrap_or_else(|e| e.into_inner());
        let mut links = Vec::new();
        for (program, offset) in hooks(&off) {
            let result =
                uprobe(&mut guard, program).map_err(|e| io::Error::other(e.to_string())).and_then(|p| {
                    p.attach(
                        UProbeAttachLocation::AbsoluteOffset(offset),
                        &fd_path,
                        UProbeScope::AllProcesses,
                    )
                    .map_err(|e| io::Error::other(attach_error(&e)))
                });
            match result {
                Ok(link) => links.push((program, link)),
                Err(e) => {
                    detach_all(&mut guard, links);
                    return Err(AttachFailure {
                        reason: Reason::AttachFailed,
                        error: format!("{program}: {e}"),
                    });
                }
            }
        }
        drop(file);
        self.attached.insert(id, links);
        Ok(kind)
    }

    /// Detaches the uprobes of `id`.
    pub fn detach(&mut self, ebpf: &SharedEbpf, id: FileId) {
        if let Some(links) = self.attached.remove(&id) {
            detach_all(&mut ebpf.lock().unwrap_or_else(|e| e.into_inner()), links);
        }
    }

    /// Detaches everything.
    pub fn clear(&mut self, ebpf: &SharedEbpf) {
        for id in self.files() {
            self.detach(ebpf, id);
        }
    }
}

/// An error and its sources, `: `-separated (aya puts the errno in a source).
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// [`chain`] of an attach error; when the kernel refused (EPERM, or EACCES,
/// which `perf_uprobe_event_init()` returns without CAP_SYS_ADMIN), also the
/// capability this thread lacks, or the LSM/seccomp hint when it has it.
fn attach_error(e: &aya::programs::ProgramError) -> String {
    let mut refused = false;
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cur {
        refused |= matches!(c.downcast_ref::<io::Error>().and_then(io::Error::raw_os_error), Some(1 | 13));
        cur = c.source();
    }
    if !refused {
        return chain(e);
    }
    // This thread's own set (capability sets are per thread).
    let effective = rustix::thread::capabilities(None).map_or(0, |c| c.effective.bits());
    let missing = caps::missing_for(Operation::UprobeAttach, effective);
    format!("{} ({})", chain(e), capability_hint(Operation::UprobeAttach, &missing))
}

fn detach_all(ebpf: &mut Ebpf, links: Vec<(&'static str, UProbeLinkId)>) {
    // Entry probes first (the reverse of attach order).
    for (program, link) in links.into_iter().rev() {
        if let Ok(p) = uprobe(ebpf, program) {
            let _ = p.detach(link);
        }
    }
}

#[cfg(test)]
mod tests {
    use rustix::thread::CapabilitySet;

    use super::*;

    #[test]
    fn return_probes_come_before_entry_probes() {
        let mut off = Offsets { read: 1, write: 2, read_ex: Some(3), write_ex: Some(4), internal: None };
        let h = hooks(&off);
        assert_eq!(h.len(), 8);
        let first_entry = h.iter().position(|(p, _)| p.starts_with("nt_tls_ent")).unwrap();
        assert!(h[..first_entry].iter().all(|(p, _)| p.ends_with("_ret")));
        assert_eq!(first_entry, 4);
        let plain = hooks(&Offsets { read: 1, write: 2, read_ex: None, write_ex: None, internal: None });
        assert_eq!(plain.len(), 4);
        off.internal = Some(super::super::internal::Internal { read: 5, write: 6, write_flags: false });
        let internal = [
            (names::PROG_TLS_RD_RET, 5),
            (names::PROG_TLS_WR_RET, 6),
            (names::PROG_TLS_ENTX, 5),
            (names::PROG_TLS_ENTX, 6),
        ];
        assert_eq!(hooks(&off), internal);
        // OpenSSL >= 3.2: the write's byte count is the fifth argument.
        off.internal = Some(super::super::internal::Internal { read: 5, write: 6, write_flags: true });
        assert_eq!(hooks(&off)[3], (names::PROG_TLS_ENTX5, 6));
    }

    #[test]
    fn a_refused_uprobe_attach_names_cap_sys_admin_or_an_lsm() {
        let err = |errno| {
            aya::programs::ProgramError::SyscallError(aya::sys::SyscallError {
                call: "perf_event_open",
                io_error: io::Error::from_raw_os_error(errno),
            })
        };
        // A thread without CAP_SYS_ADMIN (capability sets are per thread).
        let without = std::thread::spawn(move || {
            caps::drop_to(CapabilitySet::empty()).unwrap();
            [1, 13].map(|errno| attach_error(&err(errno)))
        });
        for shown in without.join().unwrap() {
            assert!(shown.starts_with("`perf_event_open` failed: "), "{shown}");
            assert!(
                shown.ends_with("(needs CAP_SYS_ADMIN (Kubernetes: `capabilities.add: [SYS_ADMIN]`))"),
                "{shown}"
            );
        }
        if rustix::thread::capabilities(None).unwrap().effective.contains(CapabilitySet::SYS_ADMIN) {
            assert!(attach_error(&err(13)).ends_with("or a seccomp profile refused it)"));
        }
        assert_eq!(attach_error(&err(2)), "`perf_event_open` failed: No such file or directory (os error 2)");
    }
}
