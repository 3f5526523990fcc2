// SPDX-License-Identifier: Apache-2.0
//! The loss accounting identity, exactly, under three faults:
//!
//! `events produced = received by the aggregator + kernel reserve failures +
//! loader subscriber-queue drops`
//!
//! (the aggregator's own drops are zero here: nothing refuses a synthetic
//! event). Each term is a metric: `nettel_events_received_total`,
//! `nettel_kernel_lost_events_total`, `nettel_loader_queue_dropped_events_total`.
//! The faults: a ring buffer far too small, an aggregator that stops reading
//! (SIGSTOP), and no aggregator at all while events are produced.

use std::time::Duration;

use nettel_integration::{
    generator::Generator,
    metrics::sum,
    process::{Aggregator, Loader, Proc},
    require_kernel, wait_for,
};

const NOBODY: u32 = 65534;

/// (received synthetic events, kernel lost, loader queue dropped) once their
/// sum covers `sent`.
/// Bytes one synthetic event takes in the ring: a 72-byte record and the
/// kernel's 8-byte record header.
const RECORD: u64 = 80;

fn terms(agg: &Aggregator, loader: &Loader, sent: u64) -> (u64, u64, u64) {
    let mut last = (0, 0, 0);
    for _ in 0..200 {
        let t = agg.scrape();
        last = (
            sum(&t, "nettel_events_received_total", &[("kind", "synthetic")]),
            sum(&t, "nettel_kernel_lost_events_total", &[]),
            sum(&t, "nettel_loader_queue_dropped_events_total", &[]),
        );
        if last.0 + last.1 + last.2 >= sent {
            return last;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!(
        "after 20 s, received + lost {last:?} do not cover the {sent} sent; loader counters {:?}\n{}",
        loader.status().counters,
        agg.proc.log()
    );
}

fn signal(proc: &Proc, signal: rustix::process::Signal) {
    let pid = rustix::process::Pid::from_raw(proc.child.id() as i32).unwrap();
    rustix::process::kill_process(pid, signal).unwrap();
}

#[test]
fn every_event_is_received_or_counted_lost_with_a_tiny_ring_buffer() {
    if !require_kernel("every_event_is_received_or_counted_lost_with_a_tiny_ring_buffer") {
        return;
    }
    // The generator: one getppid() per event, only this process is traced.
    let mut gen = Generator::start();
    let tgid = gen.tgid();
    // No HTTP probe: the identity is over synthetic events alone.
    let loader = Loader::start(
        NOBODY,
        &[NOBODY],
        &["--http-hook", "off", "--ring-buffer-bytes", "4096", "--bench-tgid", &tgid],
    );
    let mut agg = Aggregator::start(&loader.socket, None, NOBODY, NOBODY);
    agg.wait_connected();

    // Unpaced for half a second: far more than a 4 KiB ring can hold.
    let sent = gen.run(0, 0.5);
    let (received, kernel_lost, queue_dropped) = terms(&agg, &loader, sent);
    assert!(kernel_lost > 0, "a 4 KiB ring should overflow under {sent} events");
    assert_eq!(
        received + kernel_lost + queue_dropped,
        sent,
        "sent {sent}: received {received}, kernel lost {kernel_lost}, queue dropped {queue_dropped}"
    );

    // The loader's view of kernel loss agrees with what reached the aggregator.
    let c = loader.status().counters.unwrap();
    assert_eq!(c.kernel_reserve_failures, kernel_lost);
}

#[test]
fn a_stopped_aggregator_costs_only_counted_queue_drops() {
    if !require_kernel("a_stopped_aggregator_costs_only_counted_queue_drops") {
        return;
    }
    let mut gen = Generator::start();
    let tgid = gen.tgid();
    // No HTTP probe: the identity is over synthetic events alone. A queue of
    // four 256-event batches per subscriber.
    let loader = Loader::start(
        NOBODY,
        &[NOBODY],
        &["--http-hook", "off", "--bench-tgid", &tgid, "--subscriber-queue-events", "1024"],
    );
    let mut agg = Aggregator::start(&loader.socket, None, NOBODY, NOBODY);
    agg.wait_connected();

    // The aggregator stops reading while the generator runs unpaced, then resumes.
    signal(&agg.proc, rustix::process::Signal::STOP);
    let sent = gen.run(0, 0.5);
    signal(&agg.proc, rustix::process::Signal::CONT);
    let (received, kernel_lost, queue_dropped) = terms(&agg, &loader, sent);
    assert!(queue_dropped > 0, "a stopped subscriber must overflow its 1024-event queue");
    assert_eq!(
        received + kernel_lost + queue_dropped,
        sent,
        "sent {sent}: received {received}, kernel lost {kernel_lost}, queue dropped {queue_dropped}"
    );
    let c = loader.status().counters.unwrap();
    assert_eq!(c.subscriber_queue_drops, queue_dropped, "loader and aggregator agree on queue drops");
}

#[test]
fn events_wait_in_the_ring_while_no_aggregator_is_connected() {
    if !require_kernel("events_wait_in_the_ring_while_no_aggregator_is_connected") {
        return;
    }
    let mut gen = Generator::start();
    let tgid = gen.tgid();
    let loader = Loader::start(
        NOBODY,
        &[NOBODY],
        &["--http-hook", "off", "--bench-tgid", &tgid, "--ring-buffer-bytes", "1048576"],
    );

    // Before any aggregator: 5,000 events of 80 bytes fit the 1 MiB ring.
    let sent = gen.run(5000, 1.0);
    let mut agg = Aggregator::start(&loader.socket, None, NOBODY, NOBODY);
    agg.wait_connected();
    assert_eq!(terms(&agg, &loader, sent), (sent, 0, 0), "everything produced before the aggregator came");
    // They all waited in the ring at once: its high-water mark holds them
    // (80 bytes each: a 72-byte record and the kernel's 8-byte header), and
    // at most a few stray retransmit events of the machine besides.
    let t = agg.scrape();
    assert_eq!(sum(&t, "nettel_loader_ring_buffer_bytes", &[]), 1 << 20);
    let high = sum(&t, "nettel_loader_ring_buffer_high_water_bytes", &[]);
    assert!(
        (sent * RECORD..sent * RECORD + 8 * RECORD).contains(&high),
        "high water {high} for {sent} records"
    );

    // Aggregator restart with far more than the ring holds meanwhile: the
    // excess is counted as kernel loss and reported to the next aggregator.
    drop(agg);
    // Once the loader has noticed: events handed to a connection that then
    // breaks are lost with the aggregator that owned it.
    wait_for(Duration::from_secs(10), "the loader to see the aggregator go", || {
        (loader.status().counters.unwrap().subscribers_connected == 0).then_some(())
    });
    let sent = gen.run(0, 0.5);
    let mut agg = Aggregator::start(&loader.socket, None, NOBODY, NOBODY);
    agg.wait_connected();
    let (received, kernel_lost, queue_dropped) = terms(&agg, &loader, sent);
    assert!(kernel_lost > 0, "{sent} events overflow a 1 MiB ring");
    assert!(received > 10_000, "the ring's worth was kept: {received}");
    // Full: less than one record's room was left.
    let high = sum(&agg.scrape(), "nettel_loader_ring_buffer_high_water_bytes", &[]);
    assert!(((1 << 20) - RECORD..=1 << 20).contains(&high), "high water {high} of a full 1 MiB ring");
    assert_eq!(
        received + kernel_lost + queue_dropped,
        sent,
        "sent {sent}: received {received}, kernel lost {kernel_lost}, queue dropped {queue_dropped}"
    );
}

#[test]
fn the_benchmarks_retransmit_events_are_counted_like_real_ones() {
    if !require_kernel("the_benchmarks_retransmit_events_are_counted_like_real_ones") {
        return;
    }
    // `nettel-bench --events retransmit` measures the pipeline with these:
    // they must take the real retransmit path, conversion and series included.
    let mut gen = Generator::start();
    let tgid = gen.tgid();
    let loader = Loader::start(NOBODY, &[NOBODY], &["--http-hook", "off", "--bench-tgid", &tgid]);
    let mut agg = Aggregator::start(&loader.socket, None, NOBODY, NOBODY);
    agg.wait_connected();
    let ports: Vec<String> = (8000..8008).map(|p| p.to_string()).collect();
    let counted = |t: &str| -> Vec<u64> {
        ports
            .iter()
            .map(|p| sum(t, "node_tcp_retransmits_total", &[("dest_port", p), ("kind", "data"), ("pod", "")]))
            .collect()
    };
    let before = counted(&agg.scrape());
    let received_before = sum(&agg.scrape(), "nettel_events_received_total", &[("kind", "tcp_retransmit")]);

    let sent = gen.run_retransmits(100_000, 1.0);
    let received = wait_for(Duration::from_secs(20), "the retransmit events at the aggregator", || {
        let t = agg.scrape();
        let r = sum(&t, "nettel_events_received_total", &[("kind", "tcp_retransmit")]) - received_before;
        let lost = sum(&t, "nettel_kernel_lost_events_total", &[])
            + sum(&t, "nettel_loader_queue_dropped_events_total", &[]);
        (r + lost >= sent).then_some(r)
    });
    // Real retransmits of the machine may add a few; none go to 10.200.0.0/24.
    assert!((sent..sent + 8).contains(&received), "sent {sent}, received {received}");
    let after = counted(&agg.scrape());
    let per_port: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
    assert_eq!(per_port.iter().sum::<u64>(), sent, "per destination port: {per_port:?}");
    // 256 peers over 8 ports, in turn on each CPU: every port gets its share.
    for n in &per_port {
        assert!(n * 8 > sent * 9 / 10 && n * 8 < sent * 11 / 10, "uneven ports: {per_port:?}");
    }
}
