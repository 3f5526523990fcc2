// SPDX-License-Identifier: Apache-2.0
//! End to end against the real kernel: netns "pods", real TCP, real drops,
//! the real loader (root) and aggregator (uid 65534), compared exactly with
//! the kernel's own per-namespace counters.

use std::{process::Stdio, time::Duration};

use nettel_integration::{
    kernel::{counter, moved, quiet_retrans_segs, retrans_segs, tcp_counters},
    metrics::sum,
    netns::PodPair,
    process::{pods_file, scratch_dir, Aggregator, Loader, Stack},
    require_kernel,
    traffic::{
        assert_counted, assert_counted_explained, finish, run_client, spawn_client, start_server, RTX,
    },
    wait_for,
};

const NOBODY: u32 = 65534;

/// Runs `promtool check metrics` (Prometheus's own linter) on a scrape.
fn promtool_check(text: &str) {
    use std::io::Write;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus; scripts/setup installs it)");
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && report.trim().is_empty(), "promtool check metrics:\n{report}\n{text}");
}

#[test]
fn data_retransmits_match_kernel_counters_v4_and_v6() {
    if !require_kernel("data_retransmits_match_kernel_counters_v4_and_v6") {
        return;
    }
    let pods = PodPair::new(1);
    let stack = Stack::start(&[
        (&pods.a_v4, "client-0", "team-a", "client"),
        (&pods.a_v6, "client-0", "team-a", "client"),
        (&pods.b_v4, "server-0", "team-b", "server"),
        (&pods.b_v6, "server-0", "team-b", "server"),
    ]);
    let agg = &stack.agg;
    // A second subscriber (how an aggregator is swapped) gets the full stream too.
    let mut twin = Aggregator::start(&stack.loader.socket, Some(&stack.pods_file), NOBODY, NOBODY);
    twin.wait_connected();
    pods.drop_inbound(&pods.b, 0.05, &["--dport", "8080"]);

    let server_labels = [
        ("pod", "server-0"),
        ("namespace", "team-b"),
        ("service", "server"),
        ("dest_port", "8080"),
        ("kind", "data"),
    ];
    for (family, listen, connect) in [
        ("IPv4", format!("{}:8080", pods.b_v4), format!("{}:8080", pods.b_v4)),
        ("IPv6", format!("[{}]:8080", pods.b_v6), format!("[{}]:8080", pods.b_v6)),
    ] {
        let text = agg.scrape();
        let (m_server, m_client) = (sum(&text, RTX, &server_labels), sum(&text, RTX, &[("pod", "client-0")]));
        let twin_before = sum(&twin.scrape(), RTX, &server_labels);
        let (k_a, k_b) = (retrans_segs(&pods.a), retrans_segs(&pods.b));
        let counters_a = tcp_counters(&pods.a);

        let server = start_server(&pods.b, &["sink", &listen, "1"]);
        run_client(&pods.a, &["send", &connect, "16000000"]);
        finish(server);

        // Everything pod A retransmitted went to server-0:8080 ...
        let want = retrans_segs(&pods.a) - k_a;
        let explain =
            || format!("pod A's TCP counters that moved:\n{}", moved(&counters_a, &tcp_counters(&pods.a)));
        assert_counted_explained(
            agg,
            &server_labels,
            m_server,
            want,
            &format!("{family} retransmits to server-0"),
            &explain,
        );
        assert_counted(
            &twin,
            &server_labels,
            twin_before,
            want,
            &format!("{family} retransmits to server-0, second subscriber"),
        );
        // ... and everything pod B retransmitted (e.g. FINs) is attributed to client-0.
        let want_b = retrans_segs(&pods.b) - k_b;
        let got_b = sum(&agg.scrape(), RTX, &[("pod", "client-0")]) - m_client;
        assert_eq!(got_b, want_b, "{family} retransmits to client-0");
    }
    let text = agg.scrape();
    promtool_check(&text);
    let (status, om) = nettel_integration::metrics::http_get(
        agg.port,
        "/metrics",
        Some("application/openmetrics-text; version=1.0.0"),
    )
    .unwrap();
    assert!(status.contains(" 200 ") && om.ends_with("# EOF\n"), "OpenMetrics on request: {status}");
    assert!(om.contains("# TYPE node_tcp_retransmits counter"), "{om}");
    assert_eq!(sum(&text, "nettel_kernel_lost_events_total", &[]), 0);
    assert_eq!(sum(&text, "nettel_loader_queue_dropped_events_total", &[]), 0);
    assert_eq!(sum(&text, "nettel_stream_gaps_total", &[]), 0);
}

