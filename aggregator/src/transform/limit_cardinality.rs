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
//! * Label sets are compared as the text they are written out as
//!   ([`LabelSet::write_text`]): the text is made once per admission check,
//!   and an admitted series keeps it (`sink::families`).
//!
//! Nothing here runs per event: admission runs once per handle-cache miss, and
//! the per-event cost is [`Series::touch`] (one relaxed load, rarely a store).

use std::{
    collections::{HashSet, VecDeque},
    hash::{BuildHasher, RandomState},
    sync::Arc,
    time::Duration,
};

use prometheus_client::metrics::{counter::Counter, gauge::Gauge};

use tracing::warn;

pub use crate::sink::families::Series;
use crate::{
    metrics::{MetricLabels, Metrics},
    sink::families::{Family, LabelSet, Value},
};

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
pub struct SeriesTable<V> {
    family: Arc<Family<V>>,
    /// Label text of the overflow series.
    overflow_labels: String,
    overflow: Option<Arc<Series<V>>>,
    /// Admitted (non-overflow) series.
    admitted: usize,
    /// Scratch buffer for label text (admission only).
    scratch: String,
    refusals: RecentSet,
    hasher: RandomState,
    overflow_events: Counter,
    refused: Counter,
    expired: Counter,
    gauge: Gauge,
}

