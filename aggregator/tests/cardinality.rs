// SPDX-License-Identifier: Apache-2.0
//! The series budget under a flood: a million events with distinct pods,
//! ports, methods and statuses keep every metric at its cap, account for every
//! folded event, and keep memory bounded. Then expiry with a short TTL.
//!
//! Its own test binary, so the RSS measured is this test's.

use std::{net::Ipv4Addr, sync::Arc, time::Instant};

use nettel_aggregator::{
    metrics::{MetricLabels, Metrics, RetransmitLabels},
    transform::{
        aggregate::Aggregator,
        enrich_pod::{Resolver, StaticPods},
        fold_port::PortFolder,
        limit_cardinality::{SeriesLimits, OVERFLOW},
    },
};
use nettel_proto::v1;

const PODS: u32 = 50_000;
/// Events per metric and round: 10 distinct ports (or statuses) per pod.
const EVENTS: u32 = 500_000;
const MAX_SERIES: usize = 30_000;
const MAX_PER_METRIC: usize = 20_000;
/// Most RSS growth over the test's three million events: 30,000 series (10,000
/// of them histograms with exemplars), two handle caches of 65,536 entries and
/// two recent-refusal sets of 65,536 hashes. Measured: about 72 MiB (debug build).
const MAX_RSS_GROWTH_KIB: u64 = 128 * 1024;
/// Most RSS growth over a million further new label sets once the caps are reached.
const MAX_STEADY_GROWTH_KIB: u64 = 4 * 1024;

fn pod_ip(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(0x0a00_0000 + i)
}

