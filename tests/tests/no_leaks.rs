// SPDX-License-Identifier: Apache-2.0
//! Kernel addresses and BPF verifier output never leave the loader: during a
//! run with real HTTP traffic (and the loader logging at `debug`), the
//! loader's and aggregator's logs, `/metrics` in both exposition formats, the
//! status RPC and the event stream itself are searched for kernel pointers
//! (hex `ffff8...`-`ffffff...` words, and their decimal values) and for
//! verifier log text. A successful load has no verifier log; a rejected one,
//! whose log does hold kernel addresses, is covered by
//! loader/tests/verifier_log.rs (the kernel rejects a fixture program, and the
//! loader's error for it must carry neither).
//!
//! Network namespaces: id 42. No retransmits are generated.

use std::{path::PathBuf, time::Duration};

use nettel_integration::{
    metrics::{http_get, sum},
    netns::{exec, PodPair},
    process::{pods_file, scratch_dir, Aggregator, Loader},
    require_kernel,
    traffic::start_server,
    wait_for,
};
use nettel_proto::v1;

const NOBODY: u32 = 65534;

/// Lowest x86-64/arm64 kernel-half address (canonical upper half).
const KERNEL_HALF: u64 = 0xffff_8000_0000_0000;

/// Verifier log fragments (kernel/bpf/verifier.c output).
const VERIFIER_TEXT: &[&str] =
    &["processed ", " insns (limit", "R10=", "R1=", "fp-", "invalid mem access", "back-edge", "verifier log"];

/// Every kernel-pointer-looking token in `text`: 16 hex digits starting with
/// `ffff` and a top bit set in the next digit, or a decimal >= `KERNEL_HALF`.
fn kernel_pointers(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_ascii_alphanumeric())
        .map(|w| w.strip_prefix("0x").unwrap_or(w))
        .filter(|w| {
            let hex = w.len() == 16
                && w.chars().all(|c| c.is_ascii_hexdigit())
                && u64::from_str_radix(w, 16).is_ok_and(|v| v >= KERNEL_HALF);
            let dec =
                w.chars().all(|c| c.is_ascii_digit()) && w.parse::<u64>().is_ok_and(|v| v >= KERNEL_HALF);
            hex || dec
        })
        .map(str::to_owned)
        .collect()
}

fn assert_clean(what: &str, text: &str) {
    let ptrs = kernel_pointers(text);
    assert!(ptrs.is_empty(), "{what} contains kernel-address-like values {ptrs:?}:\n{text}");
    for v in VERIFIER_TEXT {
        assert!(!text.contains(v), "{what} contains verifier text `{v}`:\n{text}");
    }
}

/// Reads `n` messages of the event stream (Debug-formatted).
fn stream(socket: PathBuf, n: usize) -> String {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async move {
        let channel = nettel_integration::process::loader_channel(socket).await;
        let mut s = v1::telemetry_service_client::TelemetryServiceClient::new(channel)
            .stream_events(v1::StreamEventsRequest { subscriber_name: "leak-check".into() })
            .await
            .expect("StreamEvents")
            .into_inner();
        let mut out = String::new();
        for _ in 0..n {
            let msg = tokio::time::timeout(Duration::from_secs(10), s.message())
                .await
                .expect("a stream message within 10 s")
                .expect("stream error")
                .expect("stream ended");
            out.push_str(&format!("{msg:?}\n"));
        }
        out
    })
}

#[test]
fn no_kernel_addresses_or_verifier_text_in_logs_metrics_or_the_stream() {
    if !require_kernel("no_kernel_addresses_or_verifier_text_in_logs_metrics_or_the_stream") {
        return;
    }
    assert_eq!(
        kernel_pointers("at 0xffff88810a2b3c40, ffffffff81000000 and 18446744071578845184"),
        ["ffff88810a2b3c40", "ffffffff81000000", "18446744071578845184"]
    );
    assert!(kernel_pointers(
        "trace 4bf92f3577b34da6a3ce929d0e0e4736 epoch 73c72c81e8ee8887 7fffdeadbeef0000"
    )
    .is_empty());

    let pods = PodPair::new(42);
    // `env` execs the loader: debug logging includes aya's own log records.
    let pin_dir = PathBuf::from(format!("/sys/fs/bpf/nettel-leaks-{}", std::process::id()));
    let loader = Loader::start_wrapped(
        &["env".into(), "RUST_LOG=debug".into()],
        &pin_dir,
        NOBODY,
        &[NOBODY],
        &["--heartbeat-ms", "100"],
    );
    let pf = pods_file(&scratch_dir("pods"), &[(&pods.b_v4, "web-0", "shop", "web")]);
    let mut agg = Aggregator::start(&loader.socket, Some(&pf), NOBODY, NOBODY);
    agg.wait_connected();

    // A stream subscriber of our own, reading while traffic flows.
    let socket = loader.socket.clone();
    let reader = std::thread::spawn(move || stream(socket, 20));
    let addr = format!("{}:8080", pods.b_v4);
    let mut server = start_server(&pods.b, &["http", &addr]);
    for path in ["/ok", "/fail", "/missing", "/ok"] {
        let out = exec(&pods.a, "curl")
            .args(["-s", "-o", "/dev/null", "--max-time", "10"])
            .args(["-H", "traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"])
            .arg(format!("http://{addr}{path}"))
            .output()
            .unwrap();
        assert!(out.status.success());
    }
    wait_for(Duration::from_secs(10), "4 HTTP requests", || {
        (sum(&agg.scrape(), "http_request_duration_seconds_count", &[("pod", "web-0")]) == 4).then_some(())
    });
    let _ = server.kill();
    let _ = server.wait();
    let events = reader.join().expect("stream reader");
    assert!(events.contains("HttpRequest"), "the stream carried no HTTP event:\n{events}");

    assert_clean("the event stream", &events);
    assert_clean("the status RPC", &format!("{:?}", loader.status()));
    assert_clean("/metrics", &agg.scrape());
    let (_, om) =
        http_get(agg.port, "/metrics", Some("application/openmetrics-text; version=1.0.0")).unwrap();
    assert_clean("/metrics (OpenMetrics)", &om);
    assert_clean("the aggregator log", &agg.proc.log());
    assert_clean("the loader log", &loader.proc.log());
}
