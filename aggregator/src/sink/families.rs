// SPDX-License-Identifier: Apache-2.0
//! The product metric families (`node_tcp_retransmits_total`,
//! `http_request_duration_seconds`): their series and how they are written out.
//!
//! They can hold up to `--max-series` series (100k and more), so they are not
//! `prometheus-client` families, which format every label set anew at every
//! scrape and keep each label string twice. Here a series' label set is
//! escaped and written out once, when the series is created, and kept as that
//! text ([`Series::labels`]); a scrape copies the text and formats only the
//! numbers. The family keeps its series in creation order, so a scrape walks
//! memory mostly in allocation order.
//!
//! Writers are the aggregator's event path (through cached [`Series`] handles:
//! atomic adds, no lock) and the series budget (`transform::limit_cardinality`,
//! which creates and removes series under the family's write lock); the reader
//! is `/metrics`, under the read lock.

use std::{
    borrow::Borrow,
    hash::{Hash, Hasher},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
        Arc, Mutex, RwLock,
    },
};

use crate::metrics::HTTP_BUCKETS;

/// Which exposition format to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// OpenMetrics text 1.0 (exemplars included).
    OpenMetrics,
    /// Prometheus text 0.0.4.
    Prometheus,
}

/// A label set that can write itself as exposition text.
pub trait LabelSet {
    /// Appends `name="value",...` (values escaped, no braces) to `out`.
    fn write_text(&self, out: &mut String);
}

/// Appends `name="value"` to a label text, preceded by a comma unless it is
/// the first label. The value is escaped as both formats require: `\` as
/// `\\`, `"` as `\"` and a line feed as `\n`.
pub fn push_label(out: &mut String, name: &str, value: &str) {
    if !out.is_empty() {
        out.push(',');
    }
    out.push_str(name);
    out.push_str("=\"");
    let mut rest = value;
    while let Some(i) = rest.find(['\\', '"', '\n']) {
        out.push_str(&rest[..i]);
        out.push_str(match rest.as_bytes()[i] {
            b'\\' => "\\\\",
            b'"' => "\\\"",
            _ => "\\n",
        });
        rest = &rest[i + 1..];
    }
    out.push_str(rest);
    out.push('"');
}

/// The value of one series and how it is written out.
pub trait Value: Default + Send + Sync {
    /// The family's `# TYPE`.
    const TYPE: &'static str;
    /// Suffix of the family name in the Prometheus text format's `# HELP` and
    /// `# TYPE` lines (counters are named with `_total` there).
    const TEXT_SUFFIX: &'static str;
    /// Appends the sample lines of one series.
    fn write(&self, name: &str, labels: &str, format: Format, out: &mut String);
}

/// A monotonic counter.
#[derive(Debug, Default)]
pub struct CounterValue(AtomicU64);

impl CounterValue {
    /// Adds `n`.
    #[inline]
    pub fn inc_by(&self, n: u64) {
        self.0.fetch_add(n, Relaxed);
    }

    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

impl Value for CounterValue {
    const TYPE: &'static str = "counter";
    const TEXT_SUFFIX: &'static str = "_total";

