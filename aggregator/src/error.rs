// SPDX-License-Identifier: Apache-2.0
//! The aggregator's one error enum.

use std::{io, path::PathBuf};

/// Everything that can go wrong in the aggregator.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("refusing to run as root (uid 0): the aggregator needs no privileges; run it as an unprivileged user or pass --allow-root")]
    RunningAsRoot,
    #[error("failed to read pods file {}", .path.display())]
    PodsFileRead {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("pods file {} is invalid: {reason}", .path.display())]
    PodsFileInvalid { path: PathBuf, reason: String },
    #[error("failed to connect to the loader at {}", .path.display())]
    Connect {
        path: PathBuf,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("loader stream failed: {0}")]
    Stream(#[from] tonic::Status),
    #[error(
        "loader writes event schema {got}, this aggregator understands schema {want}; upgrade the aggregator"
    )]
    SchemaTooNew { got: u32, want: u32 },
    #[error("Kubernetes client setup failed: {0}")]
    KubeConfig(String),
    #[error("failed to bind the metrics listener on {addr}")]
    Bind {
        addr: std::net::SocketAddr,
        #[source]
        source: io::Error,
    },
}
