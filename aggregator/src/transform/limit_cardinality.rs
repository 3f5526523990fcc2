// SPDX-License-Identifier: Apache-2.0
//! The series budget: a cap on live series per metric and across metrics, one
//! overflow series per metric that takes the excess, and expiry of idle series.
//!
//! A *series* here is one label set of a family (for a histogram: its buckets,
//! sum and count together). Each [`SeriesTable`] owns the label sets of one
//! product metric and the [`Family`] that serves them.
//!
//! * A new label set is admitted while the metric has fewer than
//!   `max_per_metric - 1` series and all metrics together fewer than
//!   `max_series - tables` (one slot per metric is reserved for its overflow
//!   series). Otherwise its events go to the overflow series, whose label values
//!   are all [`OVERFLOW`], so a metric never serves more than `max_per_metric`
//!   series and all of them together never more than `max_series`.
//! * `nettel_series_overflow_events_total{metric}` counts the events counted
//!   into the overflow series; `nettel_series_refused_total{metric}` counts
//!   refused label sets that were not among the [`RECENT_REFUSALS`] distinct
//!   label sets refused most recently (exactly the distinct refused label sets
//!   while fewer than that many were refused, otherwise an upper bound);
//!   `nettel_series{metric}` is the number of live series, overflow included.
//! * [`SeriesTable::expire`] removes series not counted into for the TTL from
//!   the family (and so from `/metrics`). Callers caching [`Series`] handles
//!   must drop those that are [`Series::is_expired`]. A removed counter that
//!   comes back starts from 0, which Prometheus treats as a counter reset.
//!
//! Nothing here runs per event: admission runs once per handle-cache miss, and
//! the per-event cost is [`Series::touch`] (one relaxed load, rarely a store).

use std::{
    collections::{HashMap, HashSet, VecDeque},
    hash::{BuildHasher, Hash, RandomState},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
        Arc,
    },
    time::Duration,
};

use prometheus_client::metrics::{
    counter::Counter,
    family::{Family, MetricConstructor},
    gauge::Gauge,
};

use tracing::warn;

use crate::metrics::{MetricLabels, Metrics};

/// The label value of every label of an overflow series.
pub const OVERFLOW: &str = "__overflow__";
/// How many distinct refused label sets are remembered (by 64-bit hash) so a
/// label set refused again is not counted again in `nettel_series_refused_total`.
pub const RECENT_REFUSALS: usize = 65536;

/// Validated series limits (`--max-series`, `--max-series-per-metric`, `--series-ttl-secs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeriesLimits {
    /// Most series of all limited metrics together, overflow series included.
    pub max_series: usize,
    /// Most series of one metric, its overflow series included.
    pub max_per_metric: usize,
    /// A series not counted into for this long is removed.
    pub ttl: Duration,
}

impl Default for SeriesLimits {
    fn default() -> Self {
        Self { max_series: 50_000, max_per_metric: 20_000, ttl: Duration::from_secs(600) }
    }
}

/// One live series: its metric handle and when it was last counted into.
#[derive(Debug)]
pub struct Series<M> {
    /// The handle to count into.
    pub handle: M,
    /// Whether this is the metric's overflow series.
    pub overflow: bool,
    /// Milliseconds on the caller's clock (see [`SeriesTable::expire`]).
    touched_ms: AtomicU64,
    expired: AtomicBool,
}

impl<M> Series<M> {
    fn new(handle: M, overflow: bool, now_ms: u64) -> Self {
        Self { handle, overflow, touched_ms: AtomicU64::new(now_ms), expired: AtomicBool::new(false) }
    }

    /// Marks the series as counted into at `now_ms`.
    #[inline]
    pub fn touch(&self, now_ms: u64) {
        if self.touched_ms.load(Relaxed) != now_ms {
            self.touched_ms.store(now_ms, Relaxed);
        }
    }

    /// Whether the series was removed from its family: counting into it is lost.
    pub fn is_expired(&self) -> bool {
        self.expired.load(Relaxed)
    }
}

/// The global part of the budget, shared by the tables of one aggregator.
#[derive(Debug)]
pub struct Budget {
    limits: SeriesLimits,
    /// Number of tables drawing on this budget (each reserves one overflow slot).
    tables: usize,
    /// Admitted (non-overflow) series across tables.
    admitted: usize,
}

