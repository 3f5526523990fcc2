// SPDX-License-Identifier: Apache-2.0
//! The loader's one error enum.
//!
//! Display strings never include a BPF verifier log: a CAP_PERFMON loader's
//! verifier output can contain kernel addresses (the verifier prints map
//! pointers when `allow_ptr_leaks`), so [`Error::ProgramLoad`] and
//! [`Error::BtfLoad`] keep only the errno (see [`Error::program`] and
//! [`Error::object`]; `loader/tests/verifier_log.rs` has the kernel reject a
//! program and checks).

use std::{io, path::PathBuf};

use crate::{
    caps::{self, Operation},
    sys,
};

/// Everything that can stop the loader.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("preflight checks failed: {0}")]
    Preflight(String),
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error(
        "the probes were built with NETTEL_BPF_STUB=1 and cannot be loaded; rebuild with clang installed"
    )]
    StubObject,
    #[error("failed to mount {fstype} at {}", .target.display())]
    Mount {
        fstype: &'static str,
        target: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("pin dir {} is unsafe: {reason}", .path.display())]
    UnsafePinDir { path: PathBuf, reason: String },
    #[error("pinned map `{map}` at {} does not match this loader: {reason}; remove it with `nettel-loader cleanup`", .path.display())]
    PinnedMapMismatch { map: String, path: PathBuf, reason: String },
    #[error("cannot parse BPF object `{object}`: {reason}")]
    ObjectParse { object: &'static str, reason: String },
    #[error("failed to load BPF object `{object}`")]
    ObjectLoad {
        object: &'static str,
        #[source]
        source: aya::EbpfError,
    },
    /// The kernel rejected an object's BTF. Only the errno is kept (see module docs).
    #[error("the kernel refused the BTF of BPF object `{object}` (BPF_BTF_LOAD; its log is not shown: it can contain kernel addresses)")]
    BtfLoad {
        object: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("cannot read kernel BTF from /sys/kernel/btf/vmlinux: {0}")]
    Btf(String),
    #[error("BPF program `{program}` is missing from its object")]
    ProgramMissing { program: &'static str },
    #[error("BPF map `{map}` is missing from its object")]
    MapMissing { map: &'static str },
    /// The kernel (usually its verifier) rejected a program. Only the errno is
    /// kept (see module docs); the message gives its class.
    #[error("the kernel refused to load BPF program `{program}`{}", load_refusal(.source))]
    ProgramLoad {
        program: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("failed to attach `{program}` to `{attach_point}`")]
    Attach {
        program: &'static str,
        attach_point: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("the link of `{program}` cannot be pinned ({reason}); pinned links need Linux >= 5.15")]
    Unpinnable { program: &'static str, reason: String },
    #[error("failed to pin the link of `{program}` at {}", .path.display())]
    PinLink {
        program: &'static str,
        path: PathBuf,
        #[source]
        source: aya::pin::PinError,
    },
    /// Opening a pinned map (`BPF_OBJ_GET`) failed with EPERM: refused, which
    /// says nothing about whether the map matches.
    #[error("cannot open pinned map `{map}` at {}", .path.display())]
    PinnedMapRefused {
        map: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("BPF map `{map}` failed")]
    Map {
        map: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("socket {}: {what}", .path.display())]
    Socket {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("{what} at {}", .path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The kernel answered EPERM; `needs` names the missing capability and
    /// `refused` the system call the kernel refused.
    #[error("permission denied: {needs}: the kernel refused {refused}")]
    Permission {
        needs: String,
        refused: String,
        #[source]
        source: Box<Error>,
    },
    /// `--tls on` without the TLS attacher's capabilities in the permitted set.
    #[error("permission denied: --tls on needs {} for the TLS attacher thread (Kubernetes: `capabilities.add: [{}]` and hostPID, see deploy/overlays/https), or run with --tls=off", .missing.join(" and "), .missing.iter().map(|m| m.trim_start_matches("CAP_")).collect::<Vec<_>>().join(", "))]
    TlsCapabilities { missing: Vec<&'static str> },
    #[error("failed to drop capabilities after attach")]
    DropCapabilities(#[source] io::Error),
}

impl Error {
    /// Wraps an aya program error, stripping any verifier log.
    pub fn program(program: &'static str, e: aya::programs::ProgramError) -> Self {
        match e {
            aya::programs::ProgramError::LoadError { io_error, .. } => {
                Self::ProgramLoad { program, source: io_error }
            }
            other => Self::ProgramLoad { program, source: io::Error::other(other.to_string()) },
        }
    }

    /// Wraps an aya object-load error, stripping the log of a rejected BTF
    /// (aya programs are loaded later, through [`Error::program`]).
    pub fn object(object: &'static str, e: aya::EbpfError) -> Self {
        match e {
            aya::EbpfError::BtfError(aya::BtfError::LoadError { io_error, .. }) => {
                Self::BtfLoad { object, source: io_error }
            }
            source => Self::ObjectLoad { object, source },
        }
    }
}

/// The class of a program-load refusal, from its errno (`: ...`, or empty).
fn load_refusal(e: &io::Error) -> &'static str {
    use rustix::io::Errno;
    match Errno::from_io_error(e) {
        Some(Errno::ACCESS) => ": the verifier rejected it (its log is not shown: it can contain kernel addresses)",
        Some(Errno::INVAL) => {
            ": the kernel or its verifier found it invalid (the verifier log is not shown: it can contain kernel addresses)"
        }
        Some(Errno::TOOBIG) => ": too large for this kernel",
        Some(Errno::NOMEM) => ": out of memory (locked memory or the cgroup's memory limit)",
        _ => "",
    }
}

// === impl Error: capability hints ===

impl Error {
    /// When the kernel refused this operation with EPERM, wraps it in
    /// [`Error::Permission`] naming the capability that is missing from the
    /// effective set (or, when none is, the likely LSM/seccomp refusal) and
    /// the system call refused.
    pub fn with_capability_hint(self) -> Self {
        let op = match &self {
            Self::Mount { .. } => Operation::Mount,
            Self::ObjectLoad { .. }
            | Self::BtfLoad { .. }
            | Self::Map { .. }
            | Self::PinLink { .. }
            | Self::PinnedMapRefused { .. } => Operation::Bpf,
            Self::ProgramLoad { .. } => Operation::TracingProgLoad,
            Self::Attach { .. } => Operation::Attach,
            _ => return self,
        };
        if !is_eperm(&self) {
            return self;
        }
        let missing = caps::missing_for(op, sys::effective_caps().unwrap_or(0));
        let needs = capability_hint(op, &missing);
        let refused = self.kernel_call();
        Self::Permission { needs, refused, source: Box::new(self) }
    }

    /// The system call (and bpf(2) command) behind this error, for
    /// [`Error::Permission`].
    fn kernel_call(&self) -> String {
        use aya::{maps::MapError, programs::ProgramError, EbpfError};
        let map_call = |e: &MapError| match e {
            MapError::CreateError { .. } => "bpf(BPF_MAP_CREATE)".to_owned(),
            MapError::PinError { .. } => "bpf(BPF_OBJ_PIN)".to_owned(),
            MapError::SyscallError(e) => syscall(e.call),
            _ => "bpf(2)".to_owned(),
        };
        match self {
            Self::Mount { .. } => "mount(2)".into(),
            Self::ObjectLoad { source: EbpfError::MapError(e), .. } | Self::Map { source: e, .. } => {
                map_call(e)
            }
            Self::BtfLoad { .. } | Self::ObjectLoad { source: EbpfError::BtfError(_), .. } => {
                "bpf(BPF_BTF_LOAD)".into()
            }
            Self::ProgramLoad { .. } => "bpf(BPF_PROG_LOAD)".into(),
            Self::Attach { source: ProgramError::SyscallError(e), .. } => syscall(e.call),
            Self::PinLink { .. } => "bpf(BPF_OBJ_PIN)".into(),
            Self::PinnedMapRefused { .. } => "bpf(BPF_OBJ_GET)".into(),
            _ => "a system call".into(),
        }
    }
}

/// Whether an EPERM from the kernel is anywhere in the source chain of `e`.
fn is_eperm(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(e) = cur {
        if e.downcast_ref::<io::Error>().and_then(io::Error::raw_os_error) == Some(1) {
            return true;
        }
        cur = e.source();
    }
    false
}

/// The system call behind an aya `SyscallError::call` label.
fn syscall(call: &str) -> String {
    if let Some(cmd) = call.strip_prefix("bpf_") {
        format!("bpf(BPF_{})", cmd.to_uppercase())
    } else if call.starts_with("BPF_") {
        format!("bpf({call})")
    } else if call.starts_with("perf_event_open") {
        "perf_event_open(2)".into()
    } else if call.starts_with("PERF_EVENT_IOC_") {
        format!("ioctl({call})")
    } else if call == "mmap" {
        "mmap(2)".into()
    } else {
        format!("`{call}`")
    }
}

/// The sentence of [`Error::Permission`] for `op` with `missing` capabilities.
pub(crate) fn capability_hint(op: Operation, missing: &[&str]) -> String {
    if missing.is_empty() {
        return "the needed capabilities are effective, so an LSM (lockdown, SELinux, AppArmor) or a seccomp profile refused it".into();
    }
    let add: Vec<&str> = missing.iter().map(|m| m.trim_start_matches("CAP_")).collect();
    match op {
        Operation::Mount => format!(
            "needs {}; mount it on the host instead and pass it in with a hostPath volume (deploy/base/daemonset.yaml)",
            missing.join(" and ")
        ),
        _ => format!("needs {} (Kubernetes: `capabilities.add: [{}]`)", missing.join(" and "), add.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eperm_names_the_missing_capability() {
        let load = Error::ProgramLoad { program: "nt_tcp_rtx", source: io::Error::from_raw_os_error(1) };
        assert!(is_eperm(&load));
        let other = Error::ProgramLoad { program: "nt_tcp_rtx", source: io::Error::from_raw_os_error(13) };
        assert!(matches!(other.with_capability_hint(), Error::ProgramLoad { .. }));
        assert_eq!(
            capability_hint(Operation::TracingProgLoad, &["CAP_PERFMON"]),
            "needs CAP_PERFMON (Kubernetes: `capabilities.add: [PERFMON]`)"
        );
        assert!(capability_hint(Operation::Mount, &["CAP_SYS_ADMIN"])
            .starts_with("needs CAP_SYS_ADMIN; mount it"));
        assert!(capability_hint(Operation::Attach, &[]).contains("LSM"));
    }

    #[test]
    fn a_permission_error_names_the_system_call_the_kernel_refused() {
        use aya::{maps::MapError, programs::ProgramError, sys::SyscallError};
        let eperm = || io::Error::from_raw_os_error(1);
        let syscall = |call| SyscallError { call, io_error: eperm() };
        let cases = [
            (
                Error::ObjectLoad {
                    object: "http",
                    source: MapError::CreateError { name: "nt_events".into(), io_error: eperm() }.into(),
                },
                "bpf(BPF_MAP_CREATE)",
            ),
            (Error::BtfLoad { object: "http", source: eperm() }, "bpf(BPF_BTF_LOAD)"),
            (Error::ProgramLoad { program: "nt_tcp_rtx", source: eperm() }, "bpf(BPF_PROG_LOAD)"),
            (
                Error::Attach {
                    program: "nt_http_close",
                    attach_point: "tracepoint/syscalls/sys_enter_close",
                    source: ProgramError::SyscallError(syscall("perf_event_open_trace_point")),
                },
                "perf_event_open(2)",
            ),
            (
                Error::Attach {
                    program: "nt_http_recv",
                    attach_point: "tp_btf/sock_recv_length",
                    source: ProgramError::SyscallError(syscall("bpf_raw_tracepoint_open")),
                },
                "bpf(BPF_RAW_TRACEPOINT_OPEN)",
            ),
            (
                Error::PinLink {
                    program: "nt_tcp_rtx",
                    path: "/sys/fs/bpf/nettel/links/nt_tcp_rtx".into(),
                    source: aya::pin::PinError::SyscallError(syscall("BPF_OBJ_PIN")),
                },
                "bpf(BPF_OBJ_PIN)",
            ),
            (
                Error::PinnedMapRefused {
                    map: "nt_events".into(),
                    path: "/sys/fs/bpf/nettel/nt_events".into(),
                    source: eperm(),
                },
                "bpf(BPF_OBJ_GET)",
            ),
            (Error::Map { map: "nt_events", source: MapError::SyscallError(syscall("mmap")) }, "mmap(2)"),
            (
                Error::Map {
                    map: "nt_http_cfg",
                    source: MapError::SyscallError(syscall("bpf_map_update_elem")),
                },
                "bpf(BPF_MAP_UPDATE_ELEM)",
            ),
            (Error::Mount { fstype: "bpf", target: "/sys/fs/bpf".into(), source: eperm() }, "mount(2)"),
        ];
        for (e, call) in cases {
            let shown = e.with_capability_hint().to_string();
            assert!(shown.starts_with("permission denied: "), "{shown}");
            assert!(shown.ends_with(&format!(": the kernel refused {call}")), "{shown}");
        }
    }

    #[test]
    fn a_rejected_btf_keeps_the_errno_not_the_log() {
        let log = "magic: 0xeb9f\n[3] STRUCT nt_conn size=16 vlen=2\n\tsaddr type_id=9 bits_offset=0 Invalid member";
        let e = Error::object(
            "http",
            aya::EbpfError::BtfError(aya::BtfError::LoadError {
                io_error: io::Error::from_raw_os_error(22),
                verifier_log: aya_obj::VerifierLog::new(log.into()),
            }),
        );
        let debug = format!("{e:?}");
        let shown = format!("{:#}\n{debug}", anyhow::Error::from(e));
        for line in log.lines() {
            assert!(!shown.contains(line.trim()), "{shown}");
        }
        assert!(shown.contains("the kernel refused the BTF of BPF object `http`"), "{shown}");
        assert!(shown.contains("os error 22"), "{shown}");
    }

    #[test]
    fn a_program_load_refusal_says_its_class() {
        let load = |errno| {
            Error::ProgramLoad { program: "nt_http_recv", source: io::Error::from_raw_os_error(errno) }
                .to_string()
        };
        assert!(load(13).ends_with("`nt_http_recv`: the verifier rejected it (its log is not shown: it can contain kernel addresses)"));
        assert!(load(22).contains("found it invalid"));
        assert_eq!(load(5), "the kernel refused to load BPF program `nt_http_recv`");
    }
}