    fn write(&self, name: &str, labels: &str, _: Format, out: &mut String) {
        sample_start(out, name, "_total", labels, None);
        out.push_str(itoa::Buffer::new().format(self.get()));
        out.push('\n');
    }
}

/// Bucket upper bounds of [`HistogramValue`] as written in `le` (the `+Inf`
/// bucket is the last).
const LE: [&str; HTTP_BUCKETS.len() + 1] = [
    "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1.0", "2.5", "5.0", "10.0",
    "+Inf",
];

/// An exemplar: the trace a bucket's latest traced observation belonged to.
#[derive(Debug, Clone, Copy)]
struct Exemplar {
    trace_id: [u8; 16],
    value: f64,
}

/// A histogram over [`HTTP_BUCKETS`] with one trace-id exemplar per bucket.
#[derive(Debug, Default)]
pub struct HistogramValue {
    /// Observations per bucket (not cumulative); the last is `+Inf`.
    buckets: [AtomicU64; HTTP_BUCKETS.len() + 1],
    /// Sum of the observations, as `f64` bits.
    sum: AtomicU64,
    /// Exemplars, allocated with the first one (most series never get any).
    exemplars: Mutex<Option<Box<[Option<Exemplar>; HTTP_BUCKETS.len() + 1]>>>,
}

impl HistogramValue {
    /// Records one observation (seconds) and, with a trace id, makes it its
    /// bucket's exemplar.
    pub fn observe(&self, seconds: f64, trace_id: Option<&[u8; 16]>) {
        let i = HTTP_BUCKETS.iter().position(|&le| seconds <= le).unwrap_or(HTTP_BUCKETS.len());
        self.buckets[i].fetch_add(1, Relaxed);
        // One writer at a time in practice (the aggregator's event path), but
        // stay exact even if not.
        let _ = self.sum.fetch_update(Relaxed, Relaxed, |b| Some((f64::from_bits(b) + seconds).to_bits()));
        if let Some(id) = trace_id {
            let mut ex = self.exemplars.lock().unwrap_or_else(|e| e.into_inner());
            ex.get_or_insert_with(|| Box::new([None; HTTP_BUCKETS.len() + 1]))[i] =
                Some(Exemplar { trace_id: *id, value: seconds });
        }
    }

    /// Adds counts per bucket (not cumulative; the last is `+Inf`) and
    /// their sum: the growth of the kernel's totals.
    pub fn add(&self, buckets: &[u64; HTTP_BUCKETS.len() + 1], sum_seconds: f64) {
        for (b, n) in self.buckets.iter().zip(buckets) {
            if *n > 0 {
                b.fetch_add(*n, Relaxed);
            }
        }
        let _ =
            self.sum.fetch_update(Relaxed, Relaxed, |b| Some((f64::from_bits(b) + sum_seconds).to_bits()));
    }

    /// Makes `trace_id` the exemplar of the bucket of `seconds`, counting
    /// nothing (the observation was counted through [`Self::add`]).
    pub fn exemplar(&self, seconds: f64, trace_id: &[u8; 16]) {
        let i = HTTP_BUCKETS.iter().position(|&le| seconds <= le).unwrap_or(HTTP_BUCKETS.len());
        let mut ex = self.exemplars.lock().unwrap_or_else(|e| e.into_inner());
        ex.get_or_insert_with(|| Box::new([None; HTTP_BUCKETS.len() + 1]))[i] =
            Some(Exemplar { trace_id: *trace_id, value: seconds });
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Relaxed)).sum()
    }

    /// Sum of the observations.
    pub fn sum(&self) -> f64 {
        f64::from_bits(self.sum.load(Relaxed))
    }
}

impl Value for HistogramValue {
    const TYPE: &'static str = "histogram";
    const TEXT_SUFFIX: &'static str = "";

    /// Buckets, then `_count` and `_sum`. `_count` is the `+Inf` bucket as
    /// written, so the two always agree; `_sum` is read separately and may
    /// already include an observation a concurrent event just added.
    fn write(&self, name: &str, labels: &str, format: Format, out: &mut String) {
        let guard = match format {
            Format::OpenMetrics => Some(self.exemplars.lock().unwrap_or_else(|e| e.into_inner())),
            Format::Prometheus => None,
        };
        let exemplars = guard.as_ref().and_then(|g| g.as_deref());
        let mut itoa = itoa::Buffer::new();
        let mut dtoa = dtoa::Buffer::new();
        let mut cumulative = 0u64;
        for (i, (bucket, le)) in self.buckets.iter().zip(LE).enumerate() {
            cumulative += bucket.load(Relaxed);
            sample_start(out, name, "_bucket", labels, Some(le));
            out.push_str(itoa.format(cumulative));
            if let Some(ex) = exemplars.and_then(|e| e[i]) {
                out.push_str(" # {trace_id=\"");
                push_hex(out, &ex.trace_id);
                out.push_str("\"} ");
                out.push_str(dtoa.format(ex.value));
            }
            out.push('\n');
        }
        sample_start(out, name, "_count", labels, None);
        out.push_str(itoa.format(cumulative));
        out.push('\n');
        sample_start(out, name, "_sum", labels, None);
        out.push_str(dtoa.format(self.sum()));
        out.push('\n');
    }
}

