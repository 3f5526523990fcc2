// SPDX-License-Identifier: Apache-2.0
//! A ring-buffer record, as the kernel hands it to the loader: decoded (or
//! counted as undecodable) and encoded as its stream event, which must decode
//! to the reference conversion.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nettel_loader::{
    counters::Counters,
    source::{
        convert::to_proto,
        ringbuf::{ingest, Writer},
    },
};
use nettel_proto::v1;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let counters = Counters::default();
    let mut batch = Writer::default();
    let ok = ingest(data, &mut batch, &counters).is_ok();
    let errors = counters.decode_errors.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!((batch.len(), errors), if ok { (1, 0) } else { (0, 1) });
    // What goes on the wire decodes to the reference conversion of the record.
    let events = v1::StreamEventsResponse::decode(batch.take().bytes).expect("encoded event decodes").events;
    let expected: Vec<v1::Event> = nettel_bpf::decode(data).ok().iter().map(to_proto).collect();
    assert_eq!(events, expected);
});