impl Budget {
    /// A budget for `tables` metrics.
    pub fn new(limits: SeriesLimits, tables: usize) -> Self {
        Self { limits, tables, admitted: 0 }
    }

    /// The limits in force.
    pub fn limits(&self) -> SeriesLimits {
        self.limits
    }

    fn has_room(&self) -> bool {
        self.admitted + self.tables < self.limits.max_series
    }
}

/// Bounded set of recently refused label-set hashes, oldest evicted first.
#[derive(Debug, Default)]
struct RecentSet {
    set: HashSet<u64>,
    order: VecDeque<u64>,
}

impl RecentSet {
    /// Inserts `h`; true if it was not already there.
    fn insert(&mut self, h: u64) -> bool {
        if !self.set.insert(h) {
            return false;
        }
        self.order.push_back(h);
        if self.order.len() > RECENT_REFUSALS {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        true
    }
}

/// The live series of one family, and the budget bookkeeping for it.
#[derive(Debug)]
pub struct SeriesTable<L, M, C = fn() -> M> {
    name: String,
    family: Family<L, M, C>,
    live: HashMap<L, Arc<Series<M>>>,
    overflow_labels: L,
    overflow: Option<Arc<Series<M>>>,
    refusals: RecentSet,
    hasher: RandomState,
    overflow_events: Counter,
    refused: Counter,
    expired: Counter,
    gauge: Gauge,
}

impl<L, M, C> SeriesTable<L, M, C>
where
    L: Clone + Hash + Eq,
    M: Clone,
    C: MetricConstructor<M>,
{
    /// A table serving `family`, whose self-metrics carry `metric="<name>"`.
    pub fn new(name: &str, family: Family<L, M, C>, overflow_labels: L, metrics: &Metrics) -> Self {
        let label = MetricLabels { metric: name.to_owned() };
        let gauge = metrics.series.get_or_create(&label).clone();
        gauge.set(0);
        Self {
            name: name.to_owned(),
            family,
            live: HashMap::new(),
            overflow_labels,
            overflow: None,
            refusals: RecentSet::default(),
            hasher: RandomState::new(),
            overflow_events: metrics.series_overflow_events.get_or_create(&label).clone(),
            refused: metrics.series_refused.get_or_create(&label).clone(),
            expired: metrics.series_expired.get_or_create(&label).clone(),
            gauge,
        }
    }

    /// The series for `labels`: the live one, a newly admitted one, or the
    /// overflow series when the budget is spent (the refusal is counted).
    pub fn get_or_admit(&mut self, labels: L, budget: &mut Budget, now_ms: u64) -> Arc<Series<M>> {
        if let Some(s) = self.live.get(&labels) {
            return Arc::clone(s);
        }
        if self.live.len() + 1 < budget.limits.max_per_metric && budget.has_room() {
            let handle = self.family.get_or_create_owned(&labels);
            let s = Arc::new(Series::new(handle, false, now_ms));
            self.live.insert(labels, Arc::clone(&s));
            budget.admitted += 1;
            self.update_gauge();
            return s;
        }
        if self.refusals.insert(self.hasher.hash_one(&labels)) {
            let n = self.refused.inc() + 1;
            if n.is_power_of_two() {
                warn!(metric = %self.name, refused = n, "Series budget spent; new label sets are counted into the overflow series.");
            }
        }
        self.overflow_series(now_ms)
    }

    fn overflow_series(&mut self, now_ms: u64) -> Arc<Series<M>> {
        if let Some(s) = &self.overflow {
            return Arc::clone(s);
        }
        let handle = self.family.get_or_create_owned(&self.overflow_labels);
        let s = Arc::new(Series::new(handle, true, now_ms));
        self.overflow = Some(Arc::clone(&s));
        self.update_gauge();
        s
    }

    /// Counts one event folded into the overflow series (per event: one atomic add).
    #[inline]
    pub fn count_overflow(&self) {
        self.overflow_events.inc();
    }

    /// Removes every series last counted into `ttl_ms` or more before `now_ms`;
    /// returns how many were removed.
    pub fn expire(&mut self, budget: &mut Budget, now_ms: u64, ttl_ms: u64) -> usize {
        let stale = |s: &Series<M>| now_ms.saturating_sub(s.touched_ms.load(Relaxed)) >= ttl_ms;
        let family = &self.family;
        let mut removed = 0;
        self.live.retain(|labels, s| {
            if !stale(s) {
                return true;
            }
            family.remove(labels);
            s.expired.store(true, Relaxed);
            removed += 1;
            false
        });
        budget.admitted -= removed;
        if self.overflow.as_deref().is_some_and(stale) {
            if let Some(s) = self.overflow.take() {
                self.family.remove(&self.overflow_labels);
                s.expired.store(true, Relaxed);
                removed += 1;
            }
        }
        if removed > 0 {
            self.expired.inc_by(removed as u64);
            self.update_gauge();
        }
        removed
    }

    /// Live series, the overflow series included.
    pub fn len(&self) -> usize {
        self.live.len() + usize::from(self.overflow.is_some())
    }

    /// Whether the table has no series.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn update_gauge(&self) {
        self.gauge.set(self.len() as i64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::KindLabels;

    fn table(m: &Metrics) -> SeriesTable<KindLabels, Counter> {
        SeriesTable::new("t", Family::default(), KindLabels { kind: OVERFLOW.into() }, m)
    }

    fn k(i: usize) -> KindLabels {
        KindLabels { kind: i.to_string() }
    }

    fn metric(f: &Family<MetricLabels, Counter>) -> u64 {
        f.get_or_create(&MetricLabels { metric: "t".into() }).get()
    }

    #[test]
    fn per_metric_cap_includes_the_overflow_series() {
        let m = Metrics::default();
        let mut t = table(&m);
        let mut b = Budget::new(SeriesLimits { max_per_metric: 4, ..SeriesLimits::default() }, 1);
        for i in 0..10 {
            let s = t.get_or_admit(k(i), &mut b, 0);
            assert_eq!(s.overflow, i >= 3, "series {i}");
        }
        assert_eq!(t.len(), 4);
        assert_eq!(metric(&m.series_refused), 7);
        // Refused again: not counted again.
        t.get_or_admit(k(9), &mut b, 0);
        assert_eq!(metric(&m.series_refused), 7);
        // An admitted one is found again.
        assert!(!t.get_or_admit(k(1), &mut b, 0).overflow);
        assert_eq!(m.series.get_or_create(&MetricLabels { metric: "t".into() }).get(), 4);
    }

    #[test]
    fn global_cap_reserves_one_overflow_slot_per_table() {
        let m = Metrics::default();
        let (mut a, mut c) = (table(&m), table(&m));
        let mut b = Budget::new(SeriesLimits { max_series: 6, ..SeriesLimits::default() }, 2);
        for i in 0..10 {
            a.get_or_admit(k(i), &mut b, 0);
        }
        for i in 0..10 {
            c.get_or_admit(k(i), &mut b, 0);
        }
        assert_eq!((a.len(), c.len()), (5, 1), "a took 4 + overflow, c only its overflow");
        assert_eq!(a.len() + c.len(), 6);
    }

    #[test]
    fn expiry_frees_the_budget_and_marks_handles() {
        let m = Metrics::default();
        let mut t = table(&m);
        let mut b = Budget::new(SeriesLimits { max_per_metric: 3, ..SeriesLimits::default() }, 1);
        let old = t.get_or_admit(k(0), &mut b, 0);
        let fresh = t.get_or_admit(k(1), &mut b, 0);
        let over = t.get_or_admit(k(2), &mut b, 0);
        assert!(over.overflow);
        fresh.touch(900);
        assert_eq!(t.expire(&mut b, 1000, 1000), 2, "the old series and the overflow series");
        assert!(old.is_expired() && over.is_expired() && !fresh.is_expired());
        assert_eq!(t.len(), 1);
        assert!(!t.get_or_admit(k(2), &mut b, 1000).overflow, "room again");
        assert!(t.family.get(&k(0)).is_none());
    }

    #[test]
    fn recent_refusals_are_bounded() {
        let mut r = RecentSet::default();
        for h in 0..(RECENT_REFUSALS as u64 + 10) {
            assert!(r.insert(h));
        }
        assert_eq!((r.set.len(), r.order.len()), (RECENT_REFUSALS, RECENT_REFUSALS));
        assert!(r.insert(0), "the oldest was evicted");
        assert!(!r.insert(RECENT_REFUSALS as u64 + 9));
    }
}
