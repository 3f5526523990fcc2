// SPDX-License-Identifier: Apache-2.0
//! Hand-written HTTP/2 over a plain Unix stream, for sending the loader what a
//! real client would not: a preface and nothing more, oversized frames, or
//! requests followed by never reading. Just enough framing (RFC 9113 §4) and
//! HPACK (literal fields, no Huffman, RFC 7541 §6.2.2) to reach the gRPC
//! service.

use std::{
    io::{ErrorKind, Read, Write},
    os::unix::net::UnixStream,
    path::Path,
    time::Duration,
};

use nettel_proto::v1;
use prost::Message;

/// The client connection preface.
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Frame types used here.
pub const DATA: u8 = 0x0;
pub const HEADERS: u8 = 0x1;
pub const SETTINGS: u8 = 0x4;
pub const GOAWAY: u8 = 0x7;
/// Flags.
pub const END_STREAM: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;
/// The GOAWAY error code for a frame over the peer's SETTINGS_MAX_FRAME_SIZE.
pub const FRAME_SIZE_ERROR: u32 = 0x6;

/// A frame: 24-bit length, type, flags, stream id, payload.
pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap();
    assert!(len < 1 << 24);
    let mut f = len.to_be_bytes()[1..].to_vec();
    f.extend_from_slice(&[kind, flags]);
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// Only the header of a frame announcing `len` payload bytes (none follow).
pub fn frame_header(kind: u8, stream: u32, len: u32) -> Vec<u8> {
    let mut f = len.to_be_bytes()[1..].to_vec();
    f.extend_from_slice(&[kind, 0]);
    f.extend_from_slice(&stream.to_be_bytes());
    f
}

/// The preface and an empty SETTINGS frame: a complete client handshake.
pub fn handshake() -> Vec<u8> {
    let mut b = PREFACE.to_vec();
    b.extend(frame(SETTINGS, 0, 0, &[]));
    b
}

/// A HEADERS frame opening a gRPC call of `method` on `stream`.
pub fn request_headers(stream: u32, method: &str) -> Vec<u8> {
    let path = format!("/nettel.telemetry.v1.TelemetryService/{method}");
    let mut block = Vec::new();
    for (name, value) in [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", path.as_str()),
        (":authority", "loader.invalid"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ] {
        // Literal header field without indexing, new name; lengths < 127.
        block.push(0x00);
        for s in [name, value] {
            block.push(u8::try_from(s.len()).ok().filter(|&l| l < 127).unwrap());
            block.extend_from_slice(s.as_bytes());
        }
    }
    frame(HEADERS, END_HEADERS, stream, &block)
}

/// A DATA frame carrying one gRPC message and ending the request.
pub fn grpc_message(stream: u32, message: &[u8]) -> Vec<u8> {
    let mut payload = vec![0];
    payload.extend_from_slice(&u32::try_from(message.len()).unwrap().to_be_bytes());
    payload.extend_from_slice(message);
    frame(DATA, END_STREAM, stream, &payload)
}

/// A complete `StreamEvents` request on `stream`.
pub fn stream_events(stream: u32, subscriber_name: &str) -> Vec<u8> {
    let mut b = request_headers(stream, "StreamEvents");
    let req = v1::StreamEventsRequest { subscriber_name: subscriber_name.into() };
    b.extend(grpc_message(stream, &req.encode_to_vec()));
    b
}

/// Connects to `socket` and writes `bytes`.
pub fn connect_and_send(socket: &Path, bytes: &[u8]) -> UnixStream {
    let mut s = UnixStream::connect(socket).expect("connect to the loader socket");
    s.write_all(bytes).expect("write");
    s
}

/// Reads until the loader closes the connection (EOF; or ECONNRESET, which a
/// close with our bytes unread becomes, after the data it sent); returns what
/// it sent. Panics if it is still open after `timeout`.
pub fn read_until_closed(s: &mut UnixStream, timeout: Duration) -> Vec<u8> {
    s.set_read_timeout(Some(timeout)).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return out,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!("the loader kept the connection open for {timeout:?}")
            }
            Err(e) => panic!("read: {e}"),
        }
    }
}

/// Whether the loader has closed `s`, without blocking; what it sent before
/// (its SETTINGS, if it admitted the connection) is read and discarded.
pub fn is_closed(s: &UnixStream) -> bool {
    s.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match (&*s).read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return true,
            Err(e) => panic!("read: {e}"),
        }
    }
}

/// The frames in `bytes` as (type, flags, stream, payload); a trailing partial
/// frame is ignored.
pub fn frames(mut bytes: &[u8]) -> Vec<(u8, u8, u32, Vec<u8>)> {
    let mut out = Vec::new();
    while bytes.len() >= 9 {
        let len = u32::from_be_bytes([0, bytes[0], bytes[1], bytes[2]]) as usize;
        let Some(payload) = bytes.get(9..9 + len) else { break };
        let stream = u32::from_be_bytes(bytes[5..9].try_into().unwrap()) & 0x7fff_ffff;
        out.push((bytes[3], bytes[4], stream, payload.to_vec()));
        bytes = &bytes[9 + len..];
    }
    out
}

/// The error code of the first GOAWAY frame in `bytes`.
pub fn goaway_code(bytes: &[u8]) -> Option<u32> {
    frames(bytes)
        .into_iter()
        .find(|f| f.0 == GOAWAY)
        .and_then(|f| Some(u32::from_be_bytes(f.3.get(4..8)?.try_into().ok()?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_goaway_codes_are_read() {
        let mut bytes = frame(SETTINGS, 0, 0, &[]);
        bytes.extend(stream_events(3, "n"));
        bytes.extend(frame(GOAWAY, 0, 0, &[0, 0, 0, 3, 0, 0, 0, 6]));
        bytes.extend(frame_header(DATA, 1, 1 << 20));
        let f = frames(&bytes);
        let kinds: Vec<(u8, u8, u32)> = f.iter().map(|(k, fl, s, _)| (*k, *fl, *s)).collect();
        assert_eq!(
            kinds,
            [(SETTINGS, 0, 0), (HEADERS, END_HEADERS, 3), (DATA, END_STREAM, 3), (GOAWAY, 0, 0)]
        );
        // gRPC framing: uncompressed, 3-byte message (field 1, length 1, "n").
        assert_eq!(f[2].3, [0, 0, 0, 0, 3, 0x0a, 1, b'n']);
        assert_eq!(goaway_code(&bytes), Some(FRAME_SIZE_ERROR));
        assert_eq!(goaway_code(&frame(SETTINGS, 0, 0, &[])), None);
    }
}