#[test]
fn dual_stack_server_retransmits_to_a_v4_client_are_attributed_through_v4_mapping() {
    if !require_kernel("dual_stack_server_retransmits_to_a_v4_client_are_attributed_through_v4_mapping") {
        return;
    }
    let pods = PodPair::new(2);
    // Only the IPv4 address is listed: the server's AF_INET6 socket reports the
    // client as ::ffff:10.77.2.1, which must still resolve.
    // The server is listed too: the drop rule can hit its ACK of the client's
    // FIN, and the client then retransmits the FIN to it.
    let stack = Stack::start(&[
        (&pods.a_v4, "client-0", "team-a", "client"),
        (&pods.b_v4, "server-0", "team-b", "server"),
    ]);
    let agg = &stack.agg;
    pods.drop_inbound(&pods.a, 0.05, &["--sport", "8080"]);

    // Every kind: the drop rule can also hit the SYN-ACK (kind="synack").
    let labels = [("pod", "client-0"), ("namespace", "team-a"), ("dest_port", "ephemeral")];
    let data = [("pod", "client-0"), ("kind", "data")];
    let (before, before_data) = (sum(&agg.scrape(), RTX, &labels), sum(&agg.scrape(), RTX, &data));
    let k_b = retrans_segs(&pods.b);
    let server = start_server(&pods.b, &["source", "[::]:8080", "1", "16000000"]);
    run_client(&pods.a, &["recv", &format!("{}:8080", pods.b_v4)]);
    finish(server);
    assert_counted(agg, &labels, before, retrans_segs(&pods.b) - k_b, "retransmits to the v4 client");
    assert!(
        sum(&agg.scrape(), RTX, &data) > before_data,
        "data retransmits from the AF_INET6 socket were attributed"
    );
    assert_eq!(sum(&agg.scrape(), "nettel_unresolved_addresses_total", &[("kind", "tcp_retransmit")]), 0);
}

#[test]
fn synack_retransmits_are_counted_with_kind_synack() {
    if !require_kernel("synack_retransmits_are_counted_with_kind_synack") {
        return;
    }
    let pods = PodPair::new(3);
    let stack = Stack::start(&[
        (&pods.a_v4, "client-0", "team-a", "client"),
        (&pods.b_v4, "server-0", "team-b", "server"),
    ]);
    let agg = &stack.agg;
    // Lose a share of the SYN-ACKs on their way into the client pod.
    pods.drop_inbound(&pods.a, 0.3, &["--sport", "8080", "--tcp-flags", "SYN,ACK", "SYN,ACK"]);

    let synack =
        [("pod", "client-0"), ("namespace", "team-a"), ("kind", "synack"), ("dest_port", "ephemeral")];
    let text = agg.scrape();
    let (m_synack, m_client, m_server) = (
        sum(&text, RTX, &synack),
        sum(&text, RTX, &[("pod", "client-0")]),
        sum(&text, RTX, &[("pod", "server-0")]),
    );
    let (k_a, k_b) = (retrans_segs(&pods.a), retrans_segs(&pods.b));
    let k_syn = counter(&pods.b, "TcpExt", "TCPSynRetrans");

    let server = start_server(&pods.b, &["sink", &format!("{}:8080", pods.b_v4), "24"]);
    run_client(&pods.a, &["dial", &format!("{}:8080", pods.b_v4), "24"]);
    finish(server);

    // The server pod only retransmits SYN-ACKs here: TCPSynRetrans counts them.
    assert_counted(
        agg,
        &synack,
        m_synack,
        counter(&pods.b, "TcpExt", "TCPSynRetrans") - k_syn,
        "SYN-ACK retransmits",
    );
    let text = agg.scrape();
    assert_eq!(
        sum(&text, RTX, &[("pod", "client-0")]) - m_client,
        retrans_segs(&pods.b) - k_b,
        "all of B's retransmits"
    );
    assert_eq!(
        sum(&text, RTX, &[("pod", "server-0")]) - m_server,
        retrans_segs(&pods.a) - k_a,
        "all of A's retransmits"
    );
}

