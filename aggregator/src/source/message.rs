// SPDX-License-Identifier: Apache-2.0
//! The event stream's messages as the aggregator decodes them.
//!
//! A [`StreamMessage`] is a `StreamEventsResponse` whose events are decoded
//! into [`Event`]s: only the fields the aggregator counts, addresses and trace
//! ids held inline. prost's `v1::Event` holds each `bytes` field as a `Bytes`
//! slice of the message (two reference counts per address) and is four times
//! the size; decoding into it was half of the aggregator's CPU at 1 M
//! retransmit events/s (`perf record`).
//!
//! The decoding follows prost's generated code step for step, with prost's own
//! primitives (`decode_key`, `merge_loop`, `skip_field`, the varint decoder;
//! short varints and keys read inline, anything else theirs):
//! wire-type checks, unknown fields skipped, the last value of a repeated
//! scalar kept, a repeated `kind` merged into the same variant or replacing
//! another. The one difference is prost's nesting limit, which counts one
//! level less here (it only bounds groups in unknown fields). The fuzz target
//! `grpc_stream_response` decodes every input both ways and compares.

use std::net::IpAddr;

use nettel_proto::v1;
use prost::{
    bytes::{Buf, BufMut},
    encoding::{check_wire_type, decode_key, decode_varint, merge_loop, skip_field, DecodeContext, WireType},
    DecodeError, Message,
};

use crate::transform::enrich_pod::addr_from_bytes;

/// `StreamEventsResponse.events`.
const EVENTS: u32 = 4;

/// A stream message: every field but the events in `head`, the events decoded.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StreamMessage {
    /// The message's other fields (`head.events` stays empty).
    pub head: v1::StreamEventsResponse,
    pub events: Vec<Event>,
}

/// An event: what the aggregator reads of a `v1::Event`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Event {
    pub kind: Kind,
}

/// `Event.kind`.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Kind {
    /// No kind, or one this aggregator does not know (a newer loader's).
    #[default]
    None,
    TcpRetransmit(Retransmit),
    HttpRequest(Http),
    Synthetic,
}

/// What the aggregator reads of a `v1::TcpRetransmit`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Retransmit {
    pub remote_addr: Field,
    pub remote_port: u32,
    /// `v1::RetransmitKind`.
    pub kind: i32,
    pub error: i32,
    pub segments: u32,
}

/// What the aggregator reads of a `v1::HttpRequest`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Http {
    pub local_addr: Field,
    /// `v1::HttpMethod`.
    pub method: i32,
    pub status: u32,
    pub duration_ns: u64,
    pub cgroup_id: u64,
    pub trace_id: Field,
    pub tls: bool,
    pub exemplar_only: bool,
}

/// A `bytes` field of up to 16 bytes held inline; a longer one (never valid
/// here) keeps only its length.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Field {
    len: usize,
    bytes: [u8; 16],
}

impl Field {
    /// The bytes, or `None` when there were more than 16.
    pub fn get(&self) -> Option<&[u8]> {
        self.bytes.get(..self.len)
    }

