// SPDX-License-Identifier: Apache-2.0
//! Counts events into series.
//!
//! Series handles are resolved once per distinct (address, port, kind) and
//! cached, so the per-event path is one hash lookup and a few atomic adds. The
//! cache is bounded: past [`MAX_CACHED_SERIES`] entries it is cleared and
//! rebuilt on demand. New label sets go through the series budget
//! ([`super::limit_cardinality`]) on a cache miss; [`Aggregator::expire`], run
//! on a timer, removes idle series and the cached handles pointing to them.

use std::{
    collections::{HashMap, HashSet},
    net::IpAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use nettel_proto::v1;
use prometheus_client::metrics::counter::Counter;

use super::{
    enrich_pod::{addr_from_bytes, normalize, Resolver, MAX_LABEL_LEN},
    fold_port::PortFolder,
    limit_cardinality::{Budget, Series, SeriesLimits, SeriesTable, OVERFLOW},
};
use crate::{
    kube::cgroup::CgroupResolver,
    metrics::{HttpLabels, KindLabels, Metrics, ReasonLabels, RetransmitLabels, HTTP_BUCKETS},
    sink::families::{CounterValue, HistogramValue},
    source::message::{Event, Http, Kind, Retransmit},
};

/// Label value of an HTTP method.
fn method_label(m: i32) -> &'static str {
    match v1::HttpMethod::try_from(m) {
        Ok(v1::HttpMethod::Get) => "GET",
        Ok(v1::HttpMethod::Post) => "POST",
        Ok(v1::HttpMethod::Put) => "PUT",
        Ok(v1::HttpMethod::Delete) => "DELETE",
        Ok(v1::HttpMethod::Head) => "HEAD",
        Ok(v1::HttpMethod::Patch) => "PATCH",
        Ok(v1::HttpMethod::Options) => "OPTIONS",
        Ok(v1::HttpMethod::Connect) => "CONNECT",
        Ok(v1::HttpMethod::Trace) => "TRACE",
        _ => "OTHER",
    }
}

