// SPDX-License-Identifier: Apache-2.0
//! Real TCP traffic between netns pods (through `nettel-traffic`), and the
//! exact-count assertion every retransmit test ends with.

use std::{
    io::{BufRead, BufReader},
    process::{Child, Stdio},
    time::Duration,
};

use crate::{metrics::sum, netns::exec, process::bin, process::Aggregator, wait_for};

/// The retransmit metric.
pub const RTX: &str = "node_tcp_retransmits_total";

/// Starts `nettel-traffic ARGS` in `ns` and waits for it to print `ready`.
pub fn start_server(ns: &str, args: &[&str]) -> Child {
    let traffic = bin("nettel-traffic");
    let mut child =
        exec(ns, traffic.to_str().unwrap()).args(args).stdout(Stdio::piped()).spawn().expect("server");
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap()).read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ready", "server in {ns} did not start");
    child
}

/// Runs `nettel-traffic ARGS` in `ns` to completion.
pub fn run_client(ns: &str, args: &[&str]) {
    let traffic = bin("nettel-traffic");
    let status = exec(ns, traffic.to_str().unwrap()).args(args).status().expect("client");
    assert!(status.success(), "client {args:?} in {ns} failed");
}

/// Starts a client in `ns` without waiting for it.
pub fn spawn_client(ns: &str, args: &[&str]) -> Child {
    let traffic = bin("nettel-traffic");
    exec(ns, traffic.to_str().unwrap()).args(args).spawn().expect("client")
}

/// Waits for a server started by [`start_server`] to exit successfully.
pub fn finish(mut server: Child) {
    let status = server.wait().unwrap();
    assert!(status.success(), "server failed");
}

/// Waits until the aggregator's count for `labels` grew by exactly `want`
/// (the kernel's count) and checks it stays there; panics with both numbers
/// otherwise. `want` must be > 0, proving the traffic produced retransmits.
pub fn assert_counted(agg: &Aggregator, labels: &[(&str, &str)], before: u64, want: u64, what: &str) {
    assert_counted_explained(agg, labels, before, want, what, &String::new);
}

/// [`assert_counted`], with `explain()` (e.g. the kernel counters that moved)
/// in the failure message.
pub fn assert_counted_explained(
    agg: &Aggregator,
    labels: &[(&str, &str)],
    before: u64,
    want: u64,
    what: &str,
    explain: &dyn Fn() -> String,
) {
    assert!(want > 0, "{what}: the kernel counted no retransmits; the drop rule did not bite");
    let mut last = 0;
    let settled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wait_for(Duration::from_secs(10), what, || {
            last = sum(&agg.scrape(), RTX, labels) - before;
            (last == want).then_some(())
        })
    }));
    assert!(
        settled.is_ok(),
        "{what}: nettel counted {last}, the kernel counted {want}\n{}\n{}",
        explain(),
        agg.scrape()
    );
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        sum(&agg.scrape(), RTX, labels) - before,
        want,
        "{what}: count changed after settling\n{}",
        explain()
    );
}