    /// An address (4 or 16 bytes).
    pub fn addr(&self) -> Option<IpAddr> {
        self.get().and_then(addr_from_bytes)
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn set(&mut self, b: &[u8]) {
        *self = Self { len: b.len(), bytes: [0; 16] };
        if let Some(head) = self.bytes.get_mut(..b.len()) {
            head.copy_from_slice(b);
        }
    }
}

impl From<&[u8]> for Field {
    fn from(b: &[u8]) -> Self {
        let mut f = Self::default();
        f.set(b);
        f
    }
}

impl From<&v1::Event> for Event {
    fn from(ev: &v1::Event) -> Self {
        let kind = match &ev.kind {
            None => Kind::None,
            Some(v1::event::Kind::Synthetic(_)) => Kind::Synthetic,
            Some(v1::event::Kind::TcpRetransmit(t)) => Kind::TcpRetransmit(Retransmit {
                remote_addr: Field::from(&t.remote_addr[..]),
                remote_port: t.remote_port,
                kind: t.kind,
                error: t.error,
                segments: t.segments,
            }),
            Some(v1::event::Kind::HttpRequest(h)) => Kind::HttpRequest(Http {
                local_addr: Field::from(&h.local_addr[..]),
                method: h.method,
                status: h.status,
                duration_ns: h.duration_ns,
                cgroup_id: h.cgroup_id,
                trace_id: Field::from(&h.trace_id[..]),
                tls: h.tls,
                exemplar_only: h.exemplar_only,
            }),
        };
        Self { kind }
    }
}

impl From<v1::StreamEventsResponse> for StreamMessage {
    fn from(mut head: v1::StreamEventsResponse) -> Self {
        let events = std::mem::take(&mut head.events).iter().map(Event::from).collect();
        Self { head, events }
    }
}

impl Message for StreamMessage {
    /// Encodes the message the events came from, less the fields the
    /// aggregator does not read (only tests encode one).
    fn encode_raw(&self, buf: &mut impl BufMut) {
        let mut head = self.head.clone();
        head.events = self.events.iter().map(Event::to_proto).collect();
        head.encode_raw(buf);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        if tag != EVENTS {
            return self.head.merge_field(tag, wire_type, buf, ctx);
        }
        check_wire_type(WireType::LengthDelimited, wire_type)?;
        let mut event = Event::default();
        if buf.chunk().len() == buf.remaining() {
            // The codec's case: the message is one slice.
            let mut slice = buf.chunk();
            let before = slice.len();
            merge_loop(&mut event, &mut slice, ctx, merge_event)?;
            buf.advance(before - slice.len());
        } else {
            let mut ev = v1::Event::default();
            prost::encoding::message::merge(wire_type, &mut ev, buf, ctx)?;
            event = Event::from(&ev);
        }
        self.events.push(event);
        Ok(())
    }

    fn encoded_len(&self) -> usize {
        let mut head = self.head.clone();
        head.events = self.events.iter().map(Event::to_proto).collect();
        head.encoded_len()
    }

