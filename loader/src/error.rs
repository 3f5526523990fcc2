// SPDX-License-Identifier: Apache-2.0
//! The loader's one error enum.
//!
//! Display strings never include a BPF verifier log: a CAP_PERFMON loader's
//! verifier output can contain kernel addresses, so [`Error::ProgramLoad`] keeps
//! only the errno.

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
    #[error("cannot read kernel BTF from /sys/kernel/btf/vmlinux: {0}")]
    Btf(String),
    #[error("BPF program `{program}` is missing from its object")]
    ProgramMissing { program: &'static str },
    #[error("BPF map `{map}` is missing from its object")]
    MapMissing { map: &'static str },
    /// The verifier rejected a program. Only the errno is kept (see module docs).
    #[error("the kernel refused to load BPF program `{program}`")]
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
    /// The kernel answered EPERM; `needs` names the missing capability.
    #[error("permission denied: {needs}")]
    Permission {
        needs: String,
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
}

// === impl Error: capability hints ===

impl Error {
    /// When the kernel refused this operation with EPERM, wraps it in
    /// [`Error::Permission`] naming the capability that is missing from the
    /// effective set (or, when none is, the likely LSM/seccomp refusal).
    pub fn with_capability_hint(self) -> Self {
        let op = match &self {
            Self::Mount { .. } => Operation::Mount,
            Self::ObjectLoad { .. } | Self::Map { .. } => Operation::Bpf,
            Self::ProgramLoad { .. } => Operation::TracingProgLoad,
            Self::Attach { .. } => Operation::Attach,
            _ => return self,
        };
        if !self.is_eperm() {
            return self;
        }
        let missing = caps::missing_for(op, sys::effective_caps().unwrap_or(0));
        let needs = capability_hint(op, &missing);
        Self::Permission { needs, source: Box::new(self) }
    }

    /// Whether an EPERM from the kernel is anywhere in the source chain.
    fn is_eperm(&self) -> bool {
        let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(self);
        while let Some(e) = cur {
            if e.downcast_ref::<io::Error>().and_then(io::Error::raw_os_error) == Some(1) {
                return true;
            }
            cur = e.source();
        }
        false
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
        assert!(load.is_eperm());
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
}
