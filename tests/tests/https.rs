// SPDX-License-Identifier: Apache-2.0
//! HTTPS RED metrics end to end, through the OpenSSL uprobes: nginx (Debian's,
//! on the system's OpenSSL 3 `libssl.so.3`), Python's `ssl` module (the same
//! library, through `SSL_read_ex`/`SSL_write_ex`) and Node's `https` (OpenSSL
//! linked statically into the `node` executable, symbols exported, driven
//! through a memory BIO), each in its own netns pod, started after the loader,
//! driven by curl over HTTPS with a known mix of methods and statuses,
//! keep-alive on and off. Counts must equal what curl sent, attributed to the
//! serving pod, with the right latency buckets: each request counted once
//! (the ciphertext the socket hooks see adds nothing).
//!
//! A Go server (crypto/tls) cannot be instrumented: it must be reported as
//! such (status RPC and `nettel_tls_uninstrumented_processes{reason="go"}`),
//! and its requests must not appear as HTTP metrics.
//!
//! OpenSSL 1.1.1 (the shared libraries scripts/setup takes from a pinned
//! wheel) is tested through a small C server that calls `SSL_read` and
//! `SSL_write` of the library it is given (`fixtures/openssl_server.c`).
//!
//! Network namespaces: ids 50-59.

use std::{collections::BTreeMap, process::Command, time::Duration};

use nettel_integration::{
    metrics::sum,
    netns::PodPair,
    process::{pods_file, scratch_dir, Aggregator, Loader, Stack},
    require_kernel,
    servers::{curl, fixture, self_signed_cert, start, start_nginx_tls},
    wait_for,
};

const HIST: &str = "http_request_duration_seconds";
/// Scan often, so a server started after the loader is picked up quickly.
const LOADER_ARGS: &[&str] = &["--tls-scan-ms", "300"];

fn count_of(text: &str, pod: &str, method: &str, status: &str) -> u64 {
    sum(text, &format!("{HIST}_count"), &[("pod", pod), ("method", method), ("status", status)])
}

