// SPDX-License-Identifier: Apache-2.0
//! HTTP/1.x RED metrics end to end: servers in five runtimes (nginx, Python
//! http.server, Node's http, Go's net/http and a Rust std server), each in its
//! own netns pod, driven from another pod by curl and by a raw client (for
//! pipelining and split request lines) with a known mix of methods and
//! statuses, keep-alive on and off. Counts must equal what the clients sent.

use std::{collections::BTreeMap, process::Command, time::Duration};

use nettel_integration::{
    cgroup::CgroupTree,
    metrics::{http_get, sum},
    netns::{exec, PodPair},
    process::{bin, scratch_dir, Loader, Stack},
    require_kernel,
    servers::{curl, fixture, raw_client, start, start_nginx, Server},
    wait_for,
};

const HIST: &str = "http_request_duration_seconds";
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

/// Builds the Go server (Debian's golang-go, installed by scripts/setup).
fn build_go_server() -> String {
    let dir = scratch_dir("go");
    let out = dir.join("http_server");
    let status = Command::new("go")
        .args(["build", "-o", &out.display().to_string(), &fixture("http_server.go")])
        .env("GOCACHE", std::env::temp_dir().join("nettel-gocache"))
        .env("GOPATH", dir.join("gopath"))
        .env("GO111MODULE", "off")
        .current_dir(&dir)
        .status()
        .unwrap_or_else(|e| panic!("cannot run `go` ({e}): install golang-go (scripts/setup does)"));
    assert!(status.success(), "go build of the Go test server failed");
    out.display().to_string()
}

fn count_of(text: &str, pod: &str, method: &str, status: &str) -> u64 {
    sum(text, &format!("{HIST}_count"), &[("pod", pod), ("method", method), ("status", status)])
}

/// Waits until `pod` has `want` GET 200 requests counted, then a second for
/// any extra one, and returns the scrape, asserting exactly `want` (`what`
/// names the case in the failure).
fn scrape_counted(stack: &Stack, pod: &str, want: u64, what: &str) -> String {
    wait_for(Duration::from_secs(10), &format!("{what}: {want} requests counted"), || {
        (count_of(&stack.agg.scrape(), pod, "GET", "200") >= want).then_some(())
    });
    std::thread::sleep(Duration::from_millis(1000));
    let text = stack.agg.scrape();
    assert_eq!(count_of(&text, pod, "GET", "200"), want, "{what}");
    text
}

/// `pod`'s 200 responses in histogram bucket `le`.
fn ok_bucket(text: &str, pod: &str, le: &str) -> u64 {
    sum(text, &format!("{HIST}_bucket"), &[("pod", pod), ("status", "200"), ("le", le)])
}

/// Sends the mix; returns the expected (method, status) -> count.
fn drive(ns: &str, addr: &str) -> BTreeMap<(&'static str, &'static str), u64> {
    let base = format!("http://{addr}:8080");
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
    // Slow endpoint, one request with a W3C traceparent, after two other
    // headers starting with `t` (the header scan stops at each to look).
    curl(ns, &[&u("/sleep")]);
    let traceparent = format!("traceparent: 00-{TRACE_ID}-00f067aa0ba902b7-01");
    curl(ns, &["-H", "TE: trailers", "-H", "tracestate: vendor=1", "-H", &traceparent, &u("/sleep")]);
    // Pipelining: four requests in one write, so the server reads them together.
    let target = format!("{addr}:8080");
    let got = raw_client(ns, &["pipeline", &target, "/ok", "/missing", "/ok", "/missing"]);
    assert_eq!(got, "[200, 404, 200, 404]");
    // A request line split across two reads.
    assert_eq!(raw_client(ns, &["split", &target, "/ok"]), "200");
    BTreeMap::from([
        (("GET", "200"), 8),
        (("GET", "404"), 5),
        (("PUT", "200"), 2),
        (("POST", "500"), 2),
        (("DELETE", "404"), 1),
        (("OTHER", "200"), 1),
        (("GET", "202"), 2),
    ])
}

