// SPDX-License-Identifier: Apache-2.0
//! The gRPC codec of the generated client and server: prost's, except that a
//! message is decoded from one contiguous [`Bytes`](prost::bytes::Bytes).
//!
//! tonic hands the decoder a `DecodeBuf` over its receive buffer. Decoding
//! through it, prost advances the buffer after every field and varint, a call
//! into `BytesMut` each time; on the aggregator's event stream that
//! bookkeeping was 8% of its CPU (`perf record` at 250k events/s). A received
//! message is one contiguous chunk of that buffer, so [`decode`] splits it
//! off as `Bytes` (a reference count, no copy) and parses that, where
//! advancing is a pointer bump; the messages' `bytes` fields (`build.rs`
//! generates them as `Bytes`) are then slices of it, where prost's `Vec<u8>`
//! took two allocations each. A message in several chunks is decoded through
//! the buffer as before.
//!
//! Encoding is the mirror image: tonic's `EncodeBuf` writes each byte of a
//! varint through `BytesMut::extend_from_slice`. [`ScratchEncoder`] encodes
//! into a `Vec` it keeps between messages, where a byte is a push, and copies
//! the message into the `EncodeBuf` once.

use std::marker::PhantomData;

use prost::{
    bytes::{Buf, BufMut},
    Message,
};
use tonic::{
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
    Status,
};

/// A scratch buffer that grew past this is freed after its message, so one
/// large message does not pin its size for the stream's life.
const SCRATCH_KEEP_BYTES: usize = 1 << 20;

/// prost encoding and decoding, decoding from one slice when it can.
#[derive(Debug, Clone, Copy)]
pub struct SliceCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for SliceCodec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<T, U> Codec for SliceCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ScratchEncoder<T>;
    type Decoder = SliceDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ScratchEncoder { scratch: Vec::new(), _pd: PhantomData }
    }

    fn decoder(&mut self) -> Self::Decoder {
        SliceDecoder(PhantomData)
    }
}

/// The encoder of [`SliceCodec`]: one per stream.
#[derive(Debug)]
pub struct ScratchEncoder<T> {
    scratch: Vec<u8>,
    _pd: PhantomData<T>,
}

impl<T: Message> Encoder for ScratchEncoder<T> {
    type Item = T;
    type Error = Status;

    fn encode(&mut self, item: T, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        encode(&item, &mut self.scratch, buf);
        Ok(())
    }
}

/// Encodes `item` into `scratch` (cleared first) and appends it to `out`.
pub fn encode<T: Message, B: BufMut>(item: &T, scratch: &mut Vec<u8>, out: &mut B) {
    scratch.clear();
    // A Vec grows as needed, so encoding into it cannot run out of space.
    item.encode(scratch).expect("a Vec has room for any message");
    out.put_slice(scratch);
    if scratch.capacity() > SCRATCH_KEEP_BYTES {
        *scratch = Vec::new();
    }
}

/// The decoder of [`SliceCodec`].
#[derive(Debug, Clone, Copy)]
pub struct SliceDecoder<U>(PhantomData<U>);

impl<U: Message + Default> Decoder for SliceDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        // Parse errors are INTERNAL, as in tonic-prost and the gRPC status
        // code guide.
        decode(buf).map(Some).map_err(|e| Status::internal(e.to_string()))
    }
}

/// Decodes one message that is all of `buf`'s remaining bytes, and consumes
/// them. A contiguous message is taken out of `buf` as `Bytes` first (no
/// copy from tonic's receive buffer, one from a plain slice), so that its
/// `bytes` fields are slices of it rather than allocations of their own.
pub fn decode<U: Message + Default, B: Buf>(buf: &mut B) -> Result<U, prost::DecodeError> {
    let len = buf.remaining();
    if buf.chunk().len() == len {
        U::decode(buf.copy_to_bytes(len))
    } else {
        U::decode(buf)
    }
}

#[cfg(test)]
mod tests {
    use prost::bytes::{Buf, Bytes};

    use super::{decode, encode};
    use crate::v1;

    fn batch() -> v1::StreamEventsResponse {
        v1::StreamEventsResponse {
            first_event_sequence: 7,
            events: vec![v1::Event { timestamp_boot_ns: 1234, ..Default::default() }; 3],
            ..Default::default()
        }
    }

    #[test]
    fn a_contiguous_and_a_chunked_message_decode_alike_and_are_consumed() {
        let bytes = prost::Message::encode_to_vec(&batch());
        let mut whole = Bytes::from(bytes.clone());
        assert_eq!(decode::<v1::StreamEventsResponse, _>(&mut whole).unwrap(), batch());
        assert_eq!(whole.remaining(), 0);

        let (a, b) = bytes.split_at(bytes.len() / 2);
        let mut chunked = Bytes::copy_from_slice(a).chain(Bytes::copy_from_slice(b));
        assert!(chunked.chunk().len() < chunked.remaining(), "two chunks");
        assert_eq!(decode::<v1::StreamEventsResponse, _>(&mut chunked).unwrap(), batch());
        assert_eq!(chunked.remaining(), 0);
    }

    #[test]
    fn a_contiguous_messages_addresses_are_slices_of_it() {
        let rtx = v1::TcpRetransmit {
            local_addr: Bytes::from_static(&[10, 0, 0, 1]),
            remote_addr: Bytes::from_static(&[10, 0, 0, 2]),
            ..Default::default()
        };
        let msg = v1::StreamEventsResponse {
            events: vec![v1::Event { kind: Some(v1::event::Kind::TcpRetransmit(rtx)), ..Default::default() }],
            ..Default::default()
        };
        let mut whole = Bytes::from(prost::Message::encode_to_vec(&msg));
        let range = whole.as_ptr_range();
        let got: v1::StreamEventsResponse = decode(&mut whole).unwrap();
        assert_eq!(got, msg);
        let Some(v1::event::Kind::TcpRetransmit(t)) = &got.events[0].kind else { panic!("{got:?}") };
        for a in [&t.local_addr, &t.remote_addr] {
            assert!(range.contains(&a.as_ptr()), "{a:?} was copied out of the message");
        }
    }

    #[test]
    fn encoding_through_the_scratch_buffer_is_prosts_encoding_and_a_big_one_is_freed() {
        let mut scratch = Vec::new();
        let mut out = Vec::new();
        encode(&batch(), &mut scratch, &mut out);
        encode(&batch(), &mut scratch, &mut out);
        let one = prost::Message::encode_to_vec(&batch());
        assert_eq!(out, [one.clone(), one].concat(), "appended, scratch cleared between");
        assert!(scratch.capacity() > 0, "a small scratch buffer is kept");

        let big = v1::StreamEventsResponse {
            events: vec![v1::Event { timestamp_boot_ns: u64::MAX, ..Default::default() }; 100_000],
            ..Default::default()
        };
        let mut out = Vec::new();
        encode(&big, &mut scratch, &mut out);
        assert_eq!(out, prost::Message::encode_to_vec(&big));
        assert_eq!(scratch.capacity(), 0, "a scratch buffer over 1 MiB is freed");
    }

    #[test]
    fn a_truncated_message_is_an_error_both_ways() {
        let bytes = prost::Message::encode_to_vec(&batch());
        let cut = &bytes[..bytes.len() - 1];
        assert!(decode::<v1::StreamEventsResponse, _>(&mut Bytes::copy_from_slice(cut)).is_err());
        let (a, b) = cut.split_at(4);
        let mut chunked = Bytes::copy_from_slice(a).chain(Bytes::copy_from_slice(b));
        assert!(decode::<v1::StreamEventsResponse, _>(&mut chunked).is_err());
    }
}
