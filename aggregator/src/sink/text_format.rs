// SPDX-License-Identifier: Apache-2.0
//! Exposition formats and the `/metrics` body ([`Chunks`]).
//!
//! The product families are written by `sink::families` directly in either
//! format. The self-metrics are a `prometheus-client` registry, which encodes
//! OpenMetrics; scrapers that do not ask for OpenMetrics get them in the
//! Prometheus text format 0.0.4, derived by a line transform:
//!
//! * counter families are named with their `_total` suffix in `# HELP`/`# TYPE`
//!   (OpenMetrics names the family without it, 0.0.4 names the sample);
//! * `# UNIT` lines and the `# EOF` terminator are removed;
//! * exemplars (` # {...} value`) are removed from sample lines;
//! * `info` families become `gauge`, `unknown` become `untyped`.

use std::{collections::HashSet, sync::Arc};

use prometheus_client::registry::Registry;

pub use super::families::Format;
use super::families::{CounterValue, Family, HistogramValue, Series, Value};
use crate::metrics::Metrics;

/// Content type of OpenMetrics text 1.0.
pub const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// Content type of the Prometheus text format.
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Bytes a [`Chunks`] chunk grows to before it is handed out.
pub const CHUNK_BYTES: usize = 64 * 1024;

/// The `/metrics` body in chunks of about [`CHUNK_BYTES`], written as they are
/// taken: the self-metrics of a registry, then the product families, in one
/// format. A scrape holds the self-metrics text, a snapshot of the series
/// handles (8 bytes per series) and one chunk, never the whole body, however
/// many series there are and however many scrapes run at once.
pub struct Chunks {
    format: Format,
    own: Option<String>,
    tcp: Part<CounterValue>,
    http: Part<HistogramValue>,
    stage: Stage,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Tcp,
    Http,
    Eof,
    Done,
}

/// One family being written out from a snapshot of its series.
struct Part<V> {
    family: Arc<Family<V>>,
    series: std::vec::IntoIter<Arc<Series<V>>>,
    header_written: bool,
}

impl<V: Value> Part<V> {
    fn new(family: &Arc<Family<V>>) -> Self {
        Self { family: Arc::clone(family), series: family.snapshot().into_iter(), header_written: false }
    }

    /// Writes until `out` holds [`CHUNK_BYTES`]; true once the family is complete.
    fn fill(&mut self, format: Format, out: &mut String) -> bool {
        if !self.header_written {
            self.family.write_header(format, out);
            self.header_written = true;
        }
        while out.len() < CHUNK_BYTES {
            match self.series.next() {
                Some(s) => self.family.write_series(&s, format, out),
                None => return true,
            }
        }
        false
    }
}

impl Chunks {
    /// Encodes the self-metrics now and snapshots the product families' series.
    pub fn new(registry: &Registry, metrics: &Metrics, format: Format) -> Result<Self, std::fmt::Error> {
        let mut own = String::with_capacity(16 * 1024);
        prometheus_client::encoding::text::encode(&mut own, registry)?;
        let own = match format {
            Format::OpenMetrics => own.strip_suffix("# EOF\n").map(str::to_owned).unwrap_or(own),
            Format::Prometheus => openmetrics_to_prometheus(&own),
        };
        Ok(Self {
            format,
            own: Some(own),
            tcp: Part::new(&metrics.tcp_retransmits.0),
            http: Part::new(&metrics.http_duration.0),
            stage: Stage::Tcp,
        })
    }
}

impl std::fmt::Debug for Chunks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chunks")
            .field("format", &self.format)
            .field("stage", &self.stage)
            .finish_non_exhaustive()
    }
}

impl Iterator for Chunks {
    type Item = String;

    fn next(&mut self) -> Option<String> {
        if self.stage == Stage::Done {
            return None;
        }
        let mut out = self.own.take().unwrap_or_else(|| String::with_capacity(CHUNK_BYTES + 4096));
        loop {
            match self.stage {
                Stage::Tcp if self.tcp.fill(self.format, &mut out) => self.stage = Stage::Http,
                Stage::Http if self.http.fill(self.format, &mut out) => self.stage = Stage::Eof,
                Stage::Eof => {
                    if self.format == Format::OpenMetrics {
                        out.push_str("# EOF\n");
                    }
                    self.stage = Stage::Done;
                }
                _ => break,
            }
        }
        Some(out)
    }
}

/// The whole `/metrics` body at once (tests and tools; `/metrics` streams [`Chunks`]).
pub fn encode(registry: &Registry, metrics: &Metrics, format: Format) -> Result<String, std::fmt::Error> {
    Ok(Chunks::new(registry, metrics, format)?.collect())
}

/// The format an `Accept` header asks for.
pub fn negotiate(accept: Option<&str>) -> Format {
    if wants_openmetrics(accept) {
        Format::OpenMetrics
    } else {
        Format::Prometheus
    }
}

/// Whether an `Accept` header asks for OpenMetrics.
pub fn wants_openmetrics(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| a.split(',').any(|part| part.trim().starts_with("application/openmetrics-text")))
}