/// Writes `name{labels[,le="le"]} ` (no braces without labels).
#[inline]
fn sample_start(out: &mut String, name: &str, suffix: &str, labels: &str, le: Option<&str>) {
    out.push_str(name);
    out.push_str(suffix);
    match (labels.is_empty(), le) {
        (true, None) => {}
        (_, Some(le)) => {
            out.push('{');
            out.push_str(labels);
            if !labels.is_empty() {
                out.push(',');
            }
            out.push_str("le=\"");
            out.push_str(le);
            out.push_str("\"}");
        }
        (false, None) => {
            out.push('{');
            out.push_str(labels);
            out.push('}');
        }
    }
    out.push(' ');
}

/// Lowercase hex of a trace id.
fn push_hex(out: &mut String, id: &[u8; 16]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in id {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
}

/// One series: its value, its label text and its budget bookkeeping.
#[derive(Debug)]
pub struct Series<V> {
    /// The value to count into.
    pub value: V,
    /// Whether this is its metric's overflow series.
    pub overflow: bool,
    /// The label set as written out (see [`LabelSet::write_text`]).
    labels: Box<str>,
    /// Milliseconds on the budget's clock (see `SeriesTable::expire`).
    touched_ms: AtomicU64,
    expired: AtomicBool,
}

impl<V> Series<V> {
    /// Marks the series as counted into at `now_ms`.
    #[inline]
    pub fn touch(&self, now_ms: u64) {
        if self.touched_ms.load(Relaxed) != now_ms {
            self.touched_ms.store(now_ms, Relaxed);
        }
    }

    /// When the series was last counted into.
    pub fn touched_ms(&self) -> u64 {
        self.touched_ms.load(Relaxed)
    }

    /// Whether the series was removed from its family: counting into it is lost.
    pub fn is_expired(&self) -> bool {
        self.expired.load(Relaxed)
    }
}

/// A series keyed by its label text in the family's index.
struct Key<V>(Arc<Series<V>>);

impl<V> Borrow<str> for Key<V> {
    fn borrow(&self) -> &str {
        &self.0.labels
    }
}

impl<V> Hash for Key<V> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // Must hash exactly as `str` does (`Borrow<str>`).
        self.0.labels.hash(state);
    }
}

impl<V> PartialEq for Key<V> {
    fn eq(&self, other: &Self) -> bool {
        self.0.labels == other.0.labels
    }
}

impl<V> Eq for Key<V> {}

struct Inner<V> {
    /// Series by label text.
    index: std::collections::HashSet<Key<V>>,
    /// The same series in creation order (what a scrape walks).
    order: Vec<Arc<Series<V>>>,
}

/// A metric family whose series are created and removed by one owner (the
/// series budget) and read by scrapes.
pub struct Family<V> {
    /// The family name (OpenMetrics: without `_total`).
    name: &'static str,
    help: &'static str,
    inner: RwLock<Inner<V>>,
}

impl<V> std::fmt::Debug for Family<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Family").field("name", &self.name).finish_non_exhaustive()
    }
}

impl<V: Value> Family<V> {
    /// An empty family.
    pub fn new(name: &'static str, help: &'static str) -> Self {
        Self {
            name,
            help,
            inner: RwLock::new(Inner { index: std::collections::HashSet::new(), order: Vec::new() }),
        }
    }