    fn clear(&mut self) {
        self.head.clear();
        self.events.clear();
    }
}

impl Event {
    /// The `v1::Event` with these fields (the others at their defaults).
    pub fn to_proto(&self) -> v1::Event {
        // A field over 16 bytes as as many zeros: invalid all the same.
        let bytes = |f: &Field| f.get().map_or_else(|| vec![0; f.len], <[u8]>::to_vec).into();
        let kind = match &self.kind {
            Kind::None => None,
            Kind::Synthetic => Some(v1::event::Kind::Synthetic(v1::Synthetic::default())),
            Kind::TcpRetransmit(t) => Some(v1::event::Kind::TcpRetransmit(v1::TcpRetransmit {
                remote_addr: bytes(&t.remote_addr),
                remote_port: t.remote_port,
                kind: t.kind,
                error: t.error,
                segments: t.segments,
                ..Default::default()
            })),
            Kind::HttpRequest(h) => Some(v1::event::Kind::HttpRequest(v1::HttpRequest {
                local_addr: bytes(&h.local_addr),
                method: h.method,
                status: h.status,
                duration_ns: h.duration_ns,
                cgroup_id: h.cgroup_id,
                trace_id: bytes(&h.trace_id),
                tls: h.tls,
                exemplar_only: h.exemplar_only,
                ..Default::default()
            })),
        };
        v1::Event { timestamp_boot_ns: 0, kind }
    }
}

/// A `bytes` field: its length and its bytes. A length past the end (or an
/// undecodable one) is `skip_field`'s error, as prost's `bytes::merge` gives.
fn bytes_field(
    field: &mut Field,
    tag: u32,
    wt: WireType,
    buf: &mut &[u8],
    ctx: DecodeContext,
) -> Result<(), DecodeError> {
    check_wire_type(WireType::LengthDelimited, wt)?;
    let mut rest = *buf;
    if let Ok(len) = fast_varint(&mut rest) {
        if let Some((bytes, after)) = usize::try_from(len).ok().and_then(|n| rest.split_at_checked(n)) {
            field.set(bytes);
            *buf = after;
            return Ok(());
        }
    }
    skip_field(wt, tag, buf, ctx)
}

fn varint(wt: WireType, buf: &mut &[u8]) -> Result<u64, DecodeError> {
    check_wire_type(WireType::Varint, wt)?;
    fast_varint(buf)
}

/// prost's `decode_varint`, with values of up to nine bytes (63 bits, which
/// cannot overflow: every port, kind, length and timestamp of the stream)
/// read inline: prost's call per number was a fifth of the aggregator's CPU.
/// A longer one, or an error, is prost's.
#[inline(always)]
fn fast_varint(buf: &mut &[u8]) -> Result<u64, DecodeError> {
    let mut value = 0u64;
    for (i, &byte) in buf.iter().take(9).enumerate() {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte < 0x80 {
            *buf = &buf[i + 1..];
            return Ok(value);
        }
    }
    decode_varint(buf)
}

/// prost's `decode_key`, with a one-byte key (fields 1 to 15) read inline.
#[inline(always)]
fn fast_key(buf: &mut &[u8]) -> Result<(u32, WireType), DecodeError> {
    if let [key, ref rest @ ..] = **buf {
        if let (0x08..=0x7f, Ok(wt)) = (key, WireType::try_from(u64::from(key & 7))) {
            *buf = rest;
            return Ok((u32::from(key >> 3), wt));
        }
    }
    decode_key(buf)
}

fn merge_event(event: &mut Event, buf: &mut &[u8], ctx: DecodeContext) -> Result<(), DecodeError> {
    let (tag, wt) = fast_key(buf)?;
    match tag {
        // timestamp_boot_ns: checked, not kept.
        1 => varint(wt, buf).map(drop),
        10 => {
            check_wire_type(WireType::LengthDelimited, wt)?;
            let mut t = match std::mem::take(&mut event.kind) {
                Kind::TcpRetransmit(t) => t,
                _ => Retransmit::default(),
            };
            let r = merge_loop(&mut t, buf, ctx, merge_retransmit);
            event.kind = Kind::TcpRetransmit(t);
            r
        }
        11 => {
            check_wire_type(WireType::LengthDelimited, wt)?;
            // Synthetic { sequence = 1 }: only its fields' encoding is checked.
            merge_loop(&mut (), buf, ctx, |(), buf, ctx| {
                let (tag, wt) = fast_key(buf)?;
                match tag {
                    1 => varint(wt, buf).map(drop),
                    _ => skip_field(wt, tag, buf, ctx),
                }
            })?;
            event.kind = Kind::Synthetic;
            Ok(())
        }
        12 => {
            check_wire_type(WireType::LengthDelimited, wt)?;
            let mut h = match std::mem::take(&mut event.kind) {
                Kind::HttpRequest(h) => h,
                _ => Http::default(),
            };
            let r = merge_loop(&mut h, buf, ctx, merge_http);
            event.kind = Kind::HttpRequest(h);
            r
        }
        _ => skip_field(wt, tag, buf, ctx),
    }
}

fn merge_retransmit(t: &mut Retransmit, buf: &mut &[u8], ctx: DecodeContext) -> Result<(), DecodeError> {
    let (tag, wt) = fast_key(buf)?;
    match tag {
        // local_addr
        1 => bytes_field(&mut Field::default(), tag, wt, buf, ctx),
        2 => bytes_field(&mut t.remote_addr, tag, wt, buf, ctx),
        // local_port
        3 => varint(wt, buf).map(drop),
        4 => varint(wt, buf).map(|v| t.remote_port = v as u32),
        5 => varint(wt, buf).map(|v| t.kind = v as i32),
        // tcp_state
        6 => varint(wt, buf).map(drop),
        // sint32: zigzag
        7 => varint(wt, buf).map(|v| t.error = ((v as u32 >> 1) as i32) ^ -((v & 1) as i32)),
        // netns_cookie
        8 => varint(wt, buf).map(drop),
        9 => varint(wt, buf).map(|v| t.segments = v as u32),
        _ => skip_field(wt, tag, buf, ctx),
    }
}

fn merge_http(h: &mut Http, buf: &mut &[u8], ctx: DecodeContext) -> Result<(), DecodeError> {
    let (tag, wt) = fast_key(buf)?;
    match tag {
        1 => bytes_field(&mut h.local_addr, tag, wt, buf, ctx),
        // remote_addr
        2 => bytes_field(&mut Field::default(), tag, wt, buf, ctx),
        // local_port, remote_port
        3 | 4 => varint(wt, buf).map(drop),
        5 => varint(wt, buf).map(|v| h.method = v as i32),
        6 => varint(wt, buf).map(|v| h.status = v as u32),
        7 => varint(wt, buf).map(|v| h.duration_ns = v),
        8 => varint(wt, buf).map(|v| h.cgroup_id = v),
        9 => bytes_field(&mut h.trace_id, tag, wt, buf, ctx),
        10 => varint(wt, buf).map(|v| h.tls = v != 0),
        11 => varint(wt, buf).map(|v| h.exemplar_only = v != 0),
        _ => skip_field(wt, tag, buf, ctx),
    }
}

#[cfg(test)]
mod tests;
