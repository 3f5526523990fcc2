// SPDX-License-Identifier: Apache-2.0
//! The pods file (`--pods-file`): any bytes are either a valid index or a
//! clear error, and a valid index answers lookups.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nettel_aggregator::transform::enrich_pod::{StaticPods, MAX_LABEL_LEN};

fuzz_target!(|data: &[u8]| {
    match StaticPods::parse(data) {
        Ok(pods) => {
            for addr in ["10.0.0.1", "::ffff:10.0.0.1", "fd00::1"] {
                if let Some(p) = pods.lookup(addr.parse().unwrap()) {
                    assert!(!p.name.is_empty() && p.name.len() <= MAX_LABEL_LEN);
                    assert!(p.namespace.len() <= MAX_LABEL_LEN && p.service.len() <= MAX_LABEL_LEN);
                }
            }
        }
        Err(e) => assert!(!e.is_empty()),
    }
});
