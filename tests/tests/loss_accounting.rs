// SPDX-License-Identifier: Apache-2.0
//! Kernel-side loss is counted, not hidden: with a ring buffer far too small
//! for the load, every event the probe produced is either received by the
//! aggregator or counted as lost, exactly.

use std::{
    io::{BufRead, BufReader, Write},
    process::{Command, Stdio},
    time::Duration,
};

use nettel_integration::{
    metrics::sum,
    process::{Aggregator, Loader},
    require_kernel, wait_for,
};

#[test]
fn every_event_is_received_or_counted_lost_with_a_tiny_ring_buffer() {
    if !require_kernel("every_event_is_received_or_counted_lost_with_a_tiny_ring_buffer") {
        return;
    }
    // The generator: one getppid() per event, only this process is traced.
    let mut gen = Command::new(env!("CARGO_BIN_EXE_nettel-bench"))
        .arg("gen")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut gen_out = BufReader::new(gen.stdout.take().unwrap());
    let mut line = String::new();
    gen_out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ready");

    let tgid = gen.id().to_string();
    let loader = Loader::start(65534, &[65534], &["--ring-buffer-bytes", "4096", "--bench-tgid", &tgid]);
    let mut agg = Aggregator::start(&loader.socket, None, 65534, 65534);
    agg.wait_connected();

    // Unpaced for half a second: far more than a 4 KiB ring can hold.
    writeln!(gen.stdin.as_mut().unwrap(), "0 0.5").unwrap();
    line.clear();
    gen_out.read_line(&mut line).unwrap();
    let sent: u64 = line.split_whitespace().next().unwrap().parse().unwrap();
    drop(gen.stdin.take());
    gen.wait().unwrap();

    let (received, kernel_lost, queue_dropped) =
        wait_for(Duration::from_secs(20), "received + lost to cover what was sent", || {
            let t = agg.scrape();
            let r = sum(&t, "nettel_events_received_total", &[("kind", "synthetic")]);
            let k = sum(&t, "nettel_kernel_lost_events_total", &[]);
            let q = sum(&t, "nettel_loader_queue_dropped_events_total", &[]);
            (r + k + q >= sent).then_some((r, k, q))
        });
    assert!(kernel_lost > 0, "a 4 KiB ring should overflow under {sent} events");
    assert_eq!(
        received + kernel_lost + queue_dropped,
        sent,
        "sent {sent}: received {received}, kernel lost {kernel_lost}, queue dropped {queue_dropped}"
    );

    // The loader's view of kernel loss agrees with what reached the aggregator.
    // (Submitted counts are not compared: this test's own HTTP scrapes of the
    // aggregator are events too, produced by the HTTP probe while it runs.)
    let c = loader.status().counters.unwrap();
    assert_eq!(c.kernel_reserve_failures, kernel_lost);
    assert!(c.kernel_submitted >= received + queue_dropped);
}
