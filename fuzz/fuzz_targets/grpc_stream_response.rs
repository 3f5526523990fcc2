// SPDX-License-Identifier: Apache-2.0
//! The aggregator's side of the stream: bytes decoded as stream messages by
//! the aggregator's own decoder (`source::message`), checked against prost's
//! decoding of the same bytes (it must accept what prost accepts, and yield
//! what prost's events convert to), then through the tracker and the
//! aggregator exactly as `source::loader` does, with tight series limits so
//! the budget, overflow and expiry paths run too.
#![no_main]

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use libfuzzer_sys::fuzz_target;
use nettel_aggregator::{
    metrics::Metrics,
    sink::prometheus::{respond, Endpoint},
    source::{message::StreamMessage, tracker::Tracker},
    transform::{
        aggregate::Aggregator,
        enrich_pod::{Resolver, StaticPods},
        fold_port::PortFolder,
        limit_cardinality::SeriesLimits,
    },
};
use nettel_proto::v1;
use prost::Message;

const PODS: &[u8] =
    br#"{"pods":[{"name":"web-0","namespace":"shop","service":"web","ips":["10.0.0.2","fd00::2"]}]}"#;

fuzz_target!(|data: &[u8]| {
    let metrics = Arc::new(Metrics::default());
    let pods = Resolver::Static(Arc::new(StaticPods::parse(PODS).unwrap()));
    let limits = SeriesLimits { max_series: 10, max_per_metric: 4, ttl: Duration::from_secs(10) };
    let mut agg = Aggregator::new(Arc::clone(&metrics), pods, PortFolder::new(1024)).with_limits(limits);
    let mut tracker = Tracker::default();
    tracker.stream_started();
    let t0 = Instant::now();
    // Length-delimited messages, like gRPC frames; a bad one ends the stream.
    let mut buf = data;
    let mut i = 0u64;
    while !buf.is_empty() {
        let (mut a, mut b) = (buf, buf);
        let reference = v1::StreamEventsResponse::decode_length_delimited(&mut a).map(StreamMessage::from);
        let ours = StreamMessage::decode_length_delimited(&mut b);
        let msg = match (reference, ours) {
            (Ok(r), Ok(o)) => {
                assert_eq!(r, o, "decoded unlike prost");
                assert_eq!(a.len(), b.len(), "consumed unlike prost");
                buf = b;
                o
            }
            (Err(_), Err(_)) => break,
            // The one allowed difference: prost's nesting limit counts one
            // level more than ours (groups in unknown fields).
            (Err(e), Ok(_)) if e.to_string().contains("recursion limit") => break,
            (r, o) => panic!("prost {r:?}, ours {o:?}"),
        };
        if tracker.observe(&msg, &metrics).is_err() {
            break;
        }
        i += 1;
        agg.apply_batch(&msg.events, t0 + Duration::from_secs(i * 3));
        agg.expire(t0 + Duration::from_secs(i * 3));
        let (tcp, http) = agg.series();
        assert!(tcp <= 4 && http <= 4 && tcp + http <= 10, "series budget exceeded: {tcp} + {http}");
    }
    // Whatever came in, /metrics still encodes.
    let endpoint = Endpoint { registry: metrics.register(), metrics, require_kube_sync: false };
    let r = respond(&endpoint, &http::Method::GET, "/metrics", None);
    assert_eq!(r.status(), http::StatusCode::OK);
});