impl<V: Value> SeriesTable<V> {
    /// A table admitting series into `family`, whose self-metrics carry
    /// `metric="<name>"`; the overflow series has `overflow_labels`.
    pub fn new(
        name: &str,
        family: Arc<Family<V>>,
        overflow_labels: &impl LabelSet,
        metrics: &Metrics,
    ) -> Self {
        let label = MetricLabels { metric: name.to_owned() };
        let gauge = metrics.series.get_or_create(&label).clone();
        gauge.set(0);
        let mut text = String::new();
        overflow_labels.write_text(&mut text);
        Self {
            family,
            overflow_labels: text,
            overflow: None,
            admitted: 0,
            scratch: String::new(),
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
    pub fn get_or_admit(
        &mut self,
        labels: &impl LabelSet,
        budget: &mut Budget,
        now_ms: u64,
    ) -> Arc<Series<V>> {
        self.scratch.clear();
        labels.write_text(&mut self.scratch);
        if self.scratch != self.overflow_labels {
            if let Some(s) = self.family.get_text(&self.scratch) {
                return s;
            }
            if self.admitted + 1 < budget.limits.max_per_metric && budget.has_room() {
                let s = self.family.get_or_create(&self.scratch, false, now_ms);
                self.admitted += 1;
                budget.admitted += 1;
                self.update_gauge();
                return s;
            }
        }
        if self.refusals.insert(self.hasher.hash_one(self.scratch.as_str())) {
            let n = self.refused.inc() + 1;
            if n.is_power_of_two() {
                warn!(metric = %self.family.name(), refused = n, "Series budget spent; new label sets are counted into the overflow series.");
            }
        }
        self.overflow_series(now_ms)
    }

    fn overflow_series(&mut self, now_ms: u64) -> Arc<Series<V>> {
        if let Some(s) = &self.overflow {
            return Arc::clone(s);
        }
        let s = self.family.get_or_create(&self.overflow_labels, true, now_ms);
        self.overflow = Some(Arc::clone(&s));
        self.update_gauge();
        s
    }

    /// Counts one event folded into the overflow series (per event: one atomic add).
    #[inline]
    pub fn count_overflow(&self) {
        self.overflow_events.inc();
    }

    /// [`Self::count_overflow`] for `n` events at once (kernel totals).
    pub fn count_overflow_by(&self, n: u64) {
        self.overflow_events.inc_by(n);
    }

    /// Removes every series last counted into `ttl_ms` or more before `now_ms`
    /// (from the family, so from `/metrics`; their handles are marked
    /// expired); returns how many were removed.
    pub fn expire(&mut self, budget: &mut Budget, now_ms: u64, ttl_ms: u64) -> usize {
        let removed = self.family.remove_where(|s| now_ms.saturating_sub(s.touched_ms()) >= ttl_ms);
        let overflow_removed = removed.iter().filter(|s| s.overflow).count();
        let admitted_removed = removed.len() - overflow_removed;
        self.admitted -= admitted_removed;
        budget.admitted -= admitted_removed;
        if overflow_removed > 0 {
            self.overflow = None;
        }
        if !removed.is_empty() {
            self.expired.inc_by(removed.len() as u64);
            self.update_gauge();
        }
        removed.len()
    }

    /// Live series, the overflow series included.
    pub fn len(&self) -> usize {
        self.admitted + usize::from(self.overflow.is_some())
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
    use prometheus_client::metrics::family::Family as ClientFamily;

    use super::*;
    use crate::sink::families::{push_label, CounterValue};

    struct K(String);

    impl LabelSet for K {
        fn write_text(&self, out: &mut String) {
            push_label(out, "kind", &self.0);
        }
    }

    fn table(m: &Metrics) -> SeriesTable<CounterValue> {
        SeriesTable::new("t", Arc::new(Family::new("t", "Test.")), &K(OVERFLOW.into()), m)
    }

    fn k(i: usize) -> K {
        K(i.to_string())
    }

    fn metric(f: &ClientFamily<MetricLabels, Counter>) -> u64 {
        f.get_or_create(&MetricLabels { metric: "t".into() }).get()
    }

    #[test]
    fn per_metric_cap_includes_the_overflow_series() {
        let m = Metrics::default();
        let mut t = table(&m);
        let mut b = Budget::new(SeriesLimits { max_per_metric: 4, ..SeriesLimits::default() }, 1);
        for i in 0..10 {
            let s = t.get_or_admit(&k(i), &mut b, 0);
            assert_eq!(s.overflow, i >= 3, "series {i}");
        }
        assert_eq!(t.len(), 4);
        assert_eq!(metric(&m.series_refused), 7);
        // Refused again: not counted again.
        t.get_or_admit(&k(9), &mut b, 0);
        assert_eq!(metric(&m.series_refused), 7);
        // An admitted one is found again.
        assert!(!t.get_or_admit(&k(1), &mut b, 0).overflow);
        assert_eq!(m.series.get_or_create(&MetricLabels { metric: "t".into() }).get(), 4);
    }

    #[test]
    fn global_cap_reserves_one_overflow_slot_per_table() {
        let m = Metrics::default();
        let (mut a, mut c) = (table(&m), table(&m));
        let mut b = Budget::new(SeriesLimits { max_series: 6, ..SeriesLimits::default() }, 2);
        for i in 0..10 {
            a.get_or_admit(&k(i), &mut b, 0);
        }
        for i in 0..10 {
            c.get_or_admit(&k(i), &mut b, 0);
        }
        assert_eq!((a.len(), c.len()), (5, 1), "a took 4 + overflow, c only its overflow");
        assert_eq!(a.len() + c.len(), 6);
    }

    #[test]
    fn expiry_frees_the_budget_and_marks_handles() {
        let m = Metrics::default();
        let mut t = table(&m);
        let mut b = Budget::new(SeriesLimits { max_per_metric: 3, ..SeriesLimits::default() }, 1);
        let old = t.get_or_admit(&k(0), &mut b, 0);
        let fresh = t.get_or_admit(&k(1), &mut b, 0);
        let over = t.get_or_admit(&k(2), &mut b, 0);
        assert!(over.overflow);
        fresh.touch(900);
        assert_eq!(t.expire(&mut b, 1000, 1000), 2, "the old series and the overflow series");
        assert!(old.is_expired() && over.is_expired() && !fresh.is_expired());
        assert_eq!(t.len(), 1);
        assert!(!t.get_or_admit(&k(2), &mut b, 1000).overflow, "room again");
        assert!(t.family.get(&k(0)).is_none());
        assert_eq!(t.family.len(), 2, "the fresh series and the one admitted again");
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
