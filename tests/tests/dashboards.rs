// SPDX-License-Identifier: Apache-2.0
//! The Grafana dashboards in deploy/grafana run against real data: a real
//! Prometheus (Debian's) scrapes a running nettel (loader + aggregator) every
//! second while HTTP traffic flows between two netns pods; then every PromQL
//! query of every panel, and the selector of every template variable, goes
//! through Prometheus's HTTP API. Each must parse and execute; each must return
//! data unless it reads a metric this test cannot produce without disturbing
//! other tests (retransmits, node_exporter's netstat, stream disconnects,
//! unpaired HTTP, and the series-cap metrics that land with the global series
//! cap), which are listed in `MAY_BE_EMPTY`.
//!
//! Network namespaces: id 43. No retransmits are generated.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use nettel_integration::{
    metrics::http_get,
    netns::{exec, PodPair},
    process::{free_port, pods_file, scratch_dir, Aggregator, Loader},
    require_kernel,
    traffic::start_server,
    wait_for,
};

const NOBODY: u32 = 65534;

/// Metrics whose series this test cannot make appear.
const MAY_BE_EMPTY: &[&str] = &[
    "node_tcp_retransmits_total",
    "node_netstat_Tcp_OutSegs",
    "nettel_series",
    "nettel_stream_disconnects_total",
    "nettel_http_unmatched_total",
];

struct Prometheus {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    fn start(target_port: u16) -> Self {
        let dir = scratch_dir("prometheus");
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: nettel\n    static_configs:\n      - targets: ['127.0.0.1:{target_port}']\n        labels:\n          node: test-node\n"
            ),
        )
        .unwrap();
        let port = free_port();
        let log = dir.join("prometheus.log");
        let child = Command::new("/usr/bin/prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(dir.join("prometheus.err")).unwrap())
            .spawn()
            .expect("start /usr/bin/prometheus (Debian package `prometheus`, installed by scripts/setup)");
        let p = Self { child, port, log };
        wait_for(Duration::from_secs(30), "Prometheus to scrape nettel", || {
            let v = p.query("up{job=\"nettel\"}").ok()?;
            (v["data"]["result"][0]["value"][1] == "1").then_some(())
        });
        let _ = &p.log;
        p
    }

    /// An instant query; `Err` carries Prometheus's error for a bad query.
    fn query(&self, q: &str) -> Result<serde_json::Value, String> {
        let (status, body) = http_get(self.port, &format!("/api/v1/query?query={}", encode(q)), None)
            .map_err(|e| e.to_string())?;
        let v: serde_json::Value =
            serde_json::from_str(&body).map_err(|e| format!("{status}: {e}: {body}"))?;
        if v["status"] == "success" {
            Ok(v)
        } else {
            Err(format!("{status}: {body}"))
        }
    }
}

/// Percent-encodes a query parameter.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Grafana's template variables, as an "All" selection would expand them.
fn expand(expr: &str) -> String {
    let e = expr
        .replace("$__rate_interval", "30s")
        .replace("$__interval", "5s")
        .replace("$namespace", ".*")
        .replace("$service", ".*")
        .replace("$node", ".*")
        .replace("$pod", ".*");
    assert!(!e.contains('$'), "unexpanded variable in {expr}");
    e
}

/// Every (where, PromQL) of a dashboard: panel targets (also inside rows) and
/// the series selector of `label_values(selector, label)` variables.
fn queries(file: &Path) -> Vec<(String, String)> {
    let d: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
    let name = file.file_name().unwrap().to_string_lossy().into_owned();
    let mut out = Vec::new();
    fn panels(v: &serde_json::Value, name: &str, out: &mut Vec<(String, String)>) {
        for p in v.as_array().into_iter().flatten() {
            for t in p["targets"].as_array().into_iter().flatten() {
                let expr = t["expr"].as_str().expect("every target has an expr");
                out.push((format!("{name}: panel `{}` {}", p["title"], t["refId"]), expr.to_owned()));
            }
            panels(&p["panels"], name, out);
        }
    }
    panels(&d["panels"], &name, &mut out);
    for v in d["templating"]["list"].as_array().into_iter().flatten() {
        if v["type"] == "query" {
            let q = v["query"]["query"].as_str().or(v["query"].as_str()).unwrap();
            let inner = q.strip_prefix("label_values(").and_then(|r| r.rsplit_once(',')).map(|(s, _)| s);
            let selector =
                inner.unwrap_or_else(|| panic!("{name}: variable {} is not label_values(...)", v["name"]));
            out.push((format!("{name}: variable `{}`", v["name"]), selector.to_owned()));
        }
    }
    assert!(!out.is_empty(), "{name} has no queries");
    out
}

#[test]
fn every_dashboard_query_parses_and_returns_data_from_a_real_prometheus() {
    if !require_kernel("every_dashboard_query_parses_and_returns_data_from_a_real_prometheus") {
        return;
    }
    let pods = PodPair::new(43);
    let loader = Loader::start(NOBODY, &[NOBODY], &[]);
    let pf = pods_file(&scratch_dir("pods"), &[(&pods.b_v4, "web-0", "shop", "web")]);
    let mut agg = Aggregator::start(&loader.socket, Some(&pf), NOBODY, NOBODY);
    agg.wait_connected();
    let prom = Prometheus::start(agg.port);

    // Ten seconds of HTTP: successes, 404s and 500s, so rates, ratios and
    // quantiles have at least two samples to work from.
    let addr = format!("{}:8080", pods.b_v4);
    let mut server = start_server(&pods.b, &["http", &addr]);
    for i in 0..20 {
        let path = ["/ok", "/ok", "/missing", "/fail"][i % 4];
        let ok = exec(&pods.a, "curl")
            .args(["-s", "-o", "/dev/null", "--max-time", "10", &format!("http://{addr}{path}")])
            .status()
            .unwrap()
            .success();
        assert!(ok, "curl {path}");
        std::thread::sleep(Duration::from_millis(500));
    }
    let _ = server.kill();
    let _ = server.wait();
    std::thread::sleep(Duration::from_secs(3));

    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/grafana");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.retain(|p| p.extension().is_some_and(|e| e == "json"));
    files.sort();
    assert_eq!(files.len(), 3, "{files:?}");
    let (mut with_data, mut empty_allowed, mut failures) = (0, Vec::new(), Vec::new());
    for file in &files {
        for (what, expr) in queries(file) {
            let q = expand(&expr);
            match prom.query(&q) {
                Err(e) => failures.push(format!("{what}: `{q}` failed: {e}")),
                Ok(v) if v["data"]["result"].as_array().is_some_and(|r| !r.is_empty()) => with_data += 1,
                Ok(_) if MAY_BE_EMPTY.iter().any(|m| q.contains(m)) => empty_allowed.push(what),
                Ok(_) => failures.push(format!("{what}: `{q}` returned no data")),
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} queries failed:\n{}\n/metrics:\n{}",
        failures.len(),
        failures.join("\n"),
        agg.scrape()
    );
    assert!(with_data >= 20, "only {with_data} queries returned data");
    eprintln!("{with_data} dashboard queries returned data; empty as allowed: {empty_allowed:#?}");
    drop(prom);
    drop(agg);
    drop(loader);
}