    /// The family name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    fn lock_read(&self) -> std::sync::RwLockReadGuard<'_, Inner<V>> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_write(&self) -> std::sync::RwLockWriteGuard<'_, Inner<V>> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    /// The series with this label text.
    pub fn get_text(&self, labels: &str) -> Option<Arc<Series<V>>> {
        self.lock_read().index.get(labels).map(|k| Arc::clone(&k.0))
    }

    /// The series with these labels.
    pub fn get(&self, labels: &impl LabelSet) -> Option<Arc<Series<V>>> {
        let mut text = String::new();
        labels.write_text(&mut text);
        self.get_text(&text)
    }

    /// The series with this label text, created (touched at `now_ms`) if absent.
    pub fn get_or_create(&self, labels: &str, overflow: bool, now_ms: u64) -> Arc<Series<V>> {
        if let Some(s) = self.get_text(labels) {
            return s;
        }
        let mut inner = self.lock_write();
        if let Some(k) = inner.index.get(labels) {
            return Arc::clone(&k.0);
        }
        let s = Arc::new(Series {
            value: V::default(),
            overflow,
            labels: labels.into(),
            touched_ms: AtomicU64::new(now_ms),
            expired: AtomicBool::new(false),
        });
        inner.index.insert(Key(Arc::clone(&s)));
        inner.order.push(Arc::clone(&s));
        s
    }

    /// Removes every series `keep` refuses and marks it expired (so cached
    /// handles can be dropped); returns the removed series.
    pub fn remove_where(&self, mut remove: impl FnMut(&Series<V>) -> bool) -> Vec<Arc<Series<V>>> {
        let mut inner = self.lock_write();
        let mut removed = Vec::new();
        inner.order.retain(|s| {
            if !remove(s) {
                return true;
            }
            s.expired.store(true, Relaxed);
            removed.push(Arc::clone(s));
            false
        });
        if !removed.is_empty() {
            inner.index.retain(|k| !k.0.is_expired());
            // Give memory back after a large expiry.
            if inner.order.capacity() > 2 * inner.order.len() + 1024 {
                inner.order.shrink_to_fit();
                inner.index.shrink_to_fit();
            }
        }
        removed
    }

    /// Live series.
    pub fn len(&self) -> usize {
        self.lock_read().order.len()
    }

    /// Whether the family has no series.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The live series, in creation order (for writing them out without
    /// holding the lock).
    pub fn snapshot(&self) -> Vec<Arc<Series<V>>> {
        self.lock_read().order.clone()
    }

    /// Appends the family's `# HELP` and `# TYPE` lines.
    pub fn write_header(&self, format: Format, out: &mut String) {
        let suffix = match format {
            Format::OpenMetrics => "",
            Format::Prometheus => V::TEXT_SUFFIX,
        };
        for (what, text) in [("HELP", self.help), ("TYPE", V::TYPE)] {
            out.push_str("# ");
            out.push_str(what);
            out.push(' ');
            out.push_str(self.name);
            out.push_str(suffix);
            out.push(' ');
            out.push_str(text);
            out.push('\n');
        }
    }

    /// Appends the sample lines of one of this family's series.
    pub fn write_series(&self, series: &Series<V>, format: Format, out: &mut String) {
        series.value.write(self.name, &series.labels, format, out);
    }

