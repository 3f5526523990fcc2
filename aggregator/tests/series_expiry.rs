// SPDX-License-Identifier: Apache-2.0
//! Series expiry: idle series leave /metrics and the handle caches, come back
//! from 0, and free their room in the budget.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use nettel_aggregator::{
    metrics::{MetricLabels, Metrics, RetransmitLabels},
    source::message::Event,
    transform::{
        aggregate::Aggregator,
        enrich_pod::{Resolver, StaticPods},
        fold_port::PortFolder,
        limit_cardinality::{SeriesLimits, OVERFLOW},
    },
};
use nettel_proto::v1;

const TCP: &str = "node_tcp_retransmits_total";

fn retransmit(port: u32) -> v1::Event {
    v1::Event {
        timestamp_boot_ns: 1,
        kind: Some(v1::event::Kind::TcpRetransmit(v1::TcpRetransmit {
            remote_addr: vec![10, 0, 0, 1].into(),
            remote_port: port,
            kind: v1::RetransmitKind::Data as i32,
            segments: 1,
            ..Default::default()
        })),
    }
}

fn encode(m: &Metrics) -> String {
    nettel_aggregator::sink::text_format::encode(
        &m.register(),
        m,
        nettel_aggregator::sink::text_format::Format::OpenMetrics,
    )
    .unwrap()
}

#[test]
fn idle_series_expire_from_metrics_and_from_the_handle_cache() {
    let m = Arc::new(Metrics::default());
    let pods = Resolver::Static(Arc::new(StaticPods::default()));
    let limits = SeriesLimits { max_series: 100, max_per_metric: 4, ttl: Duration::from_secs(60) };
    let mut agg = Aggregator::new(Arc::clone(&m), pods, PortFolder::new(32768)).with_limits(limits);
    let t0 = Instant::now();
    let at = |s| t0 + Duration::from_secs(s);
    let count = |port: &str| {
        m.tcp_retransmits
            .0
            .get(&RetransmitLabels {
                pod: String::new(),
                namespace: String::new(),
                service: String::new(),
                dest_port: port.into(),
                kind: "data".into(),
            })
            .map(|c| c.value.get())
    };

    // Ports 80 to 82 are admitted; 83 overflows (cap 4 = 3 + overflow).
    let ports = |ps: &[u32]| ps.iter().map(|&p| Event::from(&retransmit(p))).collect::<Vec<_>>();
    agg.apply_batch(&ports(&[80, 81, 82, 82, 83]), at(0));
    assert_eq!((count("80"), count("82"), count("83")), (Some(1), Some(2), None));
    agg.apply_batch(&ports(&[80]), at(50));
    assert_eq!(agg.expire(at(59)), 0, "nothing idle for 60 s yet");

    // At 70 s, ports 81, 82 and the overflow series have been idle for 70 s; 80 for 20 s.
    assert_eq!(agg.expire(at(70)), 3);
    assert_eq!((count("80"), count("81"), count("82")), (Some(2), None, None));
    let text = encode(&m);
    assert!(!text.contains(r#"dest_port="82""#) && !text.contains(&format!(r#"pod="{OVERFLOW}""#)), "{text}");
    assert_eq!(m.series_expired.get_or_create(&MetricLabels { metric: TCP.into() }).get(), 3);
    assert_eq!(m.series.get_or_create(&MetricLabels { metric: TCP.into() }).get(), 1);

    // Port 82 comes back from 0 (a counter reset) into a new, served series,
    // not into the detached cached handle; port 83 now gets room too.
    agg.apply_batch(&ports(&[82, 83]), at(80));
    assert_eq!((count("82"), count("83")), (Some(1), Some(1)));
    assert_eq!(m.series.get_or_create(&MetricLabels { metric: TCP.into() }).get(), 3, "no overflow series");
    assert_eq!(
        m.series_overflow_events.get_or_create(&MetricLabels { metric: TCP.into() }).get(),
        1,
        "only the first event of 83"
    );

    // Everything idle: everything goes, and /metrics has no product series left.
    assert_eq!(agg.expire(at(1000)), 3);
    assert!(!encode(&m).contains("node_tcp_retransmits_total{"));
}
