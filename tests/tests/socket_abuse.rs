// SPDX-License-Identifier: Apache-2.0
//! Abuse of the loader's socket by a peer the allow-list admits (root here):
//! garbage bytes, oversized frames and messages, a thousand connections,
//! connections that never send a request, subscribers that never read. For
//! each, the exact refusal counters of the status RPC (`SocketCounters`) and
//! the aggregator's mirror of them, a well-behaved status client and an
//! aggregator that keeps receiving every event, and, where connections or
//! buffers pile up, the loader's resident memory.
//!
//! Events come from the loader's benchmark probe (`--bench-tgid` this test
//! process): one per getppid() call. No network namespaces are used.

use std::{os::unix::net::UnixStream, path::Path, time::Duration};

use nettel_integration::{
    metrics::sum,
    process::{Aggregator, Loader},
    raw_h2::{self, FRAME_SIZE_ERROR},
    require_kernel, wait_for,
};
use nettel_proto::v1::{self, telemetry_service_client::TelemetryServiceClient};

const NOBODY: u32 = 65534;
/// The loader's default `--max-connections`.
const MAX_CONNECTIONS: usize = 16;
/// Resident memory the loader must stay under while connections or stalled
/// subscribers pile up: a quarter of the DaemonSet's 256 Mi limit (it idles
/// at about 20 MiB here, 6.4 MiB of it the 4 MiB ring's mapping).
const RSS_BOUND_KIB: u64 = 64 * 1024;
/// How long the loader gets to close a connection it should close.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(60);

/// A loader tracing this process's getppid() calls, and an aggregator (as
/// nobody) with its stream open: one of the loader's connections.
fn stack(loader_args: &[&str]) -> (Loader, Aggregator) {
    let pid = std::process::id().to_string();
    // No TLS attacher: its descriptors for the node's libssl files would
    // blur the descriptor counts this file asserts.
    let mut args = vec!["--bench-tgid", &pid, "--tls", "off"];
    args.extend_from_slice(loader_args);
    let loader = Loader::start(NOBODY, &[NOBODY], &args);
    let mut agg = Aggregator::start(&loader.socket, None, NOBODY, NOBODY);
    agg.wait_connected();
    (loader, agg)
}

/// Emits `n` events.
fn emit(n: u64) {
    for _ in 0..n {
        std::hint::black_box(rustix::process::getppid());
    }
}

fn synthetic_received(agg: &Aggregator) -> u64 {
    sum(&agg.scrape(), "nettel_events_received_total", &[("kind", "synthetic")])
}

/// Emits `n` events and waits until the aggregator has received exactly that
/// many more, none dropped for it.
fn aggregator_receives(agg: &Aggregator, n: u64) {
    let before = synthetic_received(agg);
    emit(n);
    let got = wait_for(Duration::from_secs(30), "the aggregator to receive the events", || {
        let now = synthetic_received(agg);
        (now >= before + n).then_some(now)
    });
    assert_eq!(got, before + n, "the aggregator received events nobody emitted");
    assert_eq!(sum(&agg.scrape(), "nettel_loader_queue_dropped_events_total", &[]), 0);
}

fn socket_counters(loader: &Loader) -> v1::SocketCounters {
    loader.status().counters.unwrap().socket.unwrap()
}

/// Waits until the aggregator's `nettel_loader_socket_refusals_total` (from
/// the in-band counters, every heartbeat) shows `expected`, and checks that no
/// other reason has any.
fn aggregator_mirrors(agg: &Aggregator, expected: &[(&str, u64)]) {
    const REASONS: [&str; 7] = [
        "peer_not_allowed",
        "over_connection_limit",
        "handshake_timeout",
        "protocol_error",
        "stalled_subscriber",
        "request_too_large",
        "invalid_request",
    ];
    let want = REASONS.map(|r| expected.iter().find(|(e, _)| *e == r).map_or(0, |(_, n)| *n));
    let got =
        |text: &str| REASONS.map(|r| sum(text, "nettel_loader_socket_refusals_total", &[("reason", r)]));
    wait_for(Duration::from_secs(30), "the aggregator's refusal metrics", || {
        let text = agg.scrape();
        (got(&text) == want).then_some(())
    });
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS");
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count()
}