/// Converts OpenMetrics text (as `prometheus-client` writes it) to Prometheus text 0.0.4.
pub fn openmetrics_to_prometheus(om: &str) -> String {
    let counters: HashSet<&str> = om
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(om.len());
    for line in om.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            let suffix = if counters.contains(name) { "_total" } else { "" };
            out.push_str(&format!("# HELP {name}{suffix} {help}\n"));
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, ty) = rest.split_once(' ').unwrap_or((rest, "untyped"));
            let (name_suffix, ty) = match ty {
                "counter" => ("_total", "counter"),
                "info" => ("_info", "gauge"),
                "unknown" => ("", "untyped"),
                other => ("", other),
            };
            out.push_str(&format!("# TYPE {name}{name_suffix} {ty}\n"));
        } else {
            // Exemplars follow ` # ` after the value. Label values may hold `}`
            // and ` # ` (a pods file may name a service anything), so search
            // only after the closing brace of the label set.
            let body_start = labels_end(line);
            match line[body_start..].find(" # ") {
                Some(i) => out.push_str(&line[..body_start + i]),
                None => out.push_str(line),
            }
            out.push('\n');
        }
    }
    out
}

/// Byte offset just past a sample line's label set (`{...}`), skipping quoted
/// label values with their `\\` escapes; 0 when the sample has no labels.
fn labels_end(line: &str) -> usize {
    let bytes = line.as_bytes();
    let Some(open) = line.find(['{', ' ']).filter(|&i| bytes[i] == b'{') else {
        return 0;
    };
    let (mut in_quotes, mut escaped) = (false, false);
    for (i, &b) in bytes.iter().enumerate().skip(open + 1) {
        match (in_quotes, escaped, b) {
            (true, true, _) => escaped = false,
            (true, false, b'\\') => escaped = true,
            (_, false, b'"') => in_quotes = !in_quotes,
            (false, _, b'}') => return i + 1,
            _ => {}
        }
    }
    line.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression (guarded by the fuzz target `exposition`): a label value holding `}` and
    /// ` # ` cut the sample line in half.
    #[test]
    fn label_values_with_braces_and_hashes_stay_whole() {
        let om = "# TYPE c counter\nc_total{service=\"a} # b\",pod=\"x\\\"} # y\"} 7\n\
                  h_bucket{le=\"0.1\",s=\"} # \"} 1 # {trace_id=\"ab\"} 0.05\nplain 3 # {a=\"b\"} 1\n# EOF\n";
        let p = openmetrics_to_prometheus(om);
        assert_eq!(
            p,
            "# TYPE c_total counter\nc_total{service=\"a} # b\",pod=\"x\\\"} # y\"} 7\n\
             h_bucket{le=\"0.1\",s=\"} # \"} 1\nplain 3\n"
        );
        assert_eq!(labels_end("x 1"), 0);
        assert_eq!(labels_end("x{a=\"}\"} 1"), 8);
        assert_eq!(labels_end("x{a=\"unterminated"), 17);
    }

    #[test]
    fn the_body_comes_in_bounded_chunks_that_add_up_to_the_whole() {
        let m = Metrics::default();
        for i in 0..5000 {
            m.tcp_retransmits
                .0
                .get_or_create(&format!("pod=\"p{i}\",dest_port=\"80\""), false, 0)
                .value
                .inc_by(1);
        }
        m.http_duration.0.get_or_create("pod=\"p\"", false, 0).value.observe(0.1, None);
        let registry = m.register();
        for format in [Format::OpenMetrics, Format::Prometheus] {
            let chunks: Vec<String> = Chunks::new(&registry, &m, format).unwrap().collect();
            assert!(chunks.len() > 4, "{format:?}: {} chunks", chunks.len());
            let (last, full) = chunks.split_last().unwrap();
            for c in full {
                assert!(
                    (CHUNK_BYTES..CHUNK_BYTES + 256).contains(&c.len()),
                    "{format:?}: chunk of {}",
                    c.len()
                );
                assert!(c.ends_with('\n'), "{format:?}: a chunk ends within a line");
            }
            let mut own = String::new();
            prometheus_client::encoding::text::encode(&mut own, &registry).unwrap();
            let own = match format {
                Format::OpenMetrics => own.strip_suffix("# EOF\n").unwrap().to_owned(),
                Format::Prometheus => openmetrics_to_prometheus(&own),
            };
            let mut whole = own;
            m.tcp_retransmits.0.write(format, &mut whole);
            m.http_duration.0.write(format, &mut whole);
            if format == Format::OpenMetrics {
                whole.push_str("# EOF\n");
            }
            assert_eq!(chunks.concat(), whole, "{format:?}");
            assert!(last.len() < CHUNK_BYTES, "{format:?}");
        }
    }

    #[test]
    fn negotiates() {
        assert!(wants_openmetrics(Some(
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
        )));
        assert!(!wants_openmetrics(Some("text/plain;version=0.0.4")));
        assert!(!wants_openmetrics(None));
    }

    #[test]
    fn converts_counters_exemplars_and_eof() {
        let om = "# HELP a_requests Requests.\n# TYPE a_requests counter\na_requests_total{x=\"1 # 2\"} 3\n\
                  # HELP b Gauge.\n# TYPE b gauge\nb 1\n\
                  # HELP h Hist.\n# TYPE h histogram\n# UNIT h seconds\nh_bucket{le=\"0.1\"} 1 # {trace_id=\"ab\"} 0.05 1.0\n# EOF\n";
        let p = openmetrics_to_prometheus(om);
        assert_eq!(
            p,
            "# HELP a_requests_total Requests.\n# TYPE a_requests_total counter\na_requests_total{x=\"1 # 2\"} 3\n\
             # HELP b Gauge.\n# TYPE b gauge\nb 1\n\
             # HELP h Hist.\n# TYPE h histogram\nh_bucket{le=\"0.1\"} 1\n"
        );
    }
}
