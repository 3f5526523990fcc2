// SPDX-License-Identifier: Apache-2.0
//! `/metrics` at high series counts: encode time and the memory the series
//! take, in process (the aggregator's own types; no kernel needed).
//!
//! For each series count N it builds the aggregator's state the way events
//! build it in production: a pods file of `--pods` pods (10,000, the memory
//! target's cluster), then TCP retransmit events to N distinct (pod, port)
//! destinations, so `node_tcp_retransmits_total` holds N series (the series
//! budget raised to fit them). Then it answers `/metrics` through the same
//! handler the HTTP server calls, `--scrapes` times per format (Prometheus
//! text, and OpenMetrics as Prometheus asks for it by default), taking the
//! streamed body chunk by chunk as hyper would, and reports the median and
//! p99 time per scrape until the last chunk, the body size, and the process's
//! VmRSS with the pods indexed, with the series, and after the scrapes.
//!
//! ```text
//! target/release/nettel-scrape-bench [--series 10000,100000] [--pods 10000] [--scrapes 30]
//! ```

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use http::Method;
use nettel_aggregator::{
    metrics::Metrics,
    sink::{prometheus::Endpoint, text_format::OPENMETRICS_CONTENT_TYPE},
    source::message::Event,
    transform::{
        aggregate::Aggregator,
        enrich_pod::{Resolver, StaticPods},
        fold_port::PortFolder,
        limit_cardinality::SeriesLimits,
    },
};
use nettel_integration::{flag, flag_or};
use nettel_proto::v1;

fn vm_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS");
    kib / 1024.0
}

/// The i-th pod's address: 10.x.y.z, unique for i < 2^24.
fn pod_ip(i: usize) -> [u8; 4] {
    [10, (i >> 16) as u8, (i >> 8) as u8, i as u8]
}

fn pods_json(n: usize) -> Vec<u8> {
    let pods: Vec<serde_json::Value> = (0..n)
        .map(|i| {
            let [a, b, c, d] = pod_ip(i);
            serde_json::json!({
                "name": format!("checkout-{i:06}-7d9f8c6b5-x2x4z"),
                "namespace": format!("team-{:03}", i % 200),
                "service": format!("checkout-{:04}", i % 5000),
                "ips": [format!("{a}.{b}.{c}.{d}")],
            })
        })
        .collect();
    serde_json::to_vec(&serde_json::json!({ "pods": pods })).unwrap()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

fn main() {
    nettel_integration::check_args(
        "nettel-scrape-bench [--series 10000,100000] [--pods 10000] [--scrapes 30]",
        &["--series", "--pods", "--scrapes"],
        &[],
    );
    let counts: Vec<usize> = flag("--series")
        .unwrap_or_else(|| "10000,100000".into())
        .split(',')
        .map(|s| s.parse().expect("--series: numbers"))
        .collect();
    let scrapes: usize = flag_or("--scrapes", 30);
    let pod_count: usize = flag_or("--pods", 10000);
    // Built once: the scrapes time the body, not a runtime's start-up.
    let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
    assert!(pod_count > 0, "--pods: at least 1");
    println!(
        "| series | pods | format | body | encode p50 | encode p99 | VmRSS pods / + series / after scrapes |"
    );
    println!("|---|---|---|---|---|---|---|");
    for n in counts {
        let metrics = Arc::new(Metrics::default());
        let pods = StaticPods::parse(&pods_json(pod_count)).expect("pods");
        let rss_before = vm_rss_mib();
        let limits =
            SeriesLimits { max_series: n + 16, max_per_metric: n + 16, ttl: Duration::from_secs(3600) };
        let mut agg =
            Aggregator::new(Arc::clone(&metrics), Resolver::Static(Arc::new(pods)), PortFolder::new(32768))
                .with_limits(limits);
        let now = Instant::now();
        let events: Vec<Event> = (0..n)
            .map(|i| v1::Event {
                timestamp_boot_ns: 1,
                kind: Some(v1::event::Kind::TcpRetransmit(v1::TcpRetransmit {
                    remote_addr: pod_ip(i % pod_count).to_vec().into(),
                    // Distinct listening ports per pod (below the ephemeral fold).
                    remote_port: 8000 + (i / pod_count) as u32,
                    kind: v1::RetransmitKind::Data as i32,
                    segments: 1,
                    ..Default::default()
                })),
            })
            .map(|e| Event::from(&e))
            .collect();
        agg.apply_batch(&events, now);
        drop(events);
        assert_eq!(agg.series().0, n, "every event a series of its own, none folded into overflow");
        let rss_after = vm_rss_mib();
        let endpoint = Endpoint {
            registry: metrics.register(),
            metrics: Arc::clone(&metrics),
            require_kube_sync: false,
        };
        let mut rows = Vec::new();
        for (format, accept) in [("Prometheus text", None), ("OpenMetrics", Some(OPENMETRICS_CONTENT_TYPE))] {
            let mut times = Vec::with_capacity(scrapes);
            let mut body = 0;
            for _ in 0..scrapes {
                let t = Instant::now();
                let resp =
                    nettel_aggregator::sink::prometheus::respond(&endpoint, &Method::GET, "/metrics", accept);
                assert!(resp.status().is_success());
                // The body is written as it is taken: time until the last chunk.
                body = drain(&rt, resp);
                times.push(t.elapsed());
            }
            times.sort();
            rows.push((format, body, percentile(&times, 0.5), percentile(&times, 0.99)));
        }
        let rss_scraped = vm_rss_mib();
        for (format, body, p50, p99) in rows {
            println!(
                "| {n} | {pod_count} | {format} | {:.1} MiB | {:.2} ms | {:.2} ms | {rss_before:.1} / {rss_after:.1} / {rss_scraped:.1} MiB |",
                body as f64 / (1024.0 * 1024.0),
                p50.as_secs_f64() * 1e3,
                p99.as_secs_f64() * 1e3,
            );
        }
    }
}

/// Takes a response body chunk by chunk, as hyper does when it sends one,
/// dropping each; returns its size in bytes.
fn drain(
    rt: &tokio::runtime::Runtime,
    resp: http::Response<nettel_aggregator::sink::prometheus::Body>,
) -> u64 {
    use http_body_util::BodyExt;
    rt.block_on(async {
        let mut body = resp.into_body();
        let mut n = 0;
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.expect("infallible").into_data() {
                n += data.len() as u64;
            }
        }
        n
    })
}
