// SPDX-License-Identifier: Apache-2.0
//! The loader's one error enum.
//!
//! Display strings never include a BPF verifier log: a CAP_PERFMON loader's
//! verifier output can contain kernel addresses, so [`Error::ProgramLoad`] keeps
//! only the errno.

use std::{io, path::PathBuf};

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
    PinnedMapMismatch { map: &'static str, path: PathBuf, reason: String },
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
    #[error("gRPC server failed")]
    Serve(#[source] tonic::transport::Error),
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
