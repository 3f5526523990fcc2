// SPDX-License-Identifier: Apache-2.0
//! Errors of this crate: why a ring-buffer record could not be decoded.

/// A ring-buffer record that cannot be trusted. Each variant is counted by the
/// loader under its [`DecodeError::reason`] label.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Shorter than the common header, or than its kind's struct.
    #[error("record of {got} bytes is shorter than the {need} bytes its kind needs")]
    Short { got: usize, need: usize },
    /// Longer than its kind's struct, or than the header says.
    #[error("record of {got} bytes is longer than the {want} bytes its kind has")]
    Oversized { got: usize, want: usize },
    /// The header's `len` disagrees with the record's size.
    #[error("record header says {hdr} bytes but the record has {got}")]
    LengthMismatch { hdr: u32, got: usize },
    /// Written by probes of another ABI version.
    #[error("record has ABI version {got}, this loader understands {want}")]
    AbiVersion { got: u16, want: u16 },
    /// A kind this loader does not know.
    #[error("record has unknown kind {0}")]
    UnknownKind(u8),
    /// An address family other than AF_INET/AF_INET6.
    #[error("record has unknown address family {0}")]
    UnknownFamily(u8),
}

impl DecodeError {
    /// Stable, low-cardinality label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Short { .. } => "short",
            Self::Oversized { .. } => "oversized",
            Self::LengthMismatch { .. } => "length_mismatch",
            Self::AbiVersion { .. } => "abi_version",
            Self::UnknownKind(_) => "unknown_kind",
            Self::UnknownFamily(_) => "unknown_family",
        }
    }
}