fn pods_file() -> Vec<u8> {
    let pods: Vec<String> = (0..PODS)
        .map(|i| format!(r#"{{"name":"pod-{i}","namespace":"ns","service":"svc","ips":["{}"]}}"#, pod_ip(i)))
        .collect();
    format!(r#"{{"pods":[{}]}}"#, pods.join(",")).into_bytes()
}

fn retransmit(pod: u32, port: u32) -> v1::Event {
    v1::Event {
        timestamp_boot_ns: 1,
        kind: Some(v1::event::Kind::TcpRetransmit(v1::TcpRetransmit {
            remote_addr: pod_ip(pod).octets().to_vec().into(),
            remote_port: port,
            kind: v1::RetransmitKind::Data as i32,
            segments: 1,
            ..Default::default()
        })),
    }
}

fn http(pod: u32, method: v1::HttpMethod, status: u32) -> v1::Event {
    v1::Event {
        timestamp_boot_ns: 1,
        kind: Some(v1::event::Kind::HttpRequest(v1::HttpRequest {
            local_addr: pod_ip(pod).octets().to_vec().into(),
            method: method as i32,
            status,
            duration_ns: 3_000_000,
            trace_id: pod.to_be_bytes().repeat(4).into(),
            ..Default::default()
        })),
    }
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn encode(m: &Metrics) -> String {
    nettel_aggregator::sink::text_format::encode(
        &m.register(),
        m,
        nettel_aggregator::sink::text_format::Format::OpenMetrics,
    )
    .unwrap()
}

fn by_metric(
    f: &prometheus_client::metrics::family::Family<MetricLabels, impl Clone + Default + GetU64>,
    metric: &str,
) -> u64 {
    f.get_or_create(&MetricLabels { metric: metric.into() }).get_u64()
}

/// Reads a counter or gauge as u64.
trait GetU64 {
    fn get_u64(&self) -> u64;
}

impl GetU64 for prometheus_client::metrics::counter::Counter {
    fn get_u64(&self) -> u64 {
        self.get()
    }
}

impl GetU64 for prometheus_client::metrics::gauge::Gauge {
    fn get_u64(&self) -> u64 {
        self.get().try_into().unwrap()
    }
}

const TCP: &str = "node_tcp_retransmits_total";
const HTTP: &str = "http_request_duration_seconds";

#[test]
fn a_flood_of_distinct_series_stays_at_the_caps_with_bounded_memory() {
    let m = Arc::new(Metrics::default());
    let pods = Resolver::Static(Arc::new(StaticPods::parse(&pods_file()).unwrap()));
    let limits =
        SeriesLimits { max_series: MAX_SERIES, max_per_metric: MAX_PER_METRIC, ..SeriesLimits::default() };
    let mut agg = Aggregator::new(Arc::clone(&m), pods, PortFolder::new(32768)).with_limits(limits);
    let methods = [v1::HttpMethod::Get, v1::HttpMethod::Post];
    let rss_before = rss_kib();

    // Round 1: 500,000 retransmits to distinct (pod, port), then 500,000 HTTP
    // requests with distinct (pod, method, status).
    let started = Instant::now();
    for i in 0..EVENTS {
        agg.apply(&retransmit(i % PODS, 1000 + i / PODS));
    }
    for i in 0..EVENTS {
        let j = i / PODS;
        agg.apply(&http(i % PODS, methods[(j % 2) as usize], 200 + j / 2));
    }
    let round1 = started.elapsed();
    let rss_round1 = rss_kib();

    // Retransmits filled their per-metric cap; HTTP got what the global cap left.
    let tcp_admitted = MAX_PER_METRIC - 1;
    let http_admitted = MAX_SERIES - 2 - tcp_admitted;
    assert_eq!(agg.series(), (MAX_PER_METRIC, http_admitted + 1));
    let text = encode(&m);
    let tcp_lines = text.lines().filter(|l| l.starts_with("node_tcp_retransmits_total{")).count();
    let http_lines = text.lines().filter(|l| l.starts_with("http_request_duration_seconds_count{")).count();
    assert_eq!(tcp_lines, MAX_PER_METRIC, "series served == per-metric cap");
    assert_eq!(tcp_lines + http_lines, MAX_SERIES, "series served == global cap");
    assert_eq!(by_metric(&m.series, TCP) + by_metric(&m.series, HTTP), MAX_SERIES as u64);

    // Every event is counted once: in its own series or in the overflow series.
    let tcp_excess = u64::from(EVENTS) - tcp_admitted as u64;
    let http_excess = u64::from(EVENTS) - http_admitted as u64;
    assert_eq!(by_metric(&m.series_overflow_events, TCP), tcp_excess);
    assert_eq!(by_metric(&m.series_overflow_events, HTTP), http_excess);
    // Every label set was distinct, so every refusal was of a new label set.
    assert_eq!(by_metric(&m.series_refused, TCP), tcp_excess);
    assert_eq!(by_metric(&m.series_refused, HTTP), http_excess);
    let o = || OVERFLOW.to_owned();
    let overflow = RetransmitLabels { pod: o(), namespace: o(), service: o(), dest_port: o(), kind: o() };
    assert_eq!(m.tcp_retransmits.0.get(&overflow).map_or(0, |s| s.value.get()), tcp_excess);
    let overflow_line = format!(
        r#"http_request_duration_seconds_count{{pod="{OVERFLOW}",namespace="{OVERFLOW}",service="{OVERFLOW}",method="{OVERFLOW}",status="{OVERFLOW}"}} {http_excess}"#
    );
    assert!(text.contains(&overflow_line), "{overflow_line}");
    let tcp_total: u64 = text
        .lines()
        .filter(|l| l.starts_with("node_tcp_retransmits_total{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(tcp_total, u64::from(EVENTS));

    // Rounds 2 and 3: a million more new label sets each, all refused. Round
    // 2 lets the allocator settle to the interleaved pattern; round 3 must
    // not grow.
    let mut round = |r: u32| {
        for i in 0..EVENTS {
            agg.apply(&retransmit(i % PODS, r * 1000 + i / PODS));
            let j = i / PODS;
            agg.apply(&http(i % PODS, methods[(j % 2) as usize], 100 * r + 10 + j / 2));
        }
        rss_kib()
    };
    let rss_round2 = round(2);
    let rss_round3 = round(3);
    assert_eq!(agg.series(), (MAX_PER_METRIC, http_admitted + 1));
    assert_eq!(by_metric(&m.series_overflow_events, TCP), tcp_excess + 2 * u64::from(EVENTS));
    assert_eq!(by_metric(&m.series_refused, HTTP), http_excess + 2 * u64::from(EVENTS));

    let (growth, last) = (rss_round3.saturating_sub(rss_before), rss_round3.saturating_sub(rss_round2));
    eprintln!(
        "flood: round 1 of {} events in {round1:?}; RSS {rss_before} KiB before, {rss_round1} after round 1, \
         {rss_round2} after round 2, {rss_round3} after round 3 (growth {growth} KiB, round 3 {last} KiB)",
        2 * EVENTS
    );
    assert!(growth < MAX_RSS_GROWTH_KIB, "RSS grew {growth} KiB");
    assert!(last < MAX_STEADY_GROWTH_KIB, "RSS grew {last} KiB in round 3");
}
