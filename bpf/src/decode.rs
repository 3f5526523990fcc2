// SPDX-License-Identifier: Apache-2.0
//! Checked decoding of ring-buffer records: length and ABI version are verified
//! before any field is read, and records are copied out with unaligned reads.

use std::mem::size_of;

use crate::{abi, DecodeError};

/// `AF_INET` as written by the probes.
pub const AF_INET: u8 = 2;
/// `AF_INET6` as written by the probes.
pub const AF_INET6: u8 = 10;

/// One decoded ring-buffer record.
#[derive(Debug, Clone, Copy)]
pub enum Record {
    /// `NT_EVENT_TCP_RETRANSMIT`.
    TcpRetransmit(abi::nt_tcp_retransmit_event),
    /// `NT_EVENT_SYNTHETIC` (benchmark probe).
    Synthetic(abi::nt_synthetic_event),
    /// `NT_EVENT_HTTP`.
    Http(abi::nt_http_event),
}

/// Decodes one ring-buffer record.
pub fn decode(buf: &[u8]) -> Result<Record, DecodeError> {
    let hdr: abi::nt_event_hdr = read_pod(buf)?;
    if hdr.abi_version != abi::NT_ABI_VERSION as u16 {
        return Err(DecodeError::AbiVersion { got: hdr.abi_version, want: abi::NT_ABI_VERSION as u16 });
    }
    if hdr.len as usize != buf.len() {
        return Err(DecodeError::LengthMismatch { hdr: hdr.len, got: buf.len() });
    }
    match u32::from(hdr.kind) {
        abi::NT_EVENT_TCP_RETRANSMIT => {
            let ev: abi::nt_tcp_retransmit_event = read_exact(buf)?;
            match ev.family {
                AF_INET | AF_INET6 => Ok(Record::TcpRetransmit(ev)),
                other => Err(DecodeError::UnknownFamily(other)),
            }
        }
        abi::NT_EVENT_SYNTHETIC => Ok(Record::Synthetic(read_exact(buf)?)),
        abi::NT_EVENT_HTTP => {
            let ev: abi::nt_http_event = read_exact(buf)?;
            match ev.family {
                AF_INET | AF_INET6 => Ok(Record::Http(ev)),
                other => Err(DecodeError::UnknownFamily(other)),
            }
        }
        _ => Err(DecodeError::UnknownKind(hdr.kind)),
    }
}

/// Reads a `T` from a record that must be exactly `size_of::<T>()` bytes.
fn read_exact<T: aya::Pod>(buf: &[u8]) -> Result<T, DecodeError> {
    if buf.len() > size_of::<T>() {
        return Err(DecodeError::Oversized { got: buf.len(), want: size_of::<T>() });
    }
    read_pod(buf)
}

/// Reads a `T` from the start of `buf`.
fn read_pod<T: aya::Pod>(buf: &[u8]) -> Result<T, DecodeError> {
    if buf.len() < size_of::<T>() {
        return Err(DecodeError::Short { got: buf.len(), need: size_of::<T>() });
    }
    // SAFETY: (1) the length check above guarantees `size_of::<T>()` readable
    // bytes; (2) `T: Pod` means any bit pattern is a valid `T`; (3)
    // `read_unaligned` tolerates the arbitrary alignment of a ring-buffer slice.
    Ok(unsafe { buf.as_ptr().cast::<T>().read_unaligned() })
}