/// A label value from attribution, cut to [`MAX_LABEL_LEN`] bytes (on a char
/// boundary) whatever the source, so no label string is unbounded.
fn bounded(s: &str) -> String {
    if s.len() <= MAX_LABEL_LEN {
        return s.to_owned();
    }
    let mut end = MAX_LABEL_LEN;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

/// The hasher of the series-handle caches, the per-event path's one lookup:
/// foldhash, seeded per process (random seeds keep crafted keys from
/// colliding on purpose; the caches are bounded besides). std's SipHash
/// took 10% of the aggregator's CPU at 1 M retransmit events/s.
type HandleHasher = foldhash::quality::RandomState;

/// Most cached series handles before the cache is cleared.
pub const MAX_CACHED_SERIES: usize = 65536;

/// Most kernel HTTP totals entries remembered: as many as the kernel's table
/// can hold (`--http-table-entries` is at most 65536). Past this, the entries
/// seen longest ago (keys of a table a loader restart replaced, not yet
/// forgotten by a complete batch) are forgotten first, down to 7/8 of it, each
/// counted as a decode error; an entry forgotten and then seen again counts
/// its totals whole.
pub const MAX_TOTALS_KEYS: usize = 65536;

/// (cgroup id, local address, method, status, TLS) of a kernel totals entry.
type TotalsKey = (u64, IpAddr, i32, u32, bool);
type Buckets = [u64; HTTP_BUCKETS.len() + 1];

/// The kernel's running totals as last counted, per entry, with the batch
/// they were last seen in: what turns them into growth. Kept across streams
/// and loader restarts (the kernel table outlives the loader, so its totals
/// go on).
#[derive(Debug, Default)]
struct TotalsSeen {
    entries: HashMap<TotalsKey, Seen>,
    /// Batches begun so far ([`TotalsSeen::begin_batch`]).
    batch: u64,
}

/// One entry's totals as last counted, and the batch they came in.
#[derive(Debug)]
struct Seen {
    buckets: Buckets,
    sum_ns: u64,
    batch: u64,
}

impl TotalsSeen {
    /// Starts a batch: what [`TotalsSeen::growth`] sees from now on was seen
    /// in it.
    fn begin_batch(&mut self) {
        self.batch += 1;
    }

    /// The growth of `key`'s totals since last seen, and remembers them. An
    /// entry not seen before counts whole; so do totals below the last seen
    /// (the table was recreated), bucket by bucket.
    fn growth(&mut self, key: TotalsKey, buckets: Buckets, sum_ns: u64) -> (Buckets, u64) {
        let last = self.entries.insert(key, Seen { buckets, sum_ns, batch: self.batch });
        let Some(Seen { buckets: lb, sum_ns: ls, .. }) = last else { return (buckets, sum_ns) };
        if buckets.iter().zip(&lb).any(|(now, before)| now < before) || sum_ns < ls {
            return (buckets, sum_ns);
        }
        (std::array::from_fn(|i| buckets[i] - lb[i]), sum_ns - ls)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }

    /// Forgets every entry but `keys` (a complete batch: the rest were freed).
    fn keep_only(&mut self, keys: &HashSet<TotalsKey>) {
        self.entries.retain(|k, _| keys.contains(k));
    }

    /// Past `max` entries, forgets those seen longest ago until 7/8 of `max`
    /// are left, never one seen in the current batch; returns how many.
    fn forget_oldest(&mut self, max: usize) -> usize {
        let before = self.entries.len();
        if before <= max {
            return 0;
        }
        let mut batches: Vec<u64> = self.entries.values().map(|e| e.batch).collect();
        let excess = before - max / 8 * 7;
        let (_, &mut threshold, _) = batches.select_nth_unstable(excess - 1);
        // Entries of the threshold's batch go too, unless it is the current one.
        let current = self.batch;
        self.entries.retain(|_, e| e.batch > threshold || e.batch == current);
        before - self.entries.len()
    }
}

/// A cached handle: the series and whether its address resolved to a pod.
#[derive(Debug)]
struct Cached<M> {
    series: Arc<Series<M>>,
    resolved: bool,
}

impl<M> Cached<M> {
    /// Still counting into a live, non-overflow series (kept across expiry).
    fn keep(&self) -> bool {
        !self.series.is_expired() && !self.series.overflow
    }
}

/// Applies events to metrics.
#[derive(Debug)]
pub struct Aggregator {
    metrics: Arc<Metrics>,
    pods: Resolver,
    /// `pods.generation()` the cache was filled under.
    cache_generation: u64,
    ports: PortFolder,
    cache: HashMap<(IpAddr, u32, i32), Cached<CounterValue>, HandleHasher>,
    received_tcp: Counter,
    received_synthetic: Counter,
    received_http: Counter,
    /// HTTP events seen through the OpenSSL uprobes (`kind="https_request"`).
    received_https: Counter,
    unresolved_tcp: Counter,
    unresolved_http: Counter,
    /// HTTP series handles by (cgroup id, local address, method, status).
    http_cache: HashMap<(u64, IpAddr, i32, u32), Cached<HistogramValue>, HandleHasher>,
    /// The kernel's HTTP totals as last counted, per entry.
    totals_seen: TotalsSeen,
    cgroups: Option<CgroupResolver>,
    budget: Budget,
    tcp_series: SeriesTable<CounterValue>,
    http_series: SeriesTable<HistogramValue>,
    /// Clock of series touches: milliseconds since `start`, set per batch.
    start: Instant,
    now_ms: u64,
}

impl Aggregator {
    /// An aggregator counting into `metrics`, with the default [`SeriesLimits`].
    pub fn new(metrics: Arc<Metrics>, pods: Resolver, ports: PortFolder) -> Self {
        let received_tcp =
            metrics.events_received.get_or_create(&KindLabels { kind: "tcp_retransmit".into() }).clone();
        let received_synthetic =
            metrics.events_received.get_or_create(&KindLabels { kind: "synthetic".into() }).clone();
        let received_http =
            metrics.events_received.get_or_create(&KindLabels { kind: "http_request".into() }).clone();
        let received_https =
            metrics.events_received.get_or_create(&KindLabels { kind: "https_request".into() }).clone();
        let unresolved = |kind: &str| {
            metrics.unresolved_addresses.get_or_create(&KindLabels { kind: kind.into() }).clone()
        };
        let (unresolved_tcp, unresolved_http) = (unresolved("tcp_retransmit"), unresolved("http_request"));
        let o = || OVERFLOW.to_owned();
        let tcp_series = SeriesTable::new(
            "node_tcp_retransmits_total",
            Arc::clone(&metrics.tcp_retransmits.0),
            &RetransmitLabels { pod: o(), namespace: o(), service: o(), dest_port: o(), kind: o() },
            &metrics,
        );
        let http_series = SeriesTable::new(
            "http_request_duration_seconds",
            Arc::clone(&metrics.http_duration.0),
            &HttpLabels { pod: o(), namespace: o(), service: o(), method: o(), status: o() },
            &metrics,
        );
        Self {
            unresolved_tcp,
            unresolved_http,
            received_http,
            received_https,
            http_cache: HashMap::default(),
            totals_seen: TotalsSeen::default(),
            cgroups: None,
            cache_generation: pods.generation(),
            metrics,
            pods,
            ports,
            cache: HashMap::default(),
            received_tcp,
            received_synthetic,
            budget: Budget::new(SeriesLimits::default(), 2),
            tcp_series,
            http_series,
            start: Instant::now(),
            now_ms: 0,
        }
    }

    /// Attributes HTTP events by the serving process's cgroup first (Kubernetes mode).
    pub fn with_cgroups(mut self, cgroups: CgroupResolver) -> Self {
        self.cgroups = Some(cgroups);
        self
    }

    /// Replaces the series limits (before any event is applied).
    pub fn with_limits(mut self, limits: SeriesLimits) -> Self {
        self.budget = Budget::new(limits, 2);
        self
    }

    /// Counts a batch of events received at `now`.
    pub fn apply_batch(&mut self, events: &[Event], now: Instant) {
        self.set_now(now);
        for ev in events {
            self.apply_event(ev);
        }
    }

    /// Counts one proto event, as [`Aggregator::apply_event`].
    pub fn apply(&mut self, ev: &v1::Event) {
        self.apply_event(&Event::from(ev));
    }

    /// Counts one event (touching series at the time of the last batch or expiry).
    pub fn apply_event(&mut self, ev: &Event) {
        match &ev.kind {
            Kind::TcpRetransmit(t) => {
                self.received_tcp.inc();
                self.tcp_retransmit(t);
            }
            // An exemplar-only event is a request counted in the kernel's totals.
            Kind::HttpRequest(h) if h.exemplar_only => self.http_request(h),
            Kind::HttpRequest(h) => {
                if h.tls {
                    self.received_https.inc();
                } else {
                    self.received_http.inc();
                }
                self.http_request(h);
            }
            // Benchmark events are counted and otherwise ignored.
            Kind::Synthetic => {
                self.received_synthetic.inc();
            }
            Kind::None => self.decode_error("unknown_event_kind"),
        }
    }

    /// Removes the series not counted into for the TTL (from `/metrics` and
    /// from the handle caches); returns how many were removed.
    pub fn expire(&mut self, now: Instant) -> usize {
        self.set_now(now);
        let ttl_ms = u64::try_from(self.budget.limits().ttl.as_millis()).unwrap_or(u64::MAX);
        let removed = self.tcp_series.expire(&mut self.budget, self.now_ms, ttl_ms)
            + self.http_series.expire(&mut self.budget, self.now_ms, ttl_ms);
        if removed > 0 {
            // Expired handles count into detached series; overflow handles are
            // dropped too, so their label sets are reconsidered now there is room.
            self.cache.retain(|_, c| c.keep());
            self.http_cache.retain(|_, c| c.keep());
        }
        removed
    }

    /// Live series of (`node_tcp_retransmits_total`, `http_request_duration_seconds`).
    pub fn series(&self) -> (usize, usize) {
        (self.tcp_series.len(), self.http_series.len())
    }

    fn set_now(&mut self, now: Instant) {
        let ms = now.saturating_duration_since(self.start).as_millis();
        self.now_ms = u64::try_from(ms).unwrap_or(u64::MAX);
    }

    fn tcp_retransmit(&mut self, t: &Retransmit) {
        let Some(addr) = t.remote_addr.addr() else {
            return self.decode_error("bad_address");
        };
        let kind = match v1::RetransmitKind::try_from(t.kind) {
            Ok(k @ (v1::RetransmitKind::Data | v1::RetransmitKind::Synack)) => k,
            _ => return self.decode_error("unknown_retransmit_kind"),
        };
        if t.error != 0 {
            self.metrics.tcp_retransmit_failed.inc();
            return;
        }
        let addr = normalize(addr);
        let key = (addr, t.remote_port, kind as i32);
        // Segments, like the kernel's TcpRetransSegs; 0 from an old loader means 1.
        let segments = u64::from(t.segments.max(1));
        self.refresh_cache();
        if let Some(c) = self.cache.get(&key) {
            c.series.touch(self.now_ms);
            c.series.value.inc_by(segments);
            if c.series.overflow {
                self.tcp_series.count_overflow();
            }
            if !c.resolved {
                self.unresolved_tcp.inc();
            }
            return;
        }
        if self.cache.len() >= MAX_CACHED_SERIES {
            self.cache.clear();
        }
        let pod = self.pods.lookup(addr);
        let labels = RetransmitLabels {
            pod: pod.as_ref().map_or_else(String::new, |p| bounded(&p.name)),
            namespace: pod.as_ref().map_or_else(String::new, |p| bounded(&p.namespace)),
            service: pod.as_ref().map_or_else(String::new, |p| bounded(&p.service)),
            dest_port: self.ports.fold(t.remote_port).to_string(),
            kind: match kind {
                v1::RetransmitKind::Synack => "synack",
                _ => "data",
            }
            .into(),
        };
        let series = self.tcp_series.get_or_admit(&labels, &mut self.budget, self.now_ms);
        series.value.inc_by(segments);
        if series.overflow {
            self.tcp_series.count_overflow();
        }
        if pod.is_none() {
            self.unresolved_tcp.inc();
        }
        self.cache.insert(key, Cached { series, resolved: pod.is_some() });
    }

    fn http_request(&mut self, h: &Http) {
        let Some(local) = h.local_addr.addr() else {
            return self.decode_error("bad_address");
        };
        if !(100..=599).contains(&h.status) {
            return self.decode_error("bad_http_status");
        }
        let exemplar = match h.trace_id.get().map(<&[u8; 16]>::try_from) {
            Some(Ok(id)) => Some(id),
            _ if h.trace_id.is_empty() => None,
            // Counted, and the request still is, without an exemplar.
            _ => {
                self.decode_error("bad_trace_id");
                None
            }
        };
        let seconds = h.duration_ns as f64 / 1e9;
        let local = normalize(local);
        let (series, resolved) = self.http_handle(h.cgroup_id, local, h.method, h.status);
        if h.exemplar_only {
            // Counted in the kernel's totals already: only its trace id is new.
            match exemplar {
                Some(id) => series.value.exemplar(seconds, id),
                None => self.decode_error("exemplar_without_trace_id"),
            }
            return;
        }
        series.value.observe(seconds, exemplar);
        if series.overflow {
            self.http_series.count_overflow();
        }
        if !resolved {
            self.unresolved_http.inc();
        }
    }

    /// The series of requests served by `cgroup_id` on `local` (normalized)
    /// with `method` and `status`, admitted on first use and touched now;
    /// and whether its pod was resolved.
    fn http_handle(
        &mut self,
        cgroup_id: u64,
        local: IpAddr,
        method: i32,
        status: u32,
    ) -> (Arc<Series<HistogramValue>>, bool) {
        self.refresh_cache();
        let key = (cgroup_id, local, method, status);
        if let Some(c) = self.http_cache.get(&key) {
            c.series.touch(self.now_ms);
            return (Arc::clone(&c.series), c.resolved);
        }
        if self.http_cache.len() >= MAX_CACHED_SERIES {
            self.http_cache.clear();
        }
        // The serving pod: by cgroup (Kubernetes), else by the socket's local address.
        let by_cgroup = self
            .cgroups
            .as_mut()
            .and_then(|c| c.pod_uid(cgroup_id, Instant::now()))
            .and_then(|uid| self.pods.lookup_uid(&uid));
        let pod = by_cgroup.or_else(|| self.pods.lookup(local));
        let labels = HttpLabels {
            pod: pod.as_ref().map_or_else(String::new, |p| bounded(&p.name)),
            namespace: pod.as_ref().map_or_else(String::new, |p| bounded(&p.namespace)),
            service: pod.as_ref().map_or_else(String::new, |p| bounded(&p.service)),
            method: method_label(method).into(),
            status: status.to_string(),
        };
        let series = self.http_series.get_or_admit(&labels, &mut self.budget, self.now_ms);
        self.http_cache.insert(key, Cached { series: Arc::clone(&series), resolved: pod.is_some() });
        (series, pod.is_some())
    }

    /// Counts the growth of the kernel's HTTP request totals (proto
    /// `HttpTotals`) received at `now`. `bounds_ns` must be this aggregator's
    /// buckets; otherwise nothing is counted and each entry is a decode error.
    /// `complete`: the batch holds every key of the kernel's table that was
    /// sent before, and the totals last seen of any other key are forgotten
    /// (its cgroup is gone).
    pub fn apply_http_totals(
        &mut self,
        totals: &[v1::HttpTotals],
        bounds_ns: &[u64],
        complete: bool,
        now: Instant,
    ) {
        self.set_now(now);
        self.totals_seen.begin_batch();
        if complete {
            let keys = totals.iter().filter_map(totals_key).collect();
            self.totals_seen.keep_only(&keys);
        }
        if totals.is_empty() {
            return;
        }
        let ours = HTTP_BUCKETS.iter().map(|le| (le * 1e9).round() as u64);
        if !bounds_ns.iter().copied().eq(ours) {
            for _ in totals {
                self.decode_error("http_buckets_mismatch");
            }
            return;
        }
        for t in totals {
            self.http_totals(t);
        }
        let forgotten = self.totals_seen.forget_oldest(MAX_TOTALS_KEYS);
        if forgotten > 0 {
            let reason = ReasonLabels { reason: "http_totals_keys_over_limit".into() };
            self.metrics.decode_errors.get_or_create(&reason).inc_by(forgotten as u64);
        }
    }

    fn http_totals(&mut self, t: &v1::HttpTotals) {
        let Some(key) = totals_key(t) else {
            return self.decode_error("bad_address");
        };
        let local = key.1;
        if !(100..=599).contains(&t.status) {
            return self.decode_error("bad_http_status");
        }
        let Ok(buckets) = <[u64; HTTP_BUCKETS.len() + 1]>::try_from(t.bucket_counts.as_slice()) else {
            return self.decode_error("bad_http_buckets");
        };
        let delta = self.totals_seen.growth(key, buckets, t.sum_ns);
        let count: u64 = delta.0.iter().sum();
        if count == 0 {
            return;
        }
        if t.tls {
            self.received_https.inc_by(count);
        } else {
            self.received_http.inc_by(count);
        }
        let (series, resolved) = self.http_handle(t.cgroup_id, local, t.method, t.status);
        series.value.add(&delta.0, delta.1 as f64 / 1e9);
        if series.overflow {
            self.http_series.count_overflow_by(count);
        }
        if !resolved {
            self.unresolved_http.inc_by(count);
        }
    }

    /// Drops cached series handles when the pod index changed.
    fn refresh_cache(&mut self) {
        let generation = self.pods.generation();
        if generation != self.cache_generation {
            self.cache.clear();
            self.http_cache.clear();
            self.cache_generation = generation;
        }
    }

    fn decode_error(&self, reason: &str) {
        self.metrics.decode_errors.get_or_create(&ReasonLabels { reason: reason.into() }).inc();
    }
}

/// The [`TotalsSeen`] key of `t`; `None` when its address is malformed.
fn totals_key(t: &v1::HttpTotals) -> Option<TotalsKey> {
    let local = normalize(addr_from_bytes(&t.local_addr)?);
    Some((t.cgroup_id, local, t.method, t.status, t.tls))
}

/// Runs [`Aggregator::expire`] every `period` until the process ends.
pub async fn run_expiry(agg: Arc<Mutex<Aggregator>>, period: Duration) {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let removed = agg.lock().unwrap_or_else(|e| e.into_inner()).expire(Instant::now());
        if removed > 0 {
            tracing::info!(removed, "Removed series idle for longer than --series-ttl-secs.");
        }
    }
}

