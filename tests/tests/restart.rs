// SPDX-License-Identifier: Apache-2.0
//! Restarts without gaps. The probes' links are pinned, so they stay attached
//! while no loader runs and the kernel keeps producing into the pinned ring
//! buffer; the next loader adopts the same links (bpftool shows the same link
//! ids and exactly one copy of each probe feeding the ring) and delivers what
//! accumulated. With no aggregator connected, the loader leaves events in the
//! ring, and what does not fit is counted. An upgrade keeps a pinned ring of
//! another default size and carries the counters of a statistics map that
//! grew, also when the upgrade stopped before copying them. Records leave
//! the ring only when a reader releases them, and across kill -9 under load
//! every event is received or reported lost.

use std::{os::unix::fs::DirBuilderExt, path::Path, time::Duration};

use nettel_integration::{
    bpftool,
    generator::Generator,
    metrics::sum,
    netns::run,
    process::{bin, Aggregator, Loader},
    require_kernel, wait_for,
};
use rustix::process::Signal;

const NOBODY: u32 = 65534;
/// Every program a default loader with the benchmark probe runs here.
const PROGRAMS: [&str; 8] = [
    "nt_tcp_rtx",
    "nt_tcp_rtx_syn",
    "nt_http_recv",
    "nt_http_sendmsg",
    "nt_http_state",
    "nt_http_rmdir",
    "nt_bench",
    "nt_bench_rtx",
];

fn synthetic_received(agg: &Aggregator) -> u64 {
    sum(&agg.scrape(), "nettel_events_received_total", &[("kind", "synthetic")])
}