/// Sends the mix over HTTPS; returns the expected (method, status) -> count.
fn drive(ns: &str, addr: &str) -> BTreeMap<(&'static str, &'static str), u64> {
    let base = format!("https://{addr}:8080");
    let u = |path: &str| format!("{base}{path}");
    // Keep-alive: several URLs in one curl invocation share a connection.
    curl(ns, &["-k", &u("/ok"), &u("/ok"), &u("/ok"), &u("/ok"), &u("/ok")]);
    curl(ns, &["-k", &u("/missing"), &u("/missing"), &u("/missing")]);
    curl(ns, &["-k", "-X", "PUT", "-d", "y", &u("/ok"), &u("/ok")]);
    // Keep-alive off: one connection per request.
    for _ in 0..2 {
        curl(ns, &["-k", "-H", "Connection: close", "-X", "POST", "-d", "payload", &u("/fail")]);
    }
    curl(ns, &["-k", "-H", "Connection: close", "-X", "DELETE", &u("/missing")]);
    curl(ns, &["-k", "-X", "PURGE", &u("/ok")]);
    // Slow endpoint (120 ms), on a fresh connection each.
    curl(ns, &["-k", &u("/sleep")]);
    curl(ns, &["-k", &u("/sleep")]);
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

fn series(text: &str) -> String {
    text.lines()
        .filter(|l| {
            l.starts_with(&format!("{HIST}_count"))
                || l.starts_with("nettel_http")
                || l.starts_with("nettel_tls")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// TLS losses so far: (plaintext unattributed to a connection, SSL calls lost).
fn tls_losses(text: &str) -> (u64, u64) {
    let reason = |r: &str| sum(text, "nettel_http_unmatched_total", &[("reason", r)]);
    (reason("tls_no_connection"), reason("tls_call_lost"))
}

/// No plaintext went unattributed to a connection and no SSL call was lost.
fn assert_no_tls_loss(text: &str) {
    for reason in ["tls_no_connection", "tls_call_lost"] {
        assert_eq!(
            sum(text, "nettel_http_unmatched_total", &[("reason", reason)]),
            0,
            "{reason}:\n{}",
            series(text)
        );
    }
}

/// Sends `HEAD /ok` until one is counted for `pod`, so the attacher has
/// instrumented the new server's TLS code (its scan runs every 300 ms, later
/// on a loaded machine, and a file detached because another test's process
/// exited is attached again only at a scan). Returns the HEAD requests counted.
fn warm_up(agg: &Aggregator, ns: &str, addr: &str, pod: &str) -> u64 {
    let url = format!("https://{addr}:8080/ok");
    let head = || count_of(&agg.scrape(), pod, "HEAD", "200");
    wait_for(Duration::from_secs(20), &format!("{pod}: a HEAD request over TLS counted"), || {
        curl(ns, &["-k", "-I", &url]);
        std::thread::sleep(Duration::from_millis(200));
        (head() >= 1).then_some(())
    });
    // A request counted just before the loop stopped may still be in flight.
    std::thread::sleep(Duration::from_millis(500));
    head()
}

/// Waits until `pod` has `total` requests, then checks every count and the buckets.
fn assert_counts(stack: &Stack, pod: &str, expected: &BTreeMap<(&str, &str), u64>) {
    let total: u64 = expected.values().sum();
    let agg = &stack.agg;
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while sum(&agg.scrape(), &format!("{HIST}_count"), &[("pod", pod)]) < total {
        assert!(
            std::time::Instant::now() < deadline,
            "{pod}: want {total} requests, have:\n{}\nloader log:\n{}",
            series(&agg.scrape()),
            stack.loader.proc.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));
    let text = agg.scrape();
    for ((method, status), n) in expected {
        assert_eq!(
            count_of(&text, pod, method, status),
            *n,
            "{pod}: {method} {status} in\n{}",
            series(&text)
        );
    }
    assert_eq!(sum(&text, &format!("{HIST}_count"), &[("pod", pod)]), total, "{pod}: counted once");
    assert_eq!(
        sum(&text, &format!("{HIST}_count"), &[("pod", pod), ("namespace", "web"), ("service", pod)]),
        total
    );
    // 120 ms sleeps: none under 0.1 s, both under 0.25 s; every 200 is fast.
    let bucket = |status: &str, le: &str| {
        sum(&text, &format!("{HIST}_bucket"), &[("pod", pod), ("status", status), ("le", le)])
    };
    assert_eq!((bucket("202", "0.1"), bucket("202", "0.25")), (0, 2), "{pod}: /sleep buckets");
    let ok: u64 = expected.iter().filter(|((_, status), _)| *status == "200").map(|(_, n)| n).sum();
    assert_eq!(bucket("200", "0.1"), ok, "{pod}: fast requests");
}

#[test]
fn https_requests_are_counted_exactly_for_nginx_python_and_node_started_after_the_loader() {
    if !require_kernel(
        "https_requests_are_counted_exactly_for_nginx_python_and_node_started_after_the_loader",
    ) {
        return;
    }
    let (cert, key) = self_signed_cert();
    let pairs = [PodPair::new(50), PodPair::new(51), PodPair::new(52)];
    let runtimes = ["nginx-tls", "python-tls", "node-tls"];
    let entries: Vec<(&str, &str, &str, &str)> =
        pairs.iter().zip(runtimes).map(|(p, name)| (p.b_v4.as_str(), name, "web", name)).collect();
    let stack = Stack::start_with(&entries, LOADER_ARGS);
    let received = |kind: &str| sum(&stack.agg.scrape(), "nettel_events_received_total", &[("kind", kind)]);

    let mut grand_total = 0;
    for (pods, name) in pairs.iter().zip(runtimes) {
        let addr = pods.b_v4.clone();
        // Every server starts after the loader: it is found by the attacher's scan.
        let tls_args = [addr.clone(), "8080".into(), cert.clone(), key.clone()];
        let server: Box<dyn std::any::Any> = match name {
            "nginx-tls" => Box::new(start_nginx_tls(&pods.b, &addr, &cert, &key)),
            "python-tls" => {
                Box::new(start(&pods.b, "python3", &[&[fixture("http_server.py")], &tls_args[..]].concat()))
            }
            _ => Box::new(start(&pods.b, "node", &[&[fixture("http_server.js")], &tls_args[..]].concat())),
        };
        // Wait until the attacher has seen the new server's TLS code: the
        // uprobes live on the file, so a library already instrumented for
        // another process covers it at once.
        let warm = warm_up(&stack.agg, &pods.a, &addr, name);
        // The attacher attaches the return probes before the entry probes, so
        // a warm-up request whose SSL call spans the attach is a lost call
        // (counted, correctly). From here on the server is instrumented:
        // nothing may be lost.
        let before = tls_losses(&stack.agg.scrape());
        let mut expected = drive(&pods.a, &addr);
        expected.insert(("HEAD", "200"), warm);
        grand_total += expected.values().sum::<u64>();
        assert_counts(&stack, name, &expected);
        let text = stack.agg.scrape();
        assert_eq!(
            tls_losses(&text),
            before,
            "{name}: TLS losses (no connection, call lost):\n{}",
            series(&text)
        );
        drop(server);
    }
    // Node-wide counters: other tests on this machine may serve plain HTTP
    // meanwhile, so only the TLS ones are exact here (the per-pod totals
    // above already show that no request was counted twice).
    let text = stack.agg.scrape();
    assert!(received("https_request") >= grand_total, "TLS events:\n{}", series(&text));
    // Attach order explains lost calls during warm-up, never unattributed plaintext.
    assert_eq!(tls_losses(&text).0, 0, "tls_no_connection:\n{}", series(&text));
    assert!(sum(&text, "nettel_tls_instrumented_files", &[]) >= 1, "{}", series(&text));
}

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

#[test]
fn go_and_rustls_tls_are_reported_as_uninstrumented_not_silently_missed() {
    if !require_kernel("go_and_rustls_tls_are_reported_as_uninstrumented_not_silently_missed") {
        return;
    }
    let go_server = build_go_server();
    let (cert, key) = self_signed_cert();
    let pods = PodPair::new(53);
    let stack = Stack::start_with(&[(&pods.b_v4, "go-tls", "web", "go-tls")], LOADER_ARGS);
    let listen = format!("{}:8080", pods.b_v4);
    let server = start(&pods.b, &go_server, &[listen, cert, key]);
    let pid = server.0.id();
    let base = format!("https://{}:8080", pods.b_v4);
    curl(&pods.a, &["-k", &format!("{base}/ok"), &format!("{base}/missing")]);

    // The loader names the Go server, with its reason.
    let listed =
        wait_for(Duration::from_secs(10), "the Go server in the loader's uninstrumented list", || {
            let st = stack.loader.status();
            st.uninstrumented_tls.into_iter().find(|u| u.pid == pid)
        });
    assert_eq!(listed.reason, "go", "{listed:?}");
    assert!(listed.exe.ends_with("/http_server"), "{listed:?}");
    // The aggregator itself links rustls (the Kubernetes client): reported too.
    let agg_pid = stack.agg.proc.child.id();
    let st = stack.loader.status();
    let agg = st.uninstrumented_tls.iter().find(|u| u.pid == agg_pid);
    assert_eq!(agg.map(|u| u.reason.as_str()), Some("rustls"), "{:?}", st.uninstrumented_tls);

    // ... and /metrics says so.
    wait_for(Duration::from_secs(10), "nettel_tls_uninstrumented_processes{reason=go}", || {
        let text = stack.agg.scrape();
        (sum(&text, "nettel_tls_uninstrumented_processes", &[("reason", "go")]) >= 1
            && sum(&text, "nettel_tls_uninstrumented_processes", &[("reason", "rustls")]) >= 1)
            .then_some(())
    });
    // Its requests are not counted as anything (neither HTTPS nor ciphertext noise).
    let text = stack.agg.scrape();
    assert_eq!(sum(&text, &format!("{HIST}_count"), &[("pod", "go-tls")]), 0, "{}", series(&text));
    drop(server);
}

/// `(comm, CapEff)` of every thread of `pid`.
fn thread_caps(pid: u32) -> Vec<(String, u64)> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .map(|t| {
            let t = t.unwrap().path();
            let status = std::fs::read_to_string(t.join("status")).unwrap();
            let eff = status.lines().find_map(|l| l.strip_prefix("CapEff:")).unwrap().trim().to_owned();
            let comm = std::fs::read_to_string(t.join("comm")).unwrap().trim().to_owned();
            (comm, u64::from_str_radix(&eff, 16).unwrap())
        })
        .collect()
}

#[test]
fn with_the_https_overlay_capabilities_only_the_attacher_thread_keeps_sys_admin_and_sys_ptrace() {
    if !require_kernel(
        "with_the_https_overlay_capabilities_only_the_attacher_thread_keeps_sys_admin_and_sys_ptrace",
    ) {
        return;
    }
    // The loader's capabilities in deploy/overlays/https: the base's plus these two.
    let overlay = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/overlays/https/kustomization.yaml"),
    )
    .unwrap();
    for cap in ["value: SYS_ADMIN", "value: SYS_PTRACE", "value: --tls=on"] {
        assert!(overlay.contains(cap), "overlay has {cap}");
    }
    let set = "-all,+bpf,+perfmon,+sys_admin,+sys_ptrace";
    let prefix: Vec<String> = vec![
        "setpriv".into(),
        format!("--inh-caps={set}"),
        format!("--ambient-caps={set}"),
        format!("--bounding-set={set}"),
        // The socket's group is the loader's own primary group, as in the DaemonSet.
        "--regid=65534".into(),
        "--clear-groups".into(),
    ];
    let (cert, key) = self_signed_cert();
    let pods = PodPair::new(54);
    let pin = std::path::PathBuf::from(format!("/sys/fs/bpf/nettel-https-caps-{}", std::process::id()));
    let loader =
        nettel_integration::process::Loader::start_wrapped(&prefix, &pin, 65534, &[65534], LOADER_ARGS);
    let pf = nettel_integration::process::pods_file(
        &scratch_dir("pods"),
        &[(&pods.b_v4, "py-caps", "web", "py-caps")],
    );
    let mut agg = nettel_integration::process::Aggregator::start(&loader.socket, Some(&pf), 65534, 65534);
    agg.wait_connected();
    let args = [fixture("http_server.py"), pods.b_v4.clone(), "8080".into(), cert, key];
    let _server = start(&pods.b, "python3", &args);
    let warm = warm_up(&agg, &pods.a, &pods.b_v4, "py-caps");
    let u = format!("https://{}:8080/ok", pods.b_v4);
    curl(&pods.a, &["-k", &u, &u, &u]);
    wait_for(Duration::from_secs(10), "3 HTTPS GET requests attributed to py-caps", || {
        let text = agg.scrape();
        (count_of(&text, "py-caps", "GET", "200") == 3
            && sum(&text, &format!("{HIST}_count"), &[("pod", "py-caps")]) == 3 + warm)
            .then_some(())
    });
    let threads = thread_caps(loader.proc.child.id());
    let admin_ptrace = (1u64 << 21) | (1 << 19);
    for (comm, eff) in &threads {
        let want = if comm == "nt-tls-attach" { admin_ptrace } else { 0 };
        assert_eq!(*eff, want, "{comm}: {threads:?}");
    }
    assert_eq!(threads.iter().filter(|(c, _)| c == "nt-tls-attach").count(), 1, "{threads:?}");
}

/// Files instrumented right now, from the status RPC.
fn files_instrumented(loader: &nettel_integration::process::Loader) -> u64 {
    let tls = loader.status().counters.and_then(|c| c.probe).and_then(|p| p.tls);
    u64::from(tls.expect("TLS status").files_instrumented)
}

#[test]
fn a_library_nobody_maps_any_more_is_detached() {
    if !require_kernel("a_library_nobody_maps_any_more_is_detached") {
        return;
    }
    // A private copy of the system libssl (its own inode), which only this
    // server maps: LD_LIBRARY_PATH makes Python's _ssl load it.
    let dir = scratch_dir("libssl");
    let lib =
        Command::new("python3").args(["-c", "import _ssl; print(_ssl.__file__)"]).output().expect("python3");
    assert!(lib.status.success());
    let ldd = Command::new("ldd").arg(String::from_utf8_lossy(&lib.stdout).trim()).output().expect("ldd");
    let system_libssl = String::from_utf8_lossy(&ldd.stdout)
        .lines()
        .find_map(|l| l.split_whitespace().nth(2).filter(|p| p.contains("libssl.so")).map(str::to_owned))
        .expect("_ssl links libssl");
    std::fs::copy(&system_libssl, dir.join("libssl.so.3")).unwrap();

    let (cert, key) = self_signed_cert();
    let pods = PodPair::new(55);
    let stack = Stack::start_with(&[(&pods.b_v4, "py-private", "web", "py-private")], LOADER_ARGS);
    std::thread::sleep(Duration::from_secs(1)); // the first scans settle
    let before = files_instrumented(&stack.loader);
    // The kernel's view: uprobe links of this loader's TLS programs.
    let threads_map =
        nettel_integration::bpftool::pinned_map_id(&stack.loader.pin_dir.join("nt_tls_threads"));
    let uprobe_links = || -> usize {
        ["nt_tls_ent", "nt_tls_entx", "nt_tls_entx5", "nt_tls_rd_ret", "nt_tls_wr_ret"]
            .iter()
            .map(|p| nettel_integration::bpftool::links_feeding(p, threads_map))
            .sum()
    };
    let links_before = uprobe_links();

    let child = nettel_integration::netns::exec(&pods.b, "python3")
        .args([fixture("http_server.py"), pods.b_v4.clone(), "8080".into(), cert, key])
        .env("LD_LIBRARY_PATH", &dir)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let server = nettel_integration::servers::await_ready(child, "python3");
    wait_for(Duration::from_secs(10), "the private libssl instrumented", || {
        (files_instrumented(&stack.loader) == before + 1).then_some(())
    });
    assert!(uprobe_links() > links_before, "uprobes attached to the private libssl");
    let u = format!("https://{}:8080/ok", pods.b_v4);
    curl(&pods.a, &["-k", &u, &u]);
    wait_for(Duration::from_secs(10), "2 HTTPS requests through the private libssl", || {
        (sum(&stack.agg.scrape(), &format!("{HIST}_count"), &[("pod", "py-private")]) == 2).then_some(())
    });

    // The only process mapping it exits: after ten scans (300 ms each) unmapped, it is detached.
    drop(server);
    wait_for(Duration::from_secs(20), "the private libssl detached", || {
        (files_instrumented(&stack.loader) == before).then_some(())
    });
    assert_eq!(uprobe_links(), links_before, "the kernel no longer has its uprobe links");
    let log = stack.loader.proc.log();
    assert!(log.contains("TLS uprobes detached: no process maps the file any more."), "{log}");
}

/// A loader restarted with `--tls on` over the programs a `--tls off` loader
/// left pinned adopts them (same programs, same links), and they must follow
/// the new setting (`nt_http_cfg`, written at every start): HTTPS requests
/// are then counted exactly, once each. Without that, the adopted socket
/// hooks would skip the TLS bookkeeping and every request would be counted
/// as `tls_no_connection` instead.
#[test]
fn adopted_probes_follow_a_restart_that_turns_tls_on() {
    if !require_kernel("adopted_probes_follow_a_restart_that_turns_tls_on") {
        return;
    }
    const NOBODY: u32 = 65534;
    let (cert, key) = self_signed_cert();
    let pods = PodPair::new(56);
    let first = Loader::start(NOBODY, &[NOBODY], &["--tls", "off"]);
    let (pin_dir, socket) = first.exit(rustix::process::Signal::TERM);
    let loader =
        Loader::restart(&pin_dir, &socket, NOBODY, &[NOBODY], &[&["--tls", "on"][..], LOADER_ARGS].concat());
    let origins: Vec<String> = loader.status().probes.into_iter().map(|p| p.origin).collect();
    assert!(!origins.is_empty() && origins.iter().all(|o| o == "adopted"), "{origins:?}");
    let pods_path = pods_file(&scratch_dir("pods"), &[(&pods.b_v4, "nginx-tls", "web", "nginx-tls")]);
    let mut agg = Aggregator::start(&loader.socket, Some(&pods_path), NOBODY, NOBODY);
    agg.wait_connected();
    let stack = Stack { agg, loader, pods_file: pods_path };

    let _nginx = start_nginx_tls(&pods.b, &pods.b_v4, &cert, &key);
    let warm = warm_up(&stack.agg, &pods.a, &pods.b_v4, "nginx-tls");
    let mut expected = drive(&pods.a, &pods.b_v4);
    expected.insert(("HEAD", "200"), warm);
    assert_counts(&stack, "nginx-tls", &expected);
    assert_no_tls_loss(&stack.agg.scrape());
}

/// Where scripts/setup puts OpenSSL 1.1.1's shared libraries.
const OPENSSL_11: &str = "/opt/nettel-tools/openssl-1.1";

/// Where scripts/setup puts OpenSSL 3.5's shared libraries.
const OPENSSL_35: &str = "/opt/nettel-tools/openssl-3.5";

/// OpenSSL 1.1.1: the same uprobes on its `SSL_read`/`SSL_write` (on the
/// internal functions they call, as on Debian's 3.0), the same exact counts
/// and buckets as on OpenSSL 3, for a server started after the loader.
#[cfg(target_arch = "x86_64")]
#[test]
fn https_requests_through_openssl_1_1_are_counted_exactly() {
    if !require_kernel("https_requests_through_openssl_1_1_are_counted_exactly") {
        return;
    }
    let crypto = format!("{OPENSSL_11}/libcrypto-2ade47cd.so.1.1");
    let ssl = format!("{OPENSSL_11}/libssl-3a880ada.so.1.1");
    served_through_library(&crypto, &ssl, "OpenSSL 1.1.1", &[(57, "openssl-1-1", false)], None);
}

/// OpenSSL 3.5, the ABI of 3.2 and later: `SSL_write_ex` jumps to
/// `SSL_write_ex2`, and `ssl_write_internal`, where the uprobes go, takes the
/// byte count as its fifth argument (`nt_tls_entx5`). One server calls
/// `SSL_read`/`SSL_write`, the other `SSL_read_ex`/`SSL_write_ex`: exact
/// counts from both.
#[cfg(target_arch = "x86_64")]
#[test]
fn https_requests_through_openssl_3_5_plain_and_ex_calls_are_counted_exactly() {
    if !require_kernel("https_requests_through_openssl_3_5_plain_and_ex_calls_are_counted_exactly") {
        return;
    }
    let crypto = format!("{OPENSSL_35}/libcrypto-3a0647ea.so.3");
    let ssl = format!("{OPENSSL_35}/libssl-6a9b88ec.so.3");
    served_through_library(
        &crypto,
        &ssl,
        "OpenSSL 3.5",
        &[(58, "openssl-3-5", false), (59, "openssl-3-5-ex", true)],
        // Only a library of OpenSSL >= 3.2 gets this program: the probes sit
        // on ssl_write_internal, not on the exported functions.
        Some("nt_tls_entx5"),
    );
}

/// Serves HTTPS with `fixtures/openssl_server.c` on the given libraries
/// (`version` must be in libcrypto), one server per (pod pair id, pod name,
/// `_ex` calls) in turn, each started after the loader, and checks the
/// counts of each pod; and that `program`, if given, is attached (the
/// kernel's view, through bpftool).
fn served_through_library(
    crypto: &str,
    ssl: &str,
    version: &str,
    servers: &[(u8, &str, bool)],
    program: Option<&str>,
) {
    let bytes = std::fs::read(crypto)
        .unwrap_or_else(|e| panic!("{crypto}: {e}: run scripts/setup (it fetches {version})"));
    assert!(bytes.windows(version.len()).any(|w| w == version.as_bytes()), "{crypto} is not {version}");
    let server = scratch_dir("openssl-server").join("openssl_server");
    let out = Command::new("clang")
        .args(["-O2", "-Wall", "-Werror", "-o"])
        .arg(&server)
        .arg(fixture("openssl_server.c"))
        .output()
        .expect("clang (scripts/setup installs it)");
    assert!(out.status.success(), "openssl_server.c: {}", String::from_utf8_lossy(&out.stderr));

    let (cert, key) = self_signed_cert();
    let pairs: Vec<PodPair> = servers.iter().map(|(id, _, _)| PodPair::new(*id)).collect();
    // curl's libssl (the system's) must stay instrumented throughout: a file
    // no process maps for 10 scans is detached, and curl's SSL calls that
    // race the detach or the next attach are counted lost, correctly, which
    // the exact loss checks below would catch. A process holding it mapped
    // (Python's ssl module links it) keeps it attached.
    let _holder = start(
        &pairs[0].a,
        "python3",
        &["-c".into(), "import ssl, time; print('ready', flush=True); time.sleep(3600)".into()],
    );
    let entries: Vec<(&str, &str, &str, &str)> =
        pairs.iter().zip(servers).map(|(p, (_, pod, _))| (p.b_v4.as_str(), *pod, "web", *pod)).collect();
    let stack = Stack::start_with(&entries, LOADER_ARGS);
    for (pods, (_, pod, ex)) in pairs.iter().zip(servers) {
        let mut args = vec![
            crypto.to_owned(),
            ssl.to_owned(),
            pods.b_v4.clone(),
            "8080".into(),
            cert.clone(),
            key.clone(),
        ];
        if *ex {
            args.push("ex".into());
        }
        let _server = start(&pods.b, server.to_str().unwrap(), &args);
        // Not `files_instrumented` growing: another test's server may grow it.
        let warm = warm_up(&stack.agg, &pods.a, &pods.b_v4, pod);
        if let Some(program) = program {
            let threads =
                nettel_integration::bpftool::pinned_map_id(&stack.loader.pin_dir.join("nt_tls_threads"));
            assert!(
                nettel_integration::bpftool::links_feeding(program, threads) >= 1,
                "{pod}: no {program} link"
            );
        }
        // An SSL call the server was blocked in while the attacher instrumented
        // it spans the attach (return probes go first) and is counted lost:
        // correct accounting, before the server is traced. From here on nothing
        // may be lost, and no plaintext may go unattributed at all.
        let (_, lost_at_warm_up) = tls_losses(&stack.agg.scrape());
        let mut expected = drive(&pods.a, &pods.b_v4);
        expected.insert(("HEAD", "200"), warm);
        assert_counts(&stack, pod, &expected);
        let text = stack.agg.scrape();
        assert_eq!(
            tls_losses(&text),
            (0, lost_at_warm_up),
            "{pod}: TLS losses after warm-up:\n{}",
            series(&text)
        );
    }
}
