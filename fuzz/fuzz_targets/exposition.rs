// SPDX-License-Identifier: Apache-2.0
//! The exposition formats with hostile label values (a pods file may name a
//! service anything without control characters): the Prometheus text derived
//! from OpenMetrics must keep every sample line whole, whatever the value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nettel_aggregator::{
    metrics::{Metrics, RetransmitLabels},
    sink::text_format::openmetrics_to_prometheus,
};

fuzz_target!(|data: &[u8]| {
    let Ok(value) = std::str::from_utf8(data) else { return };
    let m = Metrics::default();
    let labels = RetransmitLabels {
        pod: value.into(),
        namespace: "ns".into(),
        service: value.into(),
        dest_port: "80".into(),
        kind: "data".into(),
    };
    m.tcp_retransmits.get_or_create(&labels).inc_by(7);
    let mut om = String::new();
    prometheus_client::encoding::text::encode(&mut om, &m.register()).unwrap();
    let sample = om.lines().find(|l| l.starts_with("node_tcp_retransmits_total{")).unwrap().to_owned();
    let text = openmetrics_to_prometheus(&om);
    assert!(text.lines().any(|l| l == sample), "sample line changed: {sample:?}\n{text}");
});
