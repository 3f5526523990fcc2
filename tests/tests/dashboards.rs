// SPDX-License-Identifier: Apache-2.0
//! The Grafana dashboards in deploy/grafana run against real data: a real
//! Prometheus (Debian's) scrapes a running nettel (loader + aggregator) and a
//! real node_exporter (netstat only) every second while traffic flows between
//! two netns pods; then every PromQL query of every panel, and the selector of
//! every template variable, goes through Prometheus's HTTP API. Each must parse,
//! execute and return data: no query is exempt. The test makes every series
//! they read exist:
//!
//! * HTTP successes, 404s and 500s to pod `web-0` (namespace `shop`, service `web`);
//! * TCP retransmits (5 % of the segments into pod B dropped) to `web-0:9000`
//!   over IPv4 and to pod B's IPv6 address, which is no pod's (node-level);
//! * a loader restart (stream disconnects, reconnects, loader restarts);
//! * a request whose connection closes unanswered (unpaired HTTP,
//!   `closed_with_pending`);
//! * node_exporter's `node_netstat_Tcp_OutSegs` (the retransmit ratio).
//!
//! A query grouped by `pod`, `service`, `namespace`, `node` or `dest_port`
//! (and a variable listing one of them) must also return this test's value of
//! that label (`OURS`), so data from elsewhere on the node cannot stand in for it.
//!
//! Network namespaces: id 43.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use nettel_integration::{
    kernel::retrans_segs,
    metrics::{http_get, sum},
    netns::{exec, PodPair},
    process::{free_port, pods_file, scratch_dir, Aggregator, Loader},
    require_kernel,
    traffic::{run_client, start_server},
    wait_for,
};

const NOBODY: u32 = 65534;

/// The label values this test produces; a query grouped by one of these labels
/// must return a series with that value.
const OURS: &[(&str, &str)] = &[
    ("pod", "web-0"),
    ("namespace", "shop"),
    ("service", "web"),
    ("node", "test-node"),
    ("dest_port", "9000"),
];