/// How often expiry runs for a TTL: a tenth of it, between 1 s and 60 s.
pub fn expiry_period(ttl: Duration) -> Duration {
    (ttl / 10).clamp(Duration::from_secs(1), Duration::from_secs(60))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{sink::families::Format, transform::enrich_pod::StaticPods};

    fn rtx(addr: &[u8], port: u32, kind: v1::RetransmitKind, error: i32) -> v1::Event {
        rtx_segs(addr, port, kind, error, 1)
    }

    fn rtx_segs(addr: &[u8], port: u32, kind: v1::RetransmitKind, error: i32, segments: u32) -> v1::Event {
        v1::Event {
            timestamp_boot_ns: 1,
            kind: Some(v1::event::Kind::TcpRetransmit(v1::TcpRetransmit {
                remote_addr: addr.to_vec().into(),
                remote_port: port,
                kind: kind as i32,
                error,
                segments,
                ..Default::default()
            })),
        }
    }

    fn value(m: &Metrics, pod: &str, port: &str, kind: &str) -> u64 {
        let ns = if pod.is_empty() { "" } else { "shop" };
        let svc = if pod.is_empty() { "" } else { "web" };
        m.tcp_retransmits
            .0
            .get(&RetransmitLabels {
                pod: pod.into(),
                namespace: ns.into(),
                service: svc.into(),
                dest_port: port.into(),
                kind: kind.into(),
            })
            .map_or(0, |s| s.value.get())
    }

    #[test]
    fn attributes_folds_and_falls_back() {
        let m = Arc::new(Metrics::default());
        let pods = Resolver::Static(Arc::new(
            StaticPods::parse(
                br#"{"pods":[{"name":"web-0","namespace":"shop","service":"web","ips":["10.0.0.2"]}]}"#,
            )
            .unwrap(),
        ));
        let mut a = Aggregator::new(Arc::clone(&m), pods, PortFolder::new(32768));
        let mapped = {
            let mut b = [0u8; 16];
            b[10] = 0xff;
            b[11] = 0xff;
            b[12..].copy_from_slice(&[10, 0, 0, 2]);
            b
        };
        a.apply(&rtx(&[10, 0, 0, 2], 8080, v1::RetransmitKind::Data, 0));
        a.apply(&rtx_segs(&mapped, 8080, v1::RetransmitKind::Data, 0, 3));
        a.apply(&rtx(&[10, 0, 0, 2], 40000, v1::RetransmitKind::Synack, 0));
        a.apply(&rtx(&[10, 0, 0, 9], 443, v1::RetransmitKind::Data, 0));
        a.apply(&rtx(&[10, 0, 0, 2], 8080, v1::RetransmitKind::Data, -11));
        a.apply(&rtx(&[1, 2, 3], 80, v1::RetransmitKind::Data, 0));
        a.apply(&v1::Event::default());

        assert_eq!(
            value(&m, "web-0", "8080", "data"),
            4,
            "v4 and v4-mapped hit the same pod; segments add up"
        );
        assert_eq!(value(&m, "web-0", "ephemeral", "synack"), 1);
        assert_eq!(value(&m, "", "443", "data"), 1, "unknown address falls back to node level");
        assert_eq!(
            m.unresolved_addresses.get_or_create(&KindLabels { kind: "tcp_retransmit".into() }).get(),
            1
        );
        assert_eq!(m.tcp_retransmit_failed.get(), 1);
        let reason = |r: &str| m.decode_errors.get_or_create(&ReasonLabels { reason: r.into() }).get();
        assert_eq!((reason("bad_address"), reason("unknown_event_kind")), (1, 1));
    }

    #[test]
    fn hostile_http_fields_are_counted_not_trusted() {
        let m = Arc::new(Metrics::default());
        let mut a = Aggregator::new(Arc::clone(&m), Resolver::Static(Arc::default()), PortFolder::new(32768));
        let req = |status, method, trace_id: &[u8], local: &[u8]| v1::Event {
            timestamp_boot_ns: 1,
            kind: Some(v1::event::Kind::HttpRequest(v1::HttpRequest {
                local_addr: local.to_vec().into(),
                method,
                status,
                duration_ns: 1_000_000,
                trace_id: trace_id.to_vec().into(),
                ..Default::default()
            })),
        };
        let v4 = [10, 0, 0, 1];
        a.apply(&req(200, v1::HttpMethod::Get as i32, &[0xff; 5], &v4)); // bad trace id: counted, kept
        a.apply(&req(200, 12345, &[0xab; 16], &v4)); // unknown method: OTHER
        a.apply(&req(99, 2, &[], &v4));
        a.apply(&req(600, 2, &[], &v4));
        a.apply(&req(200, 2, &[], &[1, 2, 3, 4, 5]));
        let reason = |r: &str| m.decode_errors.get_or_create(&ReasonLabels { reason: r.into() }).get();
        assert_eq!((reason("bad_trace_id"), reason("bad_http_status"), reason("bad_address")), (1, 2, 1));
        let out = crate::sink::text_format::encode(&m.register(), &m, Format::OpenMetrics).unwrap();
        assert!(out.contains(r#"method="GET",status="200"} 1"#), "{out}");
        assert!(out.contains(r#"method="OTHER",status="200"} 1"#), "{out}");
        assert!(out.contains(&format!(r#"trace_id="{}""#, "ab".repeat(16))), "{out}");
    }

    /// A complete batch (every key of the kernel's table) forgets the totals
    /// of the keys it lacks: the kernel freed them with their cgroup.
    #[test]
    fn a_complete_batch_forgets_the_totals_of_freed_keys() {
        let m = Arc::new(Metrics::default());
        let mut a = Aggregator::new(Arc::clone(&m), Resolver::Static(Arc::default()), PortFolder::new(32768));
        let bounds: Vec<u64> = HTTP_BUCKETS.iter().map(|le| (le * 1e9).round() as u64).collect();
        let totals = |cgroup_id: u64, n: u64| v1::HttpTotals {
            cgroup_id,
            local_addr: vec![10, 0, 0, 1].into(),
            method: v1::HttpMethod::Get as i32,
            status: 200,
            tls: false,
            sum_ns: n,
            bucket_counts: [n; 14].to_vec(),
        };
        let now = Instant::now();
        a.apply_http_totals(&[totals(1, 1), totals(2, 1)], &bounds, false, now);
        assert_eq!(a.totals_seen.len(), 2);
        a.apply_http_totals(&[totals(2, 3)], &bounds, false, now);
        assert_eq!(a.totals_seen.len(), 2, "a partial batch forgets nothing");
        a.apply_http_totals(&[totals(2, 3)], &bounds, true, now);
        assert_eq!(a.totals_seen.len(), 1, "cgroup 1 is gone");
        assert_eq!(a.received_http.get(), 14 + 14 + 28, "the resent key 2 adds nothing");
        a.apply_http_totals(&[], &[], true, now);
        assert_eq!(a.totals_seen.len(), 0, "an empty complete batch: every key is gone");
    }

    /// Past the limit, the entries seen longest ago are forgotten first, and
    /// never one of the current batch: the others keep counting by growth.
    #[test]
    fn totals_past_the_limit_forget_the_oldest_entries_first() {
        let key = |i: u64| (i, IpAddr::from([10, 0, 0, 1]), 2, 200, false);
        let mut seen = TotalsSeen::default();
        seen.begin_batch();
        for i in 0..8 {
            seen.growth(key(i), [1; 14], 1); // batch 1: entries 0-7
        }
        seen.begin_batch();
        for i in 4..12 {
            seen.growth(key(i), [2; 14], 2); // batch 2: 4-7 again, 8-11 new
        }
        assert_eq!(seen.forget_oldest(16), 0, "under the limit");
        // 12 entries past a limit of 8: down to 7, the current batch's 8 kept.
        assert_eq!(seen.forget_oldest(8), 4);
        assert!((0..4).all(|i| !seen.entries.contains_key(&key(i))), "batch 1 only: forgotten");
        assert_eq!(seen.growth(key(5), [3; 14], 3), ([1; 14], 1), "a kept entry still counts its growth");
        seen.begin_batch();
        seen.growth(key(20), [1; 14], 1);
        // 9 past 8: every entry of the oldest batch left (2) goes, whole.
        assert_eq!(seen.forget_oldest(8), 8);
        assert_eq!(seen.len(), 1, "batch 3: key 20");
    }

    /// Kernel totals count by their growth: again after a loader restart
    /// (same totals: nothing), whole for a new entry or a recreated table,
    /// never with foreign buckets; an exemplar-only event counts nothing.
    #[test]
    fn kernel_http_totals_count_their_growth_once() {
        let m = Arc::new(Metrics::default());
        let mut a = Aggregator::new(Arc::clone(&m), Resolver::Static(Arc::default()), PortFolder::new(32768));
        let bounds: Vec<u64> = HTTP_BUCKETS.iter().map(|le| (le * 1e9).round() as u64).collect();
        let totals = |status: u32, tls: bool, counts: [u64; 14], sum_ns: u64| v1::HttpTotals {
            cgroup_id: 1,
            local_addr: vec![10, 0, 0, 1].into(),
            method: v1::HttpMethod::Get as i32,
            status,
            tls,
            sum_ns,
            bucket_counts: counts.to_vec(),
        };
        let mut c = [0u64; 14];
        c[0] = 3; // three requests of <= 1 ms
        let now = Instant::now();
        a.apply_http_totals(&[totals(200, false, c, 1_500_000)], &bounds, false, now);
        a.apply_http_totals(&[totals(200, false, c, 1_500_000)], &bounds, false, now); // resent: no growth
        c[6] = 1; // one of <= 100 ms
        a.apply_http_totals(
            &[totals(200, false, c, 91_500_000), totals(500, true, c, 5)],
            &bounds,
            false,
            now,
        );
        // A recreated table: totals smaller than the last seen count whole.
        let mut small = [0u64; 14];
        small[13] = 1;
        a.apply_http_totals(&[totals(200, false, small, 20_000_000_000)], &bounds, false, now);
        // Foreign buckets: nothing counted, each entry a decode error.
        a.apply_http_totals(&[totals(404, false, c, 1)], &bounds[1..], false, now);
        // The exemplar of an already counted request: its trace id only.
        a.apply(&v1::Event {
            timestamp_boot_ns: 1,
            kind: Some(v1::event::Kind::HttpRequest(v1::HttpRequest {
                local_addr: vec![10, 0, 0, 1].into(),
                cgroup_id: 1,
                method: v1::HttpMethod::Get as i32,
                status: 200,
                duration_ns: 80_000_000,
                trace_id: vec![0xcd; 16].into(),
                exemplar_only: true,
                ..Default::default()
            })),
        });
        let out = crate::sink::text_format::encode(&m.register(), &m, Format::OpenMetrics).unwrap();
        let line = |a: &str, b: &str| {
            out.lines()
                .find(|l| l.contains(a) && l.contains(b))
                .unwrap_or_else(|| panic!("{a} {b}:\n{out}"))
                .to_owned()
        };
        assert!(line("_count{", r#"status="200"}"#).ends_with(" 5"), "3 + 1 + 1:\n{out}");
        assert!(line("_bucket{", r#"status="200",le="0.001"}"#).ends_with(" 3"), "{out}");
        let exemplar = format!(r#" 4 # {{trace_id="{}"}} 0.08"#, "cd".repeat(16));
        assert!(line("_bucket{", r#"status="200",le="0.1"}"#).ends_with(&exemplar), "{out}");
        assert!(line("_count{", r#"status="500"}"#).ends_with(" 4"), "{out}");
        assert!(!out.contains(r#"status="404""#), "{out}");
        let reason = |r: &str| m.decode_errors.get_or_create(&ReasonLabels { reason: r.into() }).get();
        assert_eq!(reason("http_buckets_mismatch"), 1);
        let received = |k: &str| m.events_received.get_or_create(&KindLabels { kind: k.into() }).get();
        assert_eq!(
            (received("http_request"), received("https_request")),
            (5, 4),
            "the exemplar is not a request"
        );
    }

    #[test]
    fn cached_series_follow_ip_reuse_in_the_cluster_index() {
        use std::time::{Duration, Instant};

        use crate::{
            kube::pod_index::{PodIndex, PodInfo, PodState},
            transform::enrich_pod::ClusterIndex,
        };
        let pod = |uid: &str, name: &str| PodInfo {
            uid: uid.into(),
            name: name.into(),
            namespace: "shop".into(),
            ips: vec!["10.0.0.5".parse().unwrap()],
            host_network: false,
            state: PodState::Running,
            app_label: None,
        };
        let m = Arc::new(Metrics::default());
        let cluster = Arc::new(ClusterIndex::new(PodIndex::new(Duration::from_secs(30))));
        cluster.update(|i| i.upsert_pod(pod("u1", "old")));
        let mut a =
            Aggregator::new(Arc::clone(&m), Resolver::Cluster(Arc::clone(&cluster)), PortFolder::new(32768));
        let ev = rtx(&[10, 0, 0, 5], 80, v1::RetransmitKind::Data, 0);
        a.apply(&ev);
        cluster.update(|i| {
            i.delete_pod("u1", Instant::now());
            i.upsert_pod(pod("u2", "new"));
        });
        a.apply(&ev);
        let count = |pod: &str| {
            m.tcp_retransmits
                .0
                .get(&RetransmitLabels {
                    pod: pod.into(),
                    namespace: "shop".into(),
                    service: String::new(),
                    dest_port: "80".into(),
                    kind: "data".into(),
                })
                .map_or(0, |s| s.value.get())
        };
        assert_eq!((count("old"), count("new")), (1, 1), "the cached series of `old` was not reused");
    }
}