    /// Appends the family: `# HELP`, `# TYPE` and every series.
    pub fn write(&self, format: Format, out: &mut String) {
        self.write_header(format, out);
        for s in &self.lock_read().order {
            self.write_series(s, format, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Pair<'a>(&'a str, &'a str);

    impl LabelSet for Pair<'_> {
        fn write_text(&self, out: &mut String) {
            push_label(out, "a", self.0);
            push_label(out, "b", self.1);
        }
    }

    fn text(labels: &impl LabelSet) -> String {
        let mut s = String::new();
        labels.write_text(&mut s);
        s
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(text(&Pair("x", "")), r#"a="x",b="""#);
        assert_eq!(text(&Pair("q\"b\\n\nz", "} # 1")), r#"a="q\"b\\n\nz",b="} # 1""#);
    }

    #[test]
    fn counters_in_both_formats() {
        let f: Family<CounterValue> = Family::new("c", "Help.");
        f.get_or_create(&text(&Pair("1", "2")), false, 0).value.inc_by(3);
        f.get_or_create("", false, 0).value.inc_by(1);
        let mut om = String::new();
        f.write(Format::OpenMetrics, &mut om);
        assert_eq!(om, "# HELP c Help.\n# TYPE c counter\nc_total{a=\"1\",b=\"2\"} 3\nc_total 1\n");
        let mut p = String::new();
        f.write(Format::Prometheus, &mut p);
        assert_eq!(
            p,
            "# HELP c_total Help.\n# TYPE c_total counter\nc_total{a=\"1\",b=\"2\"} 3\nc_total 1\n"
        );
        assert_eq!(f.get(&Pair("1", "2")).map(|s| s.value.get()), Some(3));
        assert!(f.get(&Pair("1", "3")).is_none());
    }

    #[test]
    fn histogram_buckets_are_cumulative_with_exemplars_in_openmetrics_only() {
        let f: Family<HistogramValue> = Family::new("h", "Hist.");
        let s = f.get_or_create(r#"a="1""#, false, 0);
        s.value.observe(0.0005, None);
        s.value.observe(0.12, Some(&[0xab; 16]));
        s.value.observe(0.25, None);
        s.value.observe(11.0, None);
        assert_eq!((s.value.count(), s.value.sum()), (4, 0.0005 + 0.12 + 0.25 + 11.0));
        let mut om = String::new();
        f.write(Format::OpenMetrics, &mut om);
        let lines: Vec<&str> = om.lines().collect();
        assert_eq!(lines[2], r#"h_bucket{a="1",le="0.001"} 1"#);
        assert_eq!(lines[8], r#"h_bucket{a="1",le="0.1"} 1"#);
        assert_eq!(
            lines[9],
            format!(r#"h_bucket{{a="1",le="0.25"}} 3 # {{trace_id="{}"}} 0.12"#, "ab".repeat(16))
        );
        assert_eq!(lines[14], r#"h_bucket{a="1",le="10.0"} 3"#);
        assert_eq!(lines[15], r#"h_bucket{a="1",le="+Inf"} 4"#);
        assert_eq!(lines[16], r#"h_count{a="1"} 4"#);
        assert!(lines[17].starts_with(r#"h_sum{a="1"} 11.37"#), "{}", lines[17]);
        let mut p = String::new();
        f.write(Format::Prometheus, &mut p);
        assert!(p.starts_with("# HELP h Hist.\n# TYPE h histogram\n"), "{p}");
        assert!(!p.contains("trace_id"), "{p}");
        assert!(p.contains("h_bucket{a=\"1\",le=\"0.25\"} 3\n"), "{p}");
    }

    #[test]
    fn removal_marks_series_and_keeps_creation_order() {
        let f: Family<CounterValue> = Family::new("c", "Help.");
        let series: Vec<_> = (0..5).map(|i| f.get_or_create(&format!("i=\"{i}\""), false, i)).collect();
        let removed = f.remove_where(|s| s.touched_ms() % 2 == 1);
        assert_eq!(removed.len(), 2);
        assert!(series[1].is_expired() && series[3].is_expired() && !series[0].is_expired());
        assert!(f.get_text("i=\"1\"").is_none());
        assert_eq!(f.len(), 3);
        let again = f.get_or_create("i=\"1\"", false, 9);
        assert!(!Arc::ptr_eq(&again, &series[1]), "a removed series comes back new");
        let mut out = String::new();
        f.write(Format::OpenMetrics, &mut out);
        let order: Vec<&str> = out.lines().skip(2).collect();
        assert_eq!(
            order,
            ["c_total{i=\"0\"} 0", "c_total{i=\"2\"} 0", "c_total{i=\"4\"} 0", "c_total{i=\"1\"} 0"]
        );
    }
}
