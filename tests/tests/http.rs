// SPDX-License-Identifier: Apache-2.0
//! HTTP/1.x RED metrics end to end: servers in three runtimes (Python
//! http.server, Node's http, a Rust std server), each in its own netns pod,
//! driven by curl from another pod with a known mix of methods and statuses,
//! keep-alive on and off. Counts must equal what the client sent.

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    time::Duration,
};

use nettel_integration::{
    metrics::{http_get, sum},
    netns::{exec, PodPair},
    process::{bin, Stack},
    require_kernel, wait_for,
};

const HIST: &str = "http_request_duration_seconds";
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

fn fixture(name: &str) -> String {
    format!("{}/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// A server process, killed when dropped (also when a test panics).
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts a server in `ns` and waits for its "ready" line.
fn start(ns: &str, program: &str, args: &[String]) -> Server {
    let mut child = exec(ns, program)
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap()).read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ready", "{program} did not start");
    Server(child)
}

fn curl(ns: &str, args: &[&str]) {
    let out =
        exec(ns, "curl").args(["-s", "-o", "/dev/null", "--max-time", "20"]).args(args).output().unwrap();
    assert!(out.status.success(), "curl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Sends the mix; returns the expected (method, status) -> count.
fn drive(ns: &str, base: &str) -> BTreeMap<(&'static str, &'static str), u64> {
    let u = |path: &str| format!("{base}{path}");
    // Keep-alive: several URLs in one curl invocation share a connection.
    curl(ns, &[&u("/ok"), &u("/ok"), &u("/ok"), &u("/ok"), &u("/ok")]);
    curl(ns, &[&u("/missing"), &u("/missing"), &u("/missing")]);
    curl(ns, &["-X", "PUT", "-d", "y", &u("/ok"), &u("/ok")]);
    // Keep-alive off: one connection per request.
    for _ in 0..2 {
        curl(ns, &["-H", "Connection: close", "-X", "POST", "-d", "payload", &u("/fail")]);
    }
    curl(ns, &["-H", "Connection: close", "-X", "DELETE", &u("/missing")]);
    curl(ns, &["-X", "PURGE", &u("/ok")]);
    // Slow endpoint, one request with a W3C traceparent.
    curl(ns, &[&u("/sleep")]);
    curl(ns, &["-H", &format!("traceparent: 00-{TRACE_ID}-00f067aa0ba902b7-01"), &u("/sleep")]);
    BTreeMap::from([
        (("GET", "200"), 5),
        (("GET", "404"), 3),
        (("PUT", "200"), 2),
        (("POST", "500"), 2),
        (("DELETE", "404"), 1),
        (("OTHER", "200"), 1),
        (("GET", "202"), 2),
    ])
}

#[test]
fn http_requests_are_counted_exactly_in_three_runtimes() {
    if !require_kernel("http_requests_are_counted_exactly_in_three_runtimes") {
        return;
    }
    let pairs = [PodPair::new(6), PodPair::new(7), PodPair::new(8)];
    let runtimes = ["python-0", "node-0", "rust-0"];
    let entries: Vec<(&str, &str, &str, &str)> =
        pairs.iter().zip(runtimes).map(|(p, name)| (p.b_v4.as_str(), name, "web", name)).collect();
    let stack = Stack::start(&entries);
    let agg = &stack.agg;

    let traffic = bin("nettel-traffic").display().to_string();
    for (pods, name) in pairs.iter().zip(runtimes) {
        let addr = pods.b_v4.clone();
        let server = match name {
            "python-0" => {
                start(&pods.b, "python3", &[fixture("http_server.py"), addr.clone(), "8080".into()])
            }
            "node-0" => start(&pods.b, "node", &[fixture("http_server.js"), addr.clone(), "8080".into()]),
            _ => start(&pods.b, &traffic, &["http".into(), format!("{addr}:8080")]),
        };
        let expected = drive(&pods.a, &format!("http://{addr}:8080"));
        let total: u64 = expected.values().sum();
        let count = |m: &str, s: &str| {
            sum(&agg.scrape(), &format!("{HIST}_count"), &[("pod", name), ("method", m), ("status", s)])
        };
        wait_for(Duration::from_secs(10), &format!("{total} {name} requests"), || {
            (sum(&agg.scrape(), &format!("{HIST}_count"), &[("pod", name)]) >= total).then_some(())
        });
        std::thread::sleep(Duration::from_millis(500));
        for ((method, status), n) in &expected {
            assert_eq!(count(method, status), *n, "{name}: {method} {status}");
        }
        let text = agg.scrape();
        assert_eq!(
            sum(&text, &format!("{HIST}_count"), &[("pod", name)]),
            total,
            "{name}: no extra requests"
        );
        assert_eq!(
            sum(&text, &format!("{HIST}_count"), &[("pod", name), ("namespace", "web"), ("service", name)]),
            total
        );
        // 120 ms sleeps: none under 0.1 s, all under 0.25 s.
        let bucket = |le: &str| {
            sum(
                &text,
                &format!("{HIST}_bucket"),
                &[("pod", name), ("method", "GET"), ("status", "202"), ("le", le)],
            )
        };
        assert_eq!((bucket("0.1"), bucket("0.25")), (0, 2), "{name}: latency buckets");

        // The traceparent request is an exemplar (OpenMetrics only).
        let (_, om) =
            http_get(agg.port, "/metrics", Some("application/openmetrics-text; version=1.0.0")).unwrap();
        assert!(
            om.lines().any(|l| l.starts_with(&format!("{HIST}_bucket{{"))
                && l.contains(&format!("pod=\"{name}\""))
                && l.contains(&format!("trace_id=\"{TRACE_ID}\""))),
            "{name}: no exemplar with the trace id"
        );
        drop(server);

        // Non-HTTP TCP traffic (a Redis-like protocol) adds nothing.
        let mut blob = start(&pods.b, &traffic, &["blobd".into(), format!("{addr}:6379")]);
        let ok = Command::new("ip")
            .args(["netns", "exec", &pods.a, &traffic, "blob", &format!("{addr}:6379"), "50"])
            .status()
            .unwrap();
        assert!(ok.success());
        let _ = blob.0.wait();
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(
            sum(&agg.scrape(), &format!("{HIST}_count"), &[("pod", name)]),
            total,
            "{name}: non-HTTP traffic"
        );
    }
    let text = agg.scrape();
    assert_eq!(sum(&text, "nettel_http_unmatched_total", &[("reason", "response_without_request")]), 0);
}