#[test]
fn http_requests_are_counted_exactly_in_five_runtimes_with_sendmsg_hooks() {
    if !require_kernel("http_requests_are_counted_exactly_in_five_runtimes_with_sendmsg_hooks") {
        return;
    }
    five_runtimes("sendmsg");
}

#[test]
fn http_requests_are_counted_exactly_in_five_runtimes_with_socket_hooks() {
    if !require_kernel("http_requests_are_counted_exactly_in_five_runtimes_with_socket_hooks") {
        return;
    }
    five_runtimes("socket");
}

#[test]
fn http_requests_are_counted_exactly_in_five_runtimes_with_syscall_hooks() {
    if !require_kernel("http_requests_are_counted_exactly_in_five_runtimes_with_syscall_hooks") {
        return;
    }
    five_runtimes("syscall");
}

/// The whole HTTP scenario with the loader's `--http-hook=<hook>`.
fn five_runtimes(hook: &str) {
    let go_server = build_go_server();
    let pairs = [PodPair::new(6), PodPair::new(7), PodPair::new(8), PodPair::new(9), PodPair::new(10)];
    let runtimes = ["python-0", "node-0", "rust-0", "nginx-0", "go-0"];
    let entries: Vec<(&str, &str, &str, &str)> =
        pairs.iter().zip(runtimes).map(|(p, name)| (p.b_v4.as_str(), name, "web", name)).collect();
    let stack = Stack::start_with(&entries, &["--http-hook", hook]);
    let agg = &stack.agg;
    let hook_point = match hook {
        "sendmsg" => "tp_btf/tcp_sendmsg_locked",
        "socket" => "tp_btf/sock_send_length",
        _ => "tp_btf/sys_exit",
    };
    let status = stack.loader.status();
    assert!(status.probes.iter().any(|p| p.attached && p.attach_point == hook_point), "{status:?}");

    let traffic = bin("nettel-traffic").display().to_string();
    for (pods, name) in pairs.iter().zip(runtimes) {
        let addr = pods.b_v4.clone();
        let listen = format!("{addr}:8080");
        let server: Box<dyn std::any::Any> = match name {
            "python-0" => {
                Box::new(start(&pods.b, "python3", &[fixture("http_server.py"), addr.clone(), "8080".into()]))
            }
            "node-0" => {
                Box::new(start(&pods.b, "node", &[fixture("http_server.js"), addr.clone(), "8080".into()]))
            }
            "rust-0" => Box::new(start(&pods.b, &traffic, &["http".into(), listen])),
            "nginx-0" => Box::new(start_nginx(&pods.b, &addr)),
            _ => Box::new(start(&pods.b, &go_server, &[listen])),
        };
        let expected = drive(&pods.a, &addr);
        let total: u64 = expected.values().sum();
        let series = |text: &str| {
            text.lines()
                .filter(|l| l.starts_with(&format!("{HIST}_count")) || l.starts_with("nettel_http"))
                .collect::<Vec<_>>()
                .join("\n")
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while sum(&agg.scrape(), &format!("{HIST}_count"), &[("pod", name)]) < total {
            let now = std::time::Instant::now();
            assert!(now < deadline, "{name}: want {total} requests, have:\n{}", series(&agg.scrape()));
            std::thread::sleep(Duration::from_millis(100));
        }
        std::thread::sleep(Duration::from_millis(500));
        for ((method, status), n) in &expected {
            assert_eq!(
                count_of(&agg.scrape(), name, method, status),
                *n,
                "{name}: {method} {status} in\n{}",
                series(&agg.scrape())
            );
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
        // Every 200 is fast but the split request, timed from its first byte:
        // its second half came 300 ms later.
        let ok =
            |le: &str| sum(&text, &format!("{HIST}_bucket"), &[("pod", name), ("status", "200"), ("le", le)]);
        let all_ok = expected[&("GET", "200")] + expected[&("PUT", "200")] + expected[&("OTHER", "200")];
        // On failure, every 200 bucket of the pod: which requests were slow.
        let buckets_200 = || {
            text.lines()
                .filter(|l| {
                    l.starts_with(&format!("{HIST}_bucket")) && l.contains(&format!("pod=\"{name}\""))
                })
                .filter(|l| l.contains("status=\"200\""))
                .collect::<Vec<_>>()
                .join("\n")
        };
        assert_eq!(
            (ok("0.25"), ok("0.5")),
            (all_ok - 1, all_ok),
            "{name}: split request timing; the 200s by bucket:\n{}",
            buckets_200()
        );

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
    // Node-wide probe counters: nothing on this node went unmatched.
    for reason in ["response_without_request", "closed_with_pending", "pipeline_full"] {
        assert_eq!(sum(&text, "nettel_http_unmatched_total", &[("reason", reason)]), 0, "{reason}");
    }
    // Every request had a kernel slot (none fell back to a counted event).
    assert_eq!(sum(&text, "nettel_http_kernel_table_full_total", &[]), 0);

    // Pipelined deeper than the probe's per-connection queue (4 requests):
    // the first four are counted, the fifth is counted as pipeline_full, and
    // the responses to the fifth and sixth (which the probe did not queue) as
    // response_without_request. Nothing is mis-paired: both /fail are uncounted.
    let rust = &pairs[2];
    let target = format!("{}:8080", rust.b_v4);
    let _server = start(&rust.b, &traffic, &["http".into(), target.clone()]);
    let before = count_of(&text, "rust-0", "GET", "200");
    let got = raw_client(&rust.a, &["pipeline", &target, "/ok", "/ok", "/ok", "/ok", "/fail", "/fail"]);
    assert_eq!(got, "[200, 200, 200, 200, 500, 500]");
    wait_for(Duration::from_secs(10), "the probe's pipeline counters", || {
        let text = agg.scrape();
        (sum(&text, "nettel_http_unmatched_total", &[("reason", "response_without_request")]) >= 2)
            .then_some(text)
    });
    std::thread::sleep(Duration::from_millis(500));
    let text = agg.scrape();
    assert_eq!(count_of(&text, "rust-0", "GET", "200"), before + 4);
    assert_eq!(count_of(&text, "rust-0", "GET", "500"), 0);
    let unmatched = |reason: &str| sum(&text, "nettel_http_unmatched_total", &[("reason", reason)]);
    assert_eq!((unmatched("pipeline_full"), unmatched("response_without_request")), (1, 2));

    // A response whose send waits for space before queueing any byte: it
    // follows /big, whose last segment stays corked for 200 ms and which it
    // cannot join (MSG_EOR), and with tcp_notsent_lowat 1 a send that needs a
    // new segment waits while any byte is unsent. The sendmsg hook sees the
    // status line again after the wait (same write_seq) and counts it once.
    let lowat = |v: &str| {
        let ok = exec(&rust.b, "sysctl")
            .args(["-qw", &format!("net.ipv4.tcp_notsent_lowat={v}")])
            .status()
            .unwrap();
        assert!(ok.success(), "sysctl net.ipv4.tcp_notsent_lowat={v} in {}", rust.b);
    };
    let default_lowat = String::from_utf8(
        exec(&rust.b, "sysctl").args(["-n", "net.ipv4.tcp_notsent_lowat"]).output().unwrap().stdout,
    )
    .unwrap();
    lowat("1");
    let got = raw_client(&rust.a, &["pipeline", &target, "/big", "/ok"]);
    lowat(default_lowat.trim());
    assert_eq!(got, "[200, 200]");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while count_of(&agg.scrape(), "rust-0", "GET", "200") < before + 6 {
        let text = agg.scrape();
        assert!(
            std::time::Instant::now() < deadline,
            "{hook}: /big and /ok not counted ({} GET 200, want {}):\n{}",
            count_of(&text, "rust-0", "GET", "200"),
            before + 6,
            text.lines()
                .filter(|l| l.contains("rust-0") || l.starts_with("nettel_http"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));
    let text = agg.scrape();
    assert_eq!(count_of(&text, "rust-0", "GET", "200"), before + 6, "{hook}: /big and /ok, once each");
    let unmatched = |reason: &str| sum(&text, "nettel_http_unmatched_total", &[("reason", reason)]);
    assert_eq!((unmatched("pipeline_full"), unmatched("response_without_request")), (1, 2), "{hook}");
}

/// Requests are counted in the kernel's pinned slots, which outlive the
/// loader: requests served while no loader runs are counted once the next
/// loader streams the totals, and the totals already counted are not counted
/// again (a restarted loader first sends every key whole). The same holds for
/// the probe's pinned counters (`nettel_http_unmatched_total`).
#[test]
fn http_totals_outlive_a_loader_restart_and_are_counted_once() {
    if !require_kernel("http_totals_outlive_a_loader_restart_and_are_counted_once") {
        return;
    }
    const NOBODY: u32 = 65534;
    let pods = PodPair::new(12);
    let Stack { mut agg, loader, pods_file: _pods_file } =
        Stack::start(&[(pods.b_v4.as_str(), "rust-0", "web", "rust-0")]);
    let traffic = bin("nettel-traffic").display().to_string();
    let _server = start(&pods.b, &traffic, &["http".into(), format!("{}:8080", pods.b_v4)]);
    let ok = format!("http://{}:8080/ok", pods.b_v4);
    let missing = format!("http://{}:8080/missing", pods.b_v4);
    let counts = |agg: &nettel_integration::process::Aggregator| {
        let text = agg.scrape();
        (count_of(&text, "rust-0", "GET", "200"), count_of(&text, "rust-0", "GET", "404"))
    };
    let settle = |agg: &nettel_integration::process::Aggregator, want: (u64, u64)| {
        wait_for(Duration::from_secs(10), "HTTP counts", || (counts(agg) == want).then_some(()));
        // Several reads of the totals later (one every 500 ms), still the same.
        std::thread::sleep(Duration::from_millis(1500));
        assert_eq!(counts(agg), want, "counted more than once");
    };

    curl(&pods.a, &[&ok, &ok, &ok]);
    // Six pipelined requests: four counted, one pipeline_full and two
    // responses without a request (the probe's pinned counters).
    let target = format!("{}:8080", pods.b_v4);
    let got = raw_client(&pods.a, &["pipeline", &target, "/ok", "/ok", "/ok", "/ok", "/fail", "/fail"]);
    assert_eq!(got, "[200, 200, 200, 200, 500, 500]");
    settle(&agg, (7, 0));
    let unmatched = |agg: &nettel_integration::process::Aggregator| {
        let text = agg.scrape();
        let n = |reason| sum(&text, "nettel_http_unmatched_total", &[("reason", reason)]);
        (n("pipeline_full"), n("response_without_request"))
    };
    assert_eq!(unmatched(&agg), (1, 2));

    let (pin_dir, socket) = loader.exit(rustix::process::Signal::TERM);
    curl(&pods.a, &[&ok, &ok, &missing, &missing]);
    let loader = Loader::restart(&pin_dir, &socket, NOBODY, &[NOBODY], &[]);
    agg.wait_connected();
    settle(&agg, (9, 2));
    assert_eq!(unmatched(&agg), (1, 2), "the pinned probe counters are not counted again");

    curl(&pods.a, &[&ok]);
    settle(&agg, (10, 2));
    let text = agg.scrape();
    assert_eq!(sum(&text, "nettel_http_kernel_table_full_total", &[]), 0);
    assert_eq!(sum(&text, "nettel_loader_restarts_total", &[]), 1);
    drop(agg);
    drop(loader);
}

/// 7 methods x 3 statuses: 21 keys, for tables of 16 slots.
const TABLE_TEST_METHODS: [(&str, &str); 7] = [
    ("GET", "GET"),
    ("PUT", "PUT"),
    ("POST", "POST"),
    ("DELETE", "DELETE"),
    ("PATCH", "PATCH"),
    ("OPTIONS", "OPTIONS"),
    ("PURGE", "OTHER"),
];

/// A 16-slot stack (`--http-table-entries 16`) with pod `rust-0` at
/// `pods.b_v4`, and how many of the 21 keys of [`send_21_keys`] find no free
/// slot: node-level keys (the aggregator's own HTTP server: the harness's
/// scrapes and readiness polls) have claimed some slots already.
fn small_table_stack(pods: &PodPair) -> (Stack, u64) {
    let stack = Stack::start_with(
        &[(pods.b_v4.as_str(), "rust-0", "web", "rust-0")],
        &["--http-table-entries", "16"],
    );
    std::thread::sleep(Duration::from_millis(1500));
    let claimed =
        stack.agg.scrape().lines().filter(|l| l.starts_with(&format!("{HIST}_count{{"))).count() as u64;
    assert!(claimed <= 3, "node-level keys: {claimed}");
    (stack, 21 - (16 - claimed))
}

/// The Rust test server on `pods.b_v4:8080`.
fn rust_server(pods: &PodPair) -> Server {
    let traffic = bin("nettel-traffic").display().to_string();
    start(&pods.b, &traffic, &["http".into(), format!("{}:8080", pods.b_v4)])
}

/// Sends one request of each of the 21 keys to `pods.b_v4:8080` and waits
/// until the aggregator has counted `21 * round` for `rust-0`, then checks
/// that every key was counted `round` times, none twice.
fn send_21_keys(pods: &PodPair, agg: &nettel_integration::process::Aggregator, round: u64) -> String {
    let url = |path: &str| format!("http://{}:8080{path}", pods.b_v4);
    let (ok, missing, fail) = (url("/ok"), url("/missing"), url("/fail"));
    let total = || sum(&agg.scrape(), &format!("{HIST}_count"), &[("pod", "rust-0")]);
    for (method, _) in TABLE_TEST_METHODS {
        let body: &[&str] = if matches!(method, "PUT" | "POST" | "PATCH") { &["-d", "x"] } else { &[] };
        let args: Vec<&str> = ["-X", method].iter().copied().chain(body.iter().copied()).collect();
        curl(&pods.a, &[&args[..], &[&ok, &missing, &fail]].concat());
    }
    wait_for(Duration::from_secs(10), "all requests counted", || (total() >= 21 * round).then_some(()));
    std::thread::sleep(Duration::from_millis(1500));
    let text = agg.scrape();
    assert_eq!(total(), 21 * round, "no request counted twice");
    for (_, label) in TABLE_TEST_METHODS {
        for status in ["200", "404", "500"] {
            assert_eq!(count_of(&text, "rust-0", label, status), round, "{label} {status}");
        }
    }
    text
}

/// With a 16-slot kernel table, the requests of keys beyond 16 go to the ring
/// buffer as events: still counted exactly, and each one counted in
/// `nettel_http_kernel_table_full_total`. Keys keep their slots: the same
/// keys beyond the table again go out as events, no more and no fewer.
#[test]
fn http_requests_beyond_the_kernel_table_are_sent_as_events_and_counted() {
    if !require_kernel("http_requests_beyond_the_kernel_table_are_sent_as_events_and_counted") {
        return;
    }
    let pods = PodPair::new(13);
    let (stack, beyond) = small_table_stack(&pods);
    let _server = rust_server(&pods);
    for round in 1..=2u64 {
        let text = send_21_keys(&pods, &stack.agg, round);
        assert_eq!(sum(&text, "nettel_http_kernel_table_full_total", &[]), beyond * round);
    }
}

/// A removed cgroup's slots are freed for new keys (`nt_http_rmdir`): a
/// server in cgroup A fills a 16-slot table; A is removed; the same 21
/// requests to a server in cgroup B find A's slots free, so only the same
/// number as before go out as events (without the reclaim, all 21 would).
/// Counts stay exact across the aggregator forgetting A's keys.
#[test]
fn http_table_slots_of_a_removed_cgroup_are_reused() {
    if !require_kernel("http_table_slots_of_a_removed_cgroup_are_reused") {
        return;
    }
    let pods = PodPair::new(14);
    let (stack, beyond) = small_table_stack(&pods);
    let root = nettel_aggregator::kube::cgroup::default_root()
        .join(format!("nettel-test-{}-rmdir", std::process::id()));
    let _tree = CgroupTree(root.clone());
    let in_cgroup = |name: &str| {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).expect("create a cgroup (cgroup v2 mounted?)");
        let server = rust_server(&pods);
        std::fs::write(dir.join("cgroup.procs"), server.0.id().to_string()).unwrap();
        (dir, server)
    };

    let (dir_a, server_a) = in_cgroup("a");
    let text = send_21_keys(&pods, &stack.agg, 1);
    assert_eq!(sum(&text, "nettel_http_kernel_table_full_total", &[]), beyond, "cgroup A filled the table");
    drop(server_a);
    std::fs::remove_dir(&dir_a).expect("remove cgroup A (its server has exited)");

    let (_dir_b, _server_b) = in_cgroup("b");
    let text = send_21_keys(&pods, &stack.agg, 2);
    assert_eq!(
        sum(&text, "nettel_http_kernel_table_full_total", &[]),
        2 * beyond,
        "cgroup B's keys took the slots freed with cgroup A"
    );
}

/// A fork-per-connection server: the parent closes its copy of each accepted
/// connection while the forked child's request is pending. The close of one
/// descriptor must not end the connection's state (the syscall hooks end it at
/// close(), the others at TCP CLOSE): every request is counted, with its
/// 400 ms, under every hook set.
#[test]
fn a_request_a_forked_child_serves_is_counted_after_the_parent_closes_its_copy() {
    if !require_kernel("a_request_a_forked_child_serves_is_counted_after_the_parent_closes_its_copy") {
        return;
    }
    let pods = PodPair::new(15);
    let _server =
        start(&pods.b, "python3", &[fixture("forking_http_server.py"), pods.b_v4.clone(), "8080".into()]);
    let url = format!("http://{}:8080/slow", pods.b_v4);
    for hook in ["sendmsg", "socket", "syscall"] {
        let stack =
            Stack::start_with(&[(pods.b_v4.as_str(), "forking-0", "web", "forking")], &["--http-hook", hook]);
        // One connection per request: curl sends each as the parent forks.
        for _ in 0..3 {
            curl(&pods.a, &[&url]);
        }
        let text = scrape_counted(&stack, "forking-0", 3, &format!("{hook} hooks"));
        let slow = |le: &str| ok_bucket(&text, "forking-0", le);
        assert_eq!((slow("0.25"), slow("0.5")), (0, 3), "{hook} hooks: timed 400 ms");
        let closed = sum(&text, "nettel_http_unmatched_total", &[("reason", "closed_with_pending")]);
        assert_eq!(closed, 0, "{hook} hooks: no request ended by the parent's close");
    }
}

/// Where a request's time starts: at the read, for every hook set. The
/// server reads the request 400 ms after it arrived (`preamble_http_server.py`
/// with a first-read delay) and answers at once. The socket and sendmsg
/// hooks take the read's time from the connection's cached TCP clock, which
/// the kernel refreshes as the read copies the bytes; were it still the
/// arrival's (a kernel that stopped refreshing it there), the requests would
/// be timed at 400 ms.
#[test]
fn a_request_is_timed_from_its_read_under_every_hook_set() {
    if !require_kernel("a_request_is_timed_from_its_read_under_every_hook_set") {
        return;
    }
    let pods = PodPair::new(16);
    let args = [fixture("preamble_http_server.py"), pods.b_v4.clone(), "8080".into(), "400".into()];
    let _server = start(&pods.b, "python3", &args);
    let url = format!("http://{}:8080/late", pods.b_v4);
    for hook in ["sendmsg", "socket", "syscall"] {
        let stack =
            Stack::start_with(&[(pods.b_v4.as_str(), "late-0", "web", "late")], &["--http-hook", hook]);
        for _ in 0..2 {
            curl(&pods.a, &[&url]);
        }
        let text = scrape_counted(&stack, "late-0", 2, &format!("{hook} hooks"));
        assert_eq!(
            ok_bucket(&text, "late-0", "0.1"),
            2,
            "{hook} hooks: timed from the read, not the 400 ms before it"
        );
    }
}

/// Hex of `s`, for preamble_client.py.
fn hex(s: &[u8]) -> String {
    s.iter().map(|b| format!("{b:02x}")).collect()
}

/// Runs `preamble_client.py` from `ns` against `addr`:8080 with `preamble`,
/// and with `later` after a line on its stdin that `between` is run before;
/// returns what it prints last (the two statuses).
fn preamble_client(ns: &str, addr: &str, preamble: &[u8], later: Option<(&[u8], &dyn Fn())>) -> String {
    use std::io::{BufRead, BufReader, Write};
    let mut args = vec![fixture("preamble_client.py"), addr.to_owned(), "8080".into(), hex(preamble)];
    if let Some((bytes, _)) = later {
        args.push(hex(bytes));
    }
    let mut child = exec(ns, "python3")
        .args(&args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 preamble_client.py");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    if let Some((_, between)) = later {
        out.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "held", "preamble_client.py");
        between();
        writeln!(child.stdin.as_mut().unwrap()).unwrap();
        line.clear();
    }
    out.read_line(&mut line).unwrap();
    assert!(child.wait().unwrap().success(), "preamble_client.py failed");
    line.trim().to_owned()
}

/// A server connection whose first read rules out HTTP/1.x is skipped from
/// then on (its reads and sends read no user memory): requests sent on it
/// later are not counted. A first read that does not rule it out (a PROXY
/// protocol v2 header, which starts with CR LF) leaves the connection
/// watched, and so does a connection older than the probe, whose first read
/// seen is not the first of the stream. Checked with the socket and sendmsg
/// hooks, which keep the connection's state in the socket; a plain curl
/// request after each case shows the counts are current.
#[test]
fn a_connection_whose_first_read_is_not_http1_is_skipped_and_others_are_not() {
    if !require_kernel("a_connection_whose_first_read_is_not_http1_is_skipped_and_others_are_not") {
        return;
    }
    let pods = PodPair::new(17);
    let addr = pods.b_v4.clone();
    let _server =
        start(&pods.b, "python3", &[fixture("preamble_http_server.py"), addr.clone(), "8080".into()]);
    let url = format!("http://{addr}:8080/ok");
    let entries = [(addr.as_str(), "pre-0", "web", "pre")];
    // PROXY protocol v2: the signature, version 2 / LOCAL, UNSPEC, no addresses.
    let proxy_v2: &[u8] = b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00";
    for hook in ["sendmsg", "socket"] {
        let stack = Stack::start_with(&entries, &["--http-hook", hook]);
        let mut want = 0;
        // Each case's requests, then a curl request: counted once both are.
        let case = |preamble: &[u8], counted: u64, want: &mut u64, what: &str| {
            assert_eq!(preamble_client(&pods.a, &addr, preamble, None), "200 200", "{hook}: {what}");
            curl(&pods.a, &[&url]);
            *want += counted + 1;
            scrape_counted(&stack, "pre-0", *want, &format!("{hook}: {what}"));
        };
        case(b"hello, not http\n", 0, &mut want, "another protocol first: skipped");
        case(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 0, &mut want, "the HTTP/2 preface first: skipped");
        case(proxy_v2, 2, &mut want, "a PROXY v2 header first: watched");
        drop(stack);

        // The connection and its first bytes predate the agent, which starts
        // while the client holds.
        let started = std::cell::RefCell::new(None);
        let statuses = preamble_client(
            &pods.a,
            &addr,
            b"sent before the agent\n",
            Some((b"and after it, still not http\n", &|| {
                *started.borrow_mut() = Some(Stack::start_with(&entries, &["--http-hook", hook]));
            })),
        );
        assert_eq!(statuses, "200 200", "{hook}: mid-stream");
        let stack: Stack = started.into_inner().expect("the agent started");
        curl(&pods.a, &[&url]);
        let what =
            format!("{hook}: a connection older than the probe is watched, whatever its first read seen");
        scrape_counted(&stack, "pre-0", 3, &what);
    }
}
