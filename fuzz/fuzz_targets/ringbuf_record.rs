// SPDX-License-Identifier: Apache-2.0
//! A ring-buffer record, as the kernel hands it to the loader: decoded (or
//! counted as undecodable) and converted to its proto event.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nettel_loader::{
    counters::Counters,
    source::ringbuf::{ingest, Arena},
};

fuzz_target!(|data: &[u8]| {
    let counters = Counters::default();
    let mut batch = Vec::new();
    let ok = ingest(data, &mut batch, &mut Arena::default(), &counters).is_ok();
    let errors = counters.decode_errors.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!((batch.len(), errors), if ok { (1, 0) } else { (0, 1) });
});