/// A child process killed on drop.
#[derive(Debug)]
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// node_exporter (Debian's `prometheus-node-exporter`, which `prometheus`
/// recommends) with only the netstat collector.
fn start_node_exporter() -> (Killed, u16) {
    let port = free_port();
    let child = Command::new("/usr/bin/prometheus-node-exporter")
        .args(["--collector.disable-defaults", "--collector.netstat"])
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start /usr/bin/prometheus-node-exporter (Debian package `prometheus-node-exporter`)");
    let child = Killed(child);
    wait_for(Duration::from_secs(10), "node_exporter's /metrics", || {
        http_get(port, "/metrics", None)
            .ok()
            .filter(|(_, b)| b.contains("node_netstat_Tcp_OutSegs"))
            .map(drop)
    });
    (child, port)
}

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
    /// Scrapes nettel at `nettel_port` (job `nettel`) and node_exporter at
    /// `node_port` (job `node`), both labelled `node="test-node"`.
    fn start(nettel_port: u16, node_port: u16) -> Self {
        let dir = scratch_dir("prometheus");
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: nettel\n    static_configs:\n      - targets: ['127.0.0.1:{nettel_port}']\n        labels:\n          node: test-node\n  - job_name: node\n    static_configs:\n      - targets: ['127.0.0.1:{node_port}']\n        labels:\n          node: test-node\n"
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
        wait_for(Duration::from_secs(30), "Prometheus to scrape nettel and node_exporter", || {
            let v = p.query("min(up{job=~\"nettel|node\"}) and count(up{job=~\"nettel|node\"}) == 2").ok()?;
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

/// One query of a dashboard.
#[derive(Debug)]
struct Query {
    /// File and panel or variable, for messages.
    what: String,
    expr: String,
    /// Labels the result is keyed by: a panel's `by (...)` labels, a variable's label.
    labels: Vec<String>,
}

/// The labels of every `by (...)` clause of `expr`.
fn grouping(expr: &str) -> Vec<String> {
    expr.match_indices("by (")
        .filter_map(|(i, m)| expr[i + m.len()..].split_once(')'))
        .flat_map(|(list, _)| list.split(',').map(|l| l.trim().to_owned()))
        .collect()
}

/// Every query of a dashboard: panel targets (also inside rows) and the series
/// selector of `label_values(selector, label)` variables.
fn queries(file: &Path) -> Vec<Query> {
    let d: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
    let name = file.file_name().unwrap().to_string_lossy().into_owned();
    let mut out = Vec::new();
    fn panels(v: &serde_json::Value, name: &str, out: &mut Vec<Query>) {
        for p in v.as_array().into_iter().flatten() {
            for t in p["targets"].as_array().into_iter().flatten() {
                let expr = t["expr"].as_str().expect("every target has an expr");
                out.push(Query {
                    what: format!("{name}: panel `{}` {}", p["title"], t["refId"]),
                    expr: expr.to_owned(),
                    labels: grouping(expr),
                });
            }
            panels(&p["panels"], name, out);
        }
    }
    panels(&d["panels"], &name, &mut out);
    for v in d["templating"]["list"].as_array().into_iter().flatten() {
        if v["type"] == "query" {
            let q = v["query"]["query"].as_str().or(v["query"].as_str()).unwrap();
            let inner = q.strip_prefix("label_values(").and_then(|r| r.strip_suffix(')'));
            let (selector, label) = inner
                .and_then(|r| r.rsplit_once(','))
                .unwrap_or_else(|| panic!("{name}: variable {} is not label_values(...)", v["name"]));
            out.push(Query {
                what: format!("{name}: variable `{}`", v["name"]),
                expr: selector.to_owned(),
                labels: vec![label.trim().to_owned()],
            });
        }
    }
    assert!(!out.is_empty(), "{name} has no queries");
    out
}

/// Why `result` (a query's series) fails `q`, if it does.
fn check(q: &Query, result: &[serde_json::Value]) -> Option<String> {
    if result.is_empty() {
        return Some("returned no data".into());
    }
    OURS.iter().filter(|(label, _)| q.labels.iter().any(|l| l == label)).find_map(|(label, value)| {
        let ours = result.iter().any(|series| series["metric"][*label] == *value);
        (!ours).then(|| format!("has no series with {label}=\"{value}\": {result:?}"))
    })
}

#[test]
fn every_dashboard_query_parses_and_returns_data_from_a_real_prometheus() {
    if !require_kernel("every_dashboard_query_parses_and_returns_data_from_a_real_prometheus") {
        return;
    }
    // The checks themselves.
    assert_eq!(
        grouping("sum by (namespace, pod) (rate(x[1m])) / sum by (node) (y)"),
        ["namespace", "pod", "node"]
    );
    let q = Query { what: String::new(), expr: String::new(), labels: vec!["pod".into()] };
    assert!(check(&q, &[]).is_some());
    assert!(check(&q, &[serde_json::json!({"metric": {"pod": "other"}})]).is_some());
    assert!(check(&q, &[serde_json::json!({"metric": {}}), serde_json::json!({"metric": {"pod": "web-0"}})])
        .is_none());

    let pods = PodPair::new(43);
    let loader = Loader::start(NOBODY, &[NOBODY], &[]);
    // Only the IPv4 address is a pod's: retransmits to the IPv6 one are node-level.
    let pf = pods_file(&scratch_dir("pods"), &[(&pods.b_v4, "web-0", "shop", "web")]);
    let mut agg = Aggregator::start(&loader.socket, Some(&pf), NOBODY, NOBODY);
    agg.wait_connected();
    let (_node_exporter, node_port) = start_node_exporter();
    let prom = Prometheus::start(agg.port, node_port);

    // A loader restart: the aggregator's stream ends and reconnects.
    let (pin_dir, socket) = loader.exit(rustix::process::Signal::TERM);
    let _loader = Loader::restart(&pin_dir, &socket, NOBODY, &[NOBODY], &[]);
    wait_for(Duration::from_secs(30), "the aggregator to reconnect to the restarted loader", || {
        let text = agg.scrape();
        (sum(&text, "nettel_stream_connects_total", &[]) == 2
            && sum(&text, "nettel_loader_connected", &[]) == 1)
            .then_some(())
    });

    // A request read by a server that never answers, then the connection
    // closes: one unpaired request (closed_with_pending).
    let mut silent = Killed(start_server(&pods.b, &["sink", &format!("{}:8082", pods.b_v4), "1"]));
    let out = exec(&pods.a, "curl")
        .args(["-s", "-o", "/dev/null", "--max-time", "1", &format!("http://{}:8082/unanswered", pods.b_v4)])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(28), "curl should time out: {out:?}");
    assert!(silent.0.wait().unwrap().success(), "the silent server failed");
    wait_for(Duration::from_secs(10), "an unpaired HTTP request", || {
        (sum(&agg.scrape(), "nettel_http_unmatched_total", &[("reason", "closed_with_pending")]) > 0)
            .then_some(())
    });

    // Ten seconds of HTTP (successes, 404s and 500s) interleaved with bulk
    // transfers that lose 5 % of their segments into pod B, to web-0 (IPv4) and
    // to an address of no pod (IPv6), so rates, ratios and quantiles have many
    // samples to work from.
    pods.drop_inbound(&pods.b, 0.05, &["--dport", "9000"]);
    let mut sink = Killed(start_server(&pods.b, &["sink", "[::]:9000", "8"]));
    let retransmitted = retrans_segs(&pods.a);
    let addr = format!("{}:8080", pods.b_v4);
    let server = Killed(start_server(&pods.b, &["http", &addr]));
    for i in 0..20 {
        let path = ["/ok", "/ok", "/missing", "/fail"][i % 4];
        let ok = exec(&pods.a, "curl")
            .args(["-s", "-o", "/dev/null", "--max-time", "10", &format!("http://{addr}{path}")])
            .status()
            .unwrap()
            .success();
        assert!(ok, "curl {path}");
        if i % 5 == 0 {
            run_client(&pods.a, &["send", &format!("{}:9000", pods.b_v4), "1000000"]);
            run_client(&pods.a, &["send", &format!("[{}]:9000", pods.b_v6), "1000000"]);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(sink.0.wait().unwrap().success(), "the bulk sink failed");
    drop(server);
    let retransmitted = retrans_segs(&pods.a) - retransmitted;
    assert!(retransmitted > 0, "the drop rule caused no retransmits");
    std::thread::sleep(Duration::from_secs(3));

    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/grafana");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.retain(|p| p.extension().is_some_and(|e| e == "json"));
    files.sort();
    assert_eq!(files.len(), 3, "{files:?}");
    let (mut checked, mut failures) = (0, Vec::new());
    for file in &files {
        for q in queries(file) {
            let e = expand(&q.expr);
            match prom.query(&e) {
                Err(err) => failures.push(format!("{}: `{e}` failed: {err}", q.what)),
                Ok(v) => match check(&q, v["data"]["result"].as_array().map_or(&[][..], Vec::as_slice)) {
                    Some(why) => failures.push(format!("{}: `{e}` {why}", q.what)),
                    None => checked += 1,
                },
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
    assert!(checked >= 30, "only {checked} queries found in {files:?}");
    eprintln!("all {checked} dashboard queries returned data ({retransmitted} segments retransmitted)");
}
