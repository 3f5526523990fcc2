// SPDX-License-Identifier: Apache-2.0
//! The loader's side of the socket: request bytes decoded as the loader's two
//! request types (tonic's prost codec, within the loader's 16 KiB limit), then
//! the subscriber name made loggable.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nettel_loader::server::{subscriber_label, MAX_DECODE_BYTES};
use nettel_proto::v1;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    if data.len() > MAX_DECODE_BYTES {
        return;
    }
    if let Ok(req) = v1::StreamEventsRequest::decode(data) {
        let label = subscriber_label(&req.subscriber_name);
        assert!(label.chars().count() <= 64);
        assert!(!label.chars().any(char::is_control));
    }
    let _ = v1::GetLoaderStatusRequest::decode(data);
});
