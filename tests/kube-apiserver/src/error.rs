// SPDX-License-Identifier: Apache-2.0
//! Error type of the test API server.

use std::io;

/// Errors returned by [`crate::TestApiServer`] setup and store mutations.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Generating the self-signed certificates failed.
    #[error("certificate generation failed: {0}")]
    Certificate(#[from] rcgen::Error),
    /// Building the rustls server configuration failed.
    #[error("TLS configuration failed: {0}")]
    Tls(#[from] rustls::Error),
    /// Binding the listener or writing a file failed.
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
    /// The object's `apiVersion`/`kind` is not one the server stores.
    #[error("unsupported kind {0:?}")]
    UnsupportedKind(String),
    /// The object lacks a required field such as `metadata.name`.
    #[error("invalid object: {0}")]
    Invalid(String),
    /// `create` of an object whose namespace/name already exists.
    #[error("{kind} {namespace}/{name} already exists")]
    AlreadyExists {
        /// Kind of the object.
        kind: &'static str,
        /// Namespace of the object.
        namespace: String,
        /// Name of the object.
        name: String,
    },
    /// `update` or `delete` of an object that does not exist.
    #[error("{kind} {namespace}/{name} not found")]
    NotFound {
        /// Kind of the object.
        kind: &'static str,
        /// Namespace of the object.
        namespace: String,
        /// Name of the object.
        name: String,
    },
    /// Building the kube client from the generated kubeconfig failed.
    #[error("kube client setup failed: {0}")]
    Kube(String),
}
