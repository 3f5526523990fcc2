// SPDX-License-Identifier: Apache-2.0
//! Exposition formats and the `/metrics` body ([`encode`]).
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

use std::collections::HashSet;

use prometheus_client::registry::Registry;

pub use super::families::Format;
use crate::metrics::Metrics;

/// Content type of OpenMetrics text 1.0.
pub const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// Content type of the Prometheus text format.
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The `/metrics` body: the self-metrics in `registry`, then the product
/// families of `metrics`, in `format`.
pub fn encode(registry: &Registry, metrics: &Metrics, format: Format) -> Result<String, std::fmt::Error> {
    let mut own = String::with_capacity(16 * 1024);
    prometheus_client::encoding::text::encode(&mut own, registry)?;
    let own = match format {
        Format::OpenMetrics => own.strip_suffix("# EOF\n").map(str::to_owned).unwrap_or(own),
        Format::Prometheus => openmetrics_to_prometheus(&own),
    };
    let (tcp, http) = (&metrics.tcp_retransmits.0, &metrics.http_duration.0);
    let mut body = String::with_capacity(own.len() + tcp.size_hint() + http.size_hint() + 8);
    body.push_str(&own);
    tcp.write(format, &mut body);
    http.write(format, &mut body);
    if format == Format::OpenMetrics {
        body.push_str("# EOF\n");
    }
    Ok(body)
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