#[test]
fn a_peer_outside_the_allow_list_cannot_read_the_stream() {
    if !require_kernel("a_peer_outside_the_allow_list_cannot_read_the_stream") {
        return;
    }
    let loader = Loader::start(NOBODY, &[NOBODY], &[]);
    // uid 4242 is in the socket's group, so the filesystem lets it connect;
    // only the SO_PEERCRED allow-list stands in its way.
    let intruder = Aggregator::start(&loader.socket, None, 4242, NOBODY);
    let rejected = wait_for(Duration::from_secs(10), "a rejected peer", || {
        let c = loader.status().counters.unwrap_or_default();
        (c.peers_rejected > 0).then_some(c.peers_rejected)
    });
    assert!(rejected >= 1);
    std::thread::sleep(Duration::from_secs(1));
    let text = intruder.scrape();
    assert_eq!(sum(&text, "nettel_stream_connects_total", &[]), 0, "the intruder got a stream");
    assert_eq!(sum(&text, "nettel_loader_connected", &[]), 0);
    assert!(loader.proc.log().contains("uid=4242"), "rejection not logged:\n{}", loader.proc.log());

    // The allowed uid still gets through on the same loader.
    let mut allowed = Aggregator::start(&loader.socket, None, NOBODY, NOBODY);
    allowed.wait_connected();
    assert_eq!(loader.status().counters.unwrap().subscribers_connected, 1);
}

#[test]
fn aggregator_killed_mid_traffic_reconnects_and_counts_again() {
    if !require_kernel("aggregator_killed_mid_traffic_reconnects_and_counts_again") {
        return;
    }
    let pods = PodPair::new(4);
    let mut loader = Loader::start(NOBODY, &[NOBODY], &[]);
    let dir = scratch_dir("pods");
    let pf = pods_file(&dir, &[(&pods.b_v4, "server-0", "team-b", "server")]);
    let mut first = Aggregator::start(&loader.socket, Some(&pf), NOBODY, NOBODY);
    first.wait_connected();
    pods.drop_inbound(&pods.b, 0.05, &["--dport", "8080"]);
    let addr = format!("{}:8080", pods.b_v4);

    // Kill the aggregator while a transfer is running.
    let server = start_server(&pods.b, &["sink", &addr, "2"]);
    let mut client = spawn_client(&pods.a, &["send", &addr, "8000000"]);
    std::thread::sleep(Duration::from_millis(300));
    first.proc.stop_with(rustix::process::Signal::KILL);
    let mut second = Aggregator::start(&loader.socket, Some(&pf), NOBODY, NOBODY);
    second.wait_connected();
    assert!(client.wait().unwrap().success());

    // From here on the new aggregator must count exactly. The baseline is taken
    // once the first transfer's retransmits have stopped and been delivered.
    let labels = [("pod", "server-0"), ("dest_port", "8080")];
    let k_a = quiet_retrans_segs(&pods.a);
    let before = sum(&second.scrape(), RTX, &labels);
    run_client(&pods.a, &["send", &addr, "16000000"]);
    finish(server);
    assert_counted(&second, &labels, before, retrans_segs(&pods.a) - k_a, "retransmits after the restart");
    assert_eq!(loader.status().counters.unwrap().subscribers_connected, 1, "the killed subscriber is gone");

    // SIGTERM stops the loader cleanly and removes its socket.
    assert!(loader.proc.stop_with(rustix::process::Signal::TERM), "loader exit:\n{}", loader.proc.log());
    assert!(!loader.socket.exists(), "socket left behind");
}