/// Waits until the aggregator has received exactly `want` synthetic events,
/// then checks that no more arrive (nothing counted twice).
fn expect_received(agg: &Aggregator, want: u64) {
    let got = wait_for(Duration::from_secs(20), "synthetic events at the aggregator", || {
        let n = synthetic_received(agg);
        (n >= want).then_some(n)
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!((got, synthetic_received(agg)), (want, want), "events received vs produced");
}

/// (program, link id) of every pinned link, in `PROGRAMS` order.
fn pinned_links(pin_dir: &Path) -> Vec<(&'static str, u64)> {
    PROGRAMS
        .iter()
        .map(|p| {
            let (link, _) = bpftool::pinned_link(&pin_dir.join("links").join(p))
                .unwrap_or_else(|| panic!("no pinned link for {p}"));
            (*p, link)
        })
        .collect()
}

fn assert_one_copy_each(pin_dir: &Path) {
    let ring = bpftool::pinned_map_id(&pin_dir.join("nt_events"));
    let stats = bpftool::pinned_map_id(&pin_dir.join("nt_stats"));
    let slots = bpftool::pinned_map_id(&pin_dir.join("nt_http_slots"));
    for p in PROGRAMS {
        // nt_http_recv/nt_http_state never emit events but count into nt_stats;
        // nt_http_rmdir only frees slots.
        let map = match p {
            "nt_http_recv" | "nt_http_state" => stats,
            "nt_http_rmdir" => slots,
            _ => ring,
        };
        assert_eq!(bpftool::links_feeding(p, map), 1, "copies of {p} attached to this pin dir's maps");
    }
}

/// Every running program is pinned next to its link, and its skipped runs
/// (`recursion_misses`) are exported, zero here: nothing on this node runs
/// BPF programs that could preempt them, so a nonzero count means lost events.
fn assert_runs_reported(agg: &Aggregator, pin_dir: &Path) {
    for p in PROGRAMS {
        assert!(pin_dir.join("links").join(format!("{p}-prog")).exists(), "{p}: program not pinned");
    }
    let text = wait_for(Duration::from_secs(10), "every program's skipped runs", || {
        let text = agg.scrape();
        PROGRAMS
            .iter()
            .all(|p| text.contains(&format!("nettel_kernel_program_skipped_runs_total{{program=\"{p}\"}}")))
            .then_some(text)
    });
    assert_eq!(sum(&text, "nettel_kernel_program_skipped_runs_total", &[]), 0, "skipped runs");
}

fn origins(loader: &Loader) -> Vec<(String, String)> {
    loader.status().probes.into_iter().map(|p| (p.name, p.origin)).collect()
}

#[test]
fn a_restarted_loader_adopts_the_pinned_probes_and_delivers_what_the_kernel_produced_meanwhile() {
    if !require_kernel(
        "a_restarted_loader_adopts_the_pinned_probes_and_delivers_what_the_kernel_produced_meanwhile",
    ) {
        return;
    }
    let mut gen = Generator::start();
    let tgid = gen.tgid();
    let args = ["--bench-tgid", tgid.as_str()];
    // The first loader sets a 1 MiB ring (the default before 4 MiB); the
    // restarted ones leave the flag unset and must adopt it, unread events
    // included, instead of refusing it or replacing it.
    let first: Vec<&str> = args.iter().copied().chain(["--ring-buffer-bytes", "1048576"]).collect();
    let mut loader = Loader::start(NOBODY, &[NOBODY], &first);
    assert!(origins(&loader).iter().all(|(_, o)| o == "attached"), "{:?}", origins(&loader));
    let pin_dir = loader.pin_dir.clone();
    let ring = pin_dir.join("nt_events");
    let ring_id = bpftool::pinned_map_id(&ring);
    assert_eq!(loader.status().ring_buffer_bytes, 1 << 20);
    let links = pinned_links(&pin_dir);
    assert_one_copy_each(&pin_dir);
    let mut agg = Aggregator::start(&loader.socket, None, NOBODY, NOBODY);
    agg.wait_connected();
    let mut produced = gen.run(2000, 1.0);
    expect_received(&agg, produced);
    assert_runs_reported(&agg, &pin_dir);

    // SIGTERM, then kill -9. Each time the generator runs while no loader
    // does: 5,000 events of 80 bytes fit the 1 MiB ring.
    for (signal, restarts) in [(Signal::TERM, 1), (Signal::KILL, 2)] {
        let (pin_dir, socket) = loader.exit(signal);
        assert_eq!(pinned_links(&pin_dir), links, "links survive the loader ({signal:?})");
        produced += gen.run(5000, 1.0);

        loader = Loader::restart(&pin_dir, &socket, NOBODY, &[NOBODY], &args);
        assert!(
            origins(&loader).iter().all(|(_, o)| o == "adopted"),
            "after {signal:?}: {:?}\n{}",
            origins(&loader),
            loader.proc.log()
        );
        assert_eq!(pinned_links(&pin_dir), links, "the same links, adopted");
        assert_eq!(bpftool::pinned_map_id(&ring), ring_id, "the same ring buffer, adopted");
        assert_eq!(bpftool::pinned_map_max_entries(&ring), 1 << 20);
        assert_eq!(loader.status().ring_buffer_bytes, 1 << 20, "the status reports the adopted size");
        assert_one_copy_each(&pin_dir);
        agg.wait_connected();
        expect_received(&agg, produced);
        let t = agg.scrape();
        assert_eq!(sum(&t, "nettel_loader_restarts_total", &[]), restarts);
        assert_eq!(sum(&t, "nettel_kernel_lost_events_total", &[]), 0);
        assert_eq!(sum(&t, "nettel_stream_gap_events_total", &[]), 0, "sequence continues across restarts");
        // Adopted programs' statistics come from their pins.
        assert_runs_reported(&agg, &pin_dir);
    }

    // `cleanup` (run by the harness when the loader is dropped) detaches
    // everything and removes the pin dir.
    drop(loader);
    for (p, id) in &links {
        assert!(!bpftool::link_exists(*id), "{p}'s link {id} is still attached after cleanup");
    }
    assert!(!pin_dir.exists(), "pin dir left behind");
}

/// Events the aggregator accounts for: received, or reported lost (sequence
/// gaps, kernel reserve failures, queue drops), with the breakdown.
fn accounted(agg: &Aggregator) -> (u64, [u64; 4]) {
    let t = agg.scrape();
    let parts = [
        sum(&t, "nettel_events_received_total", &[("kind", "synthetic")]),
        sum(&t, "nettel_stream_gap_events_total", &[]),
        sum(&t, "nettel_kernel_lost_events_total", &[]),
        sum(&t, "nettel_loader_queue_dropped_events_total", &[]),
    ];
    (parts.iter().sum(), parts)
}

#[test]
fn a_loader_killed_under_load_loses_nothing_silently() {
    if !require_kernel("a_loader_killed_under_load_loses_nothing_silently") {
        return;
    }
    let mut gen = Generator::start();
    let tgid = gen.tgid();
    // A 32 MiB ring holds most of what a restart's downtime produces; the
    // rest is counted kernel loss.
    let args = ["--bench-tgid", tgid.as_str(), "--ring-buffer-bytes", "33554432"];
    let mut loader = Loader::start(NOBODY, &[NOBODY], &args);
    let mut agg = Aggregator::start(&loader.socket, None, NOBODY, NOBODY);
    agg.wait_connected();

    // kill -9 three times while a million events a second flow and the
    // aggregator streams: every event the generator made must be received or
    // reported lost (kernel loss while no loader ran, queue drops in the
    // bursts after a restart, sequence gaps for published batches that never
    // arrived), none counted twice. Records a killed loader had read into a
    // batch it had not published stay in the ring for the next one.
    let producer = std::thread::spawn(move || {
        let n = gen.run(1_000_000, 3.0);
        (gen, n)
    });
    for restarts in 0..3 {
        // Each kill lands while the aggregator streams from the loader.
        wait_for(Duration::from_secs(30), "the aggregator to stream from the new loader", || {
            (sum(&agg.scrape(), "nettel_loader_restarts_total", &[]) == restarts).then_some(())
        });
        std::thread::sleep(Duration::from_millis(200));
        let (pin_dir, socket) = loader.exit(Signal::KILL);
        loader = Loader::restart(&pin_dir, &socket, NOBODY, &[NOBODY], &args);
    }
    let (_gen, produced) = producer.join().expect("generator thread");
    agg.wait_connected();
    wait_for(Duration::from_secs(30), "every event accounted for", || {
        (accounted(&agg).0 >= produced).then_some(())
    });
    std::thread::sleep(Duration::from_millis(500));
    let (total, parts) = accounted(&agg);
    assert_eq!(
        total,
        produced,
        "received, gap, kernel loss, queue drops {parts:?} against {produced} produced\n{}",
        loader.proc.log()
    );
    assert!(parts[0] > 0, "{parts:?} of {produced}");
    assert_eq!(sum(&agg.scrape(), "nettel_loader_restarts_total", &[]), 3);
}

#[test]
fn records_read_but_not_released_stay_in_the_ring_for_the_next_reader() {
    if !require_kernel("records_read_but_not_released_stay_in_the_ring_for_the_next_reader") {
        return;
    }
    let mut gen = Generator::start();
    let tgid = gen.tgid();
    let args = ["--bench-tgid", tgid.as_str()];
    // No aggregator: the loader leaves the events in the ring. Then it goes,
    // and the probes keep producing into the pinned ring.
    let loader = Loader::start(NOBODY, &[NOBODY], &args);
    let (pin_dir, socket) = loader.exit(Signal::KILL);
    let produced = gen.run(2000, 1.0);
    let ring_path = pin_dir.join("nt_events");
    let size = u32::try_from(bpftool::pinned_map_max_entries(&ring_path)).unwrap();
    let open = || {
        let map = aya::maps::MapData::from_pin(&ring_path).expect("the pinned ring");
        nettel_loader::sys::RingReader::new(map, size).expect("map the ring")
    };
    let waiting = open().waiting();
    assert!(waiting >= produced * 80, "{waiting} bytes waiting for {produced} events of 80 bytes");

    // A reader that stops in the middle of a batch (a loader killed before
    // publishing it): what it read is still there.
    let mut reader = open();
    for i in 0..100 {
        assert!(reader.read().is_some(), "record {i} of {produced}");
    }
    drop(reader);
    assert_eq!(open().waiting(), waiting, "records read but not released are not freed");

    // One that releases what it read frees exactly that.
    let mut reader = open();
    let mut freed_synthetic = 0;
    let mut freed_bytes = 0;
    for _ in 0..10 {
        let record = reader.read().expect("a record");
        freed_bytes += (record.len() as u64 + 8).next_multiple_of(8);
        freed_synthetic +=
            u64::from(matches!(nettel_bpf::decode(record), Ok(nettel_bpf::Record::Synthetic(_))));
    }
    reader.release();
    drop(reader);
    assert_eq!(open().waiting(), waiting - freed_bytes);

    // The next loader delivers everything left, the 100 records included.
    let loader = Loader::restart(&pin_dir, &socket, NOBODY, &[NOBODY], &args);
    let mut agg = Aggregator::start(&loader.socket, None, NOBODY, NOBODY);
    agg.wait_connected();
    expect_received(&agg, produced - freed_synthetic);
}

/// A fresh private pin dir named after `case`.
fn empty_pin_dir(case: &str) -> std::path::PathBuf {
    let pin_dir = std::path::PathBuf::from(format!("/sys/fs/bpf/nettel-test-{}-{case}", std::process::id()));
    let _ = std::fs::remove_dir_all(&pin_dir);
    std::fs::DirBuilder::new().mode(0o700).create(&pin_dir).unwrap();
    pin_dir
}

/// Pins at `path` a statistics map as another loader version could have
/// left it: `entries` counters, `reserve_failures` counted on every CPU.
fn pin_stats(path: &Path, entries: &str, reserve_failures: &str) {
    let bpftool = |args: &[&str]| run(std::process::Command::new("bpftool").args(args));
    let file = path.to_str().unwrap();
    bpftool(
        &["map", "create", file, "type", "percpu_array", "key", "4", "value", "8", "entries", entries]
            .into_iter()
            .chain(["name", "nt_stats"])
            .collect::<Vec<_>>(),
    );
    bpftool(
        &["map", "update", "pinned", file, "key", "1", "0", "0", "0", "value", reserve_failures]
            .into_iter()
            .chain(["0", "0", "0", "0", "0", "0", "0"])
            .collect::<Vec<_>>(),
    );
}

/// A pin dir holding only what another loader version could have left: a
/// statistics map with `entries` counters, 7 reserve failures counted on every
/// CPU. Returns the pin dir and the map's pin.
fn stats_pinned_by_another_version(entries: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let pin_dir = empty_pin_dir(&format!("stats{entries}"));
    let stats = pin_dir.join("nt_stats");
    pin_stats(&stats, entries, "7");
    (pin_dir, stats)
}

/// The `nt_stats-carry-*` pins in `pin_dir`.
fn carry_pins(pin_dir: &Path) -> Vec<String> {
    let names = std::fs::read_dir(pin_dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap());
    let mut pins: Vec<String> = names.filter(|n| n.starts_with("nt_stats-carry-")).collect();
    pins.sort();
    pins
}

/// `nettel-loader run` on `pin_dir`, expected to fail: its stderr.
fn failed_run(pin_dir: &Path) -> String {
    let out = std::process::Command::new(bin("nettel-loader"))
        .args(["run", "--socket", "/nonexistent/loader.sock", "--pin-dir", pin_dir.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "the loader started: {text}");
    text
}

fn cleanup(pin_dir: &Path) {
    run(std::process::Command::new(bin("nettel-loader")).args([
        "cleanup",
        "--pin-dir",
        pin_dir.to_str().unwrap(),
    ]));
    assert!(!pin_dir.exists(), "pin dir left behind");
}

/// Starts a loader on `pin_dir` and checks what it carried: a statistics
/// map of this version's size holding `reserve_failures_per_cpu` on every
/// CPU, and no carry pin left. Returns the loader.
fn start_carrying(pin_dir: &Path, reserve_failures_per_cpu: u64, what: &str) -> Loader {
    let cpus = aya::util::nr_cpus().expect("possible CPUs") as u64;
    let loader = Loader::start_at(pin_dir, NOBODY, &[NOBODY], &[]);
    let stats = pin_dir.join("nt_stats");
    assert_eq!(bpftool::pinned_map_max_entries(&stats), u64::from(nettel_bpf::abi::NT_STAT_MAX));
    let counters = loader.status().counters.unwrap();
    assert_eq!(counters.kernel_reserve_failures, reserve_failures_per_cpu * cpus, "{what}");
    assert!(carry_pins(pin_dir).is_empty(), "carry pins left: {:?}", carry_pins(pin_dir));
    loader
}

#[test]
fn an_upgrade_carries_the_counters_of_a_smaller_pinned_stats_map_and_a_downgrade_is_refused() {
    if !require_kernel(
        "an_upgrade_carries_the_counters_of_a_smaller_pinned_stats_map_and_a_downgrade_is_refused",
    ) {
        return;
    }
    // An older loader's map, 2 counters: replaced by a larger one, values kept.
    let (pin_dir, stats) = stats_pinned_by_another_version("2");
    let old_id = bpftool::pinned_map_id(&stats);
    let loader = start_carrying(&pin_dir, 7, "the old counters carried over, every CPU's");
    assert_ne!(bpftool::pinned_map_id(&stats), old_id, "a new, larger map");
    drop(loader);

    // A newer loader's map, 64 counters: refused, left alone.
    let (pin_dir, stats) = stats_pinned_by_another_version("64");
    let old_id = bpftool::pinned_map_id(&stats);
    let text = failed_run(&pin_dir);
    assert!(text.contains("pinned map `nt_stats`") && text.contains("max_entries 64"), "{text}");
    assert_eq!(bpftool::pinned_map_id(&stats), old_id, "the larger map is left alone");
    assert!(carry_pins(&pin_dir).is_empty(), "a refused map is not moved: {:?}", carry_pins(&pin_dir));
    cleanup(&pin_dir);
}

#[test]
fn an_upgrade_that_stops_before_carrying_the_counters_leaves_them_for_the_next_loader() {
    if !require_kernel("an_upgrade_that_stops_before_carrying_the_counters_leaves_them_for_the_next_loader") {
        return;
    }
    // The upgrade stops after the old map is moved aside and before the
    // objects load: here a directory where the HTTP connections map is
    // pinned, which the loader cannot replace (in the field: an object the
    // kernel refuses).
    let (pin_dir, stats) = stats_pinned_by_another_version("2");
    let old_id = bpftool::pinned_map_id(&stats);
    let blocker = pin_dir.join("nt_http_conns");
    std::fs::DirBuilder::new().mode(0o700).create(&blocker).unwrap();
    let text = failed_run(&pin_dir);
    assert!(text.contains("nt_http_conns"), "{text}");
    assert_eq!(carry_pins(&pin_dir), ["nt_stats-carry-0"], "the old map is kept pinned aside");
    assert_eq!(bpftool::pinned_map_id(&pin_dir.join("nt_stats-carry-0")), old_id);
    assert!(!stats.exists(), "no statistics map of the failed loader");

    // The next loader carries them.
    std::fs::remove_dir(&blocker).unwrap();
    drop(start_carrying(&pin_dir, 7, "the counters of the interrupted upgrade"));

    // After the interrupted upgrade, a rollback to a loader that knows no
    // carry pins counted 5 per CPU into a map of its own: both are carried,
    // summed.
    let pin_dir = empty_pin_dir("carry-rollback");
    pin_stats(&pin_dir.join("nt_stats-carry-0"), "2", "7");
    pin_stats(&pin_dir.join("nt_stats"), "2", "5");
    drop(start_carrying(&pin_dir, 12, "both maps' counters"));

    // A carry pin larger than this loader's map (left by a newer loader's
    // interrupted upgrade) is refused, and nothing is moved.
    let pin_dir = empty_pin_dir("carry-larger");
    pin_stats(&pin_dir.join("nt_stats-carry-0"), "64", "7");
    pin_stats(&pin_dir.join("nt_stats"), "2", "5");
    let text = failed_run(&pin_dir);
    assert!(text.contains("nt_stats-carry-0") && text.contains("max_entries 64"), "{text}");
    assert_eq!(carry_pins(&pin_dir), ["nt_stats-carry-0"]);
    assert_eq!(bpftool::pinned_map_max_entries(&pin_dir.join("nt_stats")), 2, "the pinned map stays");
    cleanup(&pin_dir);
}