/// Lets this process hold `want` descriptors (root may raise the hard limit).
fn raise_fd_limit(want: u64) {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let now = getrlimit(Resource::Nofile);
    let current = now.current.map_or(want, |c| c.max(want));
    let maximum = now.maximum.map(|m| m.max(current));
    setrlimit(Resource::Nofile, Rlimit { current: Some(current), maximum }).expect("raise RLIMIT_NOFILE");
}

/// Every abuser `s` gets closed by the loader.
fn all_closed(abusers: &mut [UnixStream]) {
    for s in abusers {
        raw_h2::read_until_closed(s, CLOSE_TIMEOUT);
    }
}

#[test]
fn garbage_bytes_and_oversized_frames_close_only_that_connection() {
    if !require_kernel("garbage_bytes_and_oversized_frames_close_only_that_connection") {
        return;
    }
    let (loader, agg) = stack(&[]);
    let socket = &loader.socket;

    // A TLS ClientHello and an HTTP/1.1 request instead of the HTTP/2 preface.
    let mut tls = raw_h2::connect_and_send(socket, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage");
    let mut http1 = raw_h2::connect_and_send(socket, b"GET / HTTP/1.1\r\nHost: loader\r\n\r\n");
    // A valid handshake, then a DATA frame announcing 1 MiB and a HEADERS frame
    // announcing 16 MiB - 1, both over the 16 KiB frame limit.
    let mut huge_data = raw_h2::connect_and_send(socket, &{
        let mut b = raw_h2::handshake();
        b.extend(raw_h2::frame_header(raw_h2::DATA, 1, 1 << 20));
        b
    });
    let mut huge_headers = raw_h2::connect_and_send(socket, &{
        let mut b = raw_h2::handshake();
        b.extend(raw_h2::frame_header(raw_h2::HEADERS, 1, (1 << 24) - 1));
        b
    });
    for s in [&mut tls, &mut http1] {
        raw_h2::read_until_closed(s, CLOSE_TIMEOUT);
    }
    for s in [&mut huge_data, &mut huge_headers] {
        let sent = raw_h2::read_until_closed(s, CLOSE_TIMEOUT);
        assert_eq!(raw_h2::goaway_code(&sent), Some(FRAME_SIZE_ERROR), "{sent:02x?}");
    }

    assert_eq!(socket_counters(&loader), v1::SocketCounters { protocol_errors: 4, ..Default::default() });
    aggregator_receives(&agg, 1000);
    aggregator_mirrors(&agg, &[("protocol_error", 4)]);
    assert_eq!(sum(&agg.scrape(), "nettel_stream_connects_total", &[]), 1, "the aggregator's stream broke");
}

#[test]
fn oversized_and_invalid_requests_are_refused_on_a_connection_that_keeps_serving() {
    if !require_kernel("oversized_and_invalid_requests_are_refused_on_a_connection_that_keeps_serving") {
        return;
    }
    let (loader, agg) = stack(&[]);
    let socket = loader.socket.clone();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let status = rt.block_on(async move {
        let channel = nettel_integration::process::loader_channel(socket).await;
        let mut client = TelemetryServiceClient::new(channel.clone());
        // 4 MiB, 256 times the 16 KiB the loader decodes.
        let huge = v1::StreamEventsRequest { subscriber_name: "x".repeat(4 << 20) };
        let e = client.stream_events(huge).await.expect_err("a 4 MiB request was accepted");
        assert_eq!(e.code(), tonic::Code::OutOfRange, "{e}");

        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready().await.unwrap();
        let e = grpc
            .unary::<_, v1::GetLoaderStatusResponse, _>(
                tonic::Request::new(v1::GetLoaderStatusRequest {}),
                "/nettel.telemetry.v1.TelemetryService/LoadProgram".parse().unwrap(),
                tonic_prost::ProstCodec::default(),
            )
            .await
            .expect_err("an unknown method answered");
        assert_eq!(e.code(), tonic::Code::Unimplemented, "{e}");
        grpc.ready().await.unwrap();
        let e = grpc
            .server_streaming::<_, v1::StreamEventsResponse, _>(
                // Field 1 as a varint, where StreamEventsRequest has a string.
                tonic::Request::new(v1::Synthetic { sequence: 7 }),
                "/nettel.telemetry.v1.TelemetryService/StreamEvents".parse().unwrap(),
                tonic_prost::ProstCodec::default(),
            )
            .await
            .expect_err("an undecodable request was accepted");
        assert_eq!(e.code(), tonic::Code::Internal, "{e}");

        // The same connection still serves.
        client
            .get_loader_status(v1::GetLoaderStatusRequest {})
            .await
            .expect("status after refusals")
            .into_inner()
    });
    let expected = v1::SocketCounters { requests_too_large: 1, requests_invalid: 2, ..Default::default() };
    assert_eq!(status.counters.unwrap().socket.unwrap(), expected);
    assert_eq!(socket_counters(&loader), expected);
    aggregator_receives(&agg, 1000);
    aggregator_mirrors(&agg, &[("request_too_large", 1), ("invalid_request", 2)]);
}

#[test]
fn a_thousand_connections_are_refused_over_the_limit_without_holding_descriptors() {
    if !require_kernel("a_thousand_connections_are_refused_over_the_limit_without_holding_descriptors") {
        return;
    }
    const N: usize = 1000;
    raise_fd_limit(N as u64 + 1024);
    // A long handshake deadline: the admitted connections stay for the whole test.
    let (loader, agg) = stack(&["--handshake-timeout-ms", "60000"]);
    let pid = loader.proc.child.id();
    let fds_before = fd_count(pid);
    let rss_before = rss_kib(pid);

    let mut conns: Vec<UnixStream> =
        (0..N).map(|_| UnixStream::connect(&loader.socket).expect("connect")).collect();
    // The aggregator holds one connection; 15 more are admitted, the rest closed at once.
    let admitted = MAX_CONNECTIONS - 1;
    let closed = wait_for(CLOSE_TIMEOUT, "the loader to close the connections over the limit", || {
        let closed = conns.iter().filter(|s| raw_h2::is_closed(s)).count();
        (closed >= N - admitted).then_some(closed)
    });
    assert_eq!(closed, N - admitted);
    let fds = fd_count(pid);
    assert!(
        fds <= fds_before + admitted,
        "the loader holds {fds} descriptors with {N} peers connected, {fds_before} before"
    );
    let rss = rss_kib(pid);
    assert!(rss < RSS_BOUND_KIB, "loader RSS {rss} KiB with {N} peers connected ({rss_before} KiB before)");
    // The aggregator's stream is unaffected while all of them are connected.
    aggregator_receives(&agg, 1000);
    assert_eq!(conns.iter().filter(|s| raw_h2::is_closed(s)).count(), N - admitted);

    // Closed by the peers before any byte: not a refusal.
    conns.clear();
    wait_for(CLOSE_TIMEOUT, "the loader to close the admitted connections", || {
        (fd_count(pid) <= fds_before).then_some(())
    });
    assert_eq!(
        socket_counters(&loader),
        v1::SocketCounters { connections_over_limit: (N - admitted) as u64, ..Default::default() }
    );
    aggregator_mirrors(&agg, &[("over_connection_limit", (N - admitted) as u64)]);
    eprintln!("loader RSS: {rss_before} KiB before, {rss} KiB with {N} peers connected");
}

#[test]
fn peers_that_never_send_a_request_are_closed_at_the_handshake_deadline() {
    if !require_kernel("peers_that_never_send_a_request_are_closed_at_the_handshake_deadline") {
        return;
    }
    let (loader, agg) = stack(&["--handshake-timeout-ms", "2000"]);
    let socket: &Path = &loader.socket;
    // Every free connection slot: 13 peers that send nothing, one that sends
    // the HTTP/2 handshake only, one that opens a request and never sends
    // its message.
    let mut abusers: Vec<UnixStream> =
        (0..MAX_CONNECTIONS - 3).map(|_| UnixStream::connect(socket).unwrap()).collect();
    abusers.push(raw_h2::connect_and_send(socket, &raw_h2::handshake()));
    abusers.push(raw_h2::connect_and_send(socket, &{
        let mut b = raw_h2::handshake();
        b.extend(raw_h2::request_headers(1, "StreamEvents"));
        b
    }));
    // The aggregator keeps its stream while they hold the slots.
    aggregator_receives(&agg, 1000);
    all_closed(&mut abusers);

    // The slots are free again: a new client gets served.
    assert_eq!(
        socket_counters(&loader),
        v1::SocketCounters { handshake_timeouts: (MAX_CONNECTIONS - 1) as u64, ..Default::default() }
    );
    aggregator_receives(&agg, 1000);
    aggregator_mirrors(&agg, &[("handshake_timeout", (MAX_CONNECTIONS - 1) as u64)]);
    // The aggregator's own connection was never closed.
    assert_eq!(sum(&agg.scrape(), "nettel_stream_connects_total", &[]), 1);
    assert_eq!(loader.status().counters.unwrap().subscribers_connected, 1);
}

#[test]
fn subscribers_that_never_read_are_dropped_with_bounded_memory() {
    if !require_kernel("subscribers_that_never_read_are_dropped_with_bounded_memory") {
        return;
    }
    const CONNS: usize = 12;
    const STREAMS: u32 = 4;
    const EVENTS: u64 = 200_000;
    let (loader, agg) = stack(&["--stall-timeout-ms", "3000"]);
    let pid = loader.proc.child.id();
    // 12 connections with 4 subscribers each that never read a byte.
    let mut stalled: Vec<UnixStream> = (0..CONNS)
        .map(|c| {
            let mut b = raw_h2::handshake();
            for s in 0..STREAMS {
                b.extend(raw_h2::stream_events(2 * s + 1, &format!("never-reads-{c}-{s}")));
            }
            raw_h2::connect_and_send(&loader.socket, &b)
        })
        .collect();
    let subscribers = 1 + CONNS as u32 * STREAMS;
    wait_for(Duration::from_secs(30), "the stalled subscribers to attach", || {
        (loader.status().counters.unwrap().subscribers_connected == subscribers).then_some(())
    });
    let rss_before = rss_kib(pid);
    let received_before = synthetic_received(&agg);

    // Far more than their HTTP/2 windows, send buffers and hub queues hold,
    // paced so the aggregator can keep up.
    let mut rss_max = rss_before;
    for _ in 0..EVENTS / 10_000 {
        emit(10_000);
        std::thread::sleep(Duration::from_millis(20));
        rss_max = rss_max.max(rss_kib(pid));
    }
    wait_for(Duration::from_secs(60), "the stalled subscribers to be dropped", || {
        rss_max = rss_max.max(rss_kib(pid));
        let c = loader.status().counters.unwrap();
        (c.subscribers_connected == 1).then_some(())
    });
    assert!(rss_max < RSS_BOUND_KIB, "loader RSS peaked at {rss_max} KiB ({rss_before} KiB before)");
    // Each stalled connection was closed, and counted once.
    all_closed(&mut stalled);
    let c = loader.status().counters.unwrap();
    assert_eq!(
        c.socket.unwrap(),
        v1::SocketCounters { stalled_connections: CONNS as u64, ..Default::default() }
    );

    // Every event reached the aggregator or was counted as lost in the kernel
    // or dropped for it; the loader's other drops are the stalled
    // subscribers', and there were some.
    let (received, kernel_lost, agg_dropped) =
        wait_for(Duration::from_secs(30), "the aggregator to account for every event", || {
            let text = agg.scrape();
            let r = sum(&text, "nettel_events_received_total", &[("kind", "synthetic")]) - received_before;
            let k = sum(&text, "nettel_kernel_lost_events_total", &[]);
            let d = sum(&text, "nettel_loader_queue_dropped_events_total", &[]);
            (r + k + d >= EVENTS).then_some((r, k, d))
        });
    assert_eq!(received + kernel_lost + agg_dropped, EVENTS);
    assert_eq!(sum(&agg.scrape(), "nettel_stream_connects_total", &[]), 1, "the aggregator's stream broke");
    assert!(
        c.subscriber_queue_drops > agg_dropped,
        "no drops counted for the stalled subscribers: {} in all, {agg_dropped} for the aggregator",
        c.subscriber_queue_drops
    );
    aggregator_mirrors(&agg, &[("stalled_subscriber", CONNS as u64)]);
    eprintln!(
        "loader RSS: {rss_before} KiB before, {rss_max} KiB at most; received {received}, kernel lost \
         {kernel_lost}; drops: {} ({agg_dropped} the aggregator's)",
        c.subscriber_queue_drops
    );
}
