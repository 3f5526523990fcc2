// SPDX-License-Identifier: Apache-2.0
//! Pipeline benchmark: kernel ring buffer -> loader -> gRPC -> aggregator.
//!
//! A generator process makes a system call at a paced rate; the loader's
//! benchmark probe (`--bench-tgid`) turns each call into a 72-byte ring-buffer
//! event: a synthetic one (getppid(), a sequence number the aggregator only
//! counts) or a retransmit-shaped one (getpgrp(), the retransmit probe's
//! record from 10.0.0.1:8080 to one of 256 peers, which the loader converts
//! and the aggregator counts into `node_tcp_retransmits_total` like a real
//! one). `--events` picks the kinds; each rate step runs every kind in turn.
//! For each step the benchmark checks that every event reached the aggregator
//! (zero loss: received == sent, no kernel or queue drops) and reports CPU time
//! per million events of loader and aggregator, and their peak RSS. First it
//! measures both processes idle (connected, no events) for `--idle-seconds`:
//! what the agent costs a node where nothing happens.
//!
//! ```text
//! sudo target/release/nettel-bench [--rates 250000,500000,...] [--seconds 3] [--events synthetic,retransmit]
//!                                  [--ring-buffer-bytes N] [--idle-seconds 10]
//! ```
//! Run from the workspace root after `cargo build --release --bins`.

use std::{
    io::{BufRead, BufReader, Write},
    process::{Child, ChildStdin, Command, Stdio},
    time::{Duration, Instant},
};

use nettel_integration::metrics::{http_get, sum};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("gen") {
        return generator();
    }
    nettel_integration::check_args(
        "sudo nettel-bench [--rates 250000,500000,...] [--seconds 3] [--events synthetic,retransmit] \
         [--ring-buffer-bytes N] [--idle-seconds 10]",
        &["--rates", "--seconds", "--events", "--ring-buffer-bytes", "--idle-seconds"],
        &[],
    );
    let flag = nettel_integration::flag;
    let rates: Vec<u64> = flag("--rates")
        .unwrap_or_else(|| "250000,500000,1000000,1500000,2000000,2500000,0".into())
        .split(',')
        .map(|r| r.parse().expect("--rates: comma-separated events/s, 0 = unpaced"))
        .collect();
    let seconds: f64 = flag("--seconds").map_or(3.0, |s| s.parse().expect("--seconds"));
    let kinds: Vec<Kind> = flag("--events")
        .unwrap_or_else(|| "synthetic,retransmit".into())
        .split(',')
        .map(|k| Kind::parse(k).unwrap_or_else(|| panic!("--events: synthetic or retransmit, not {k:?}")))
        .collect();
    // Unset: the loader's default (a fresh pin dir, so no ring to adopt).
    let ring = flag("--ring-buffer-bytes");
    let idle: f64 =
        flag("--idle-seconds").map_or(10.0, |s| s.parse().expect("--idle-seconds: seconds, 0 = skip"));
    run(&rates, &kinds, seconds, ring.as_deref(), idle);
}

/// The kinds of event the benchmark probe makes.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Synthetic,
    Retransmit,
}

impl Kind {
    fn parse(s: &str) -> Option<Self> {
        match s {
            "synthetic" => Some(Self::Synthetic),
            "retransmit" => Some(Self::Retransmit),
            _ => None,
        }
    }

    /// The generator's name for it.
    fn name(self) -> &'static str {
        match self {
            Self::Synthetic => "synthetic",
            Self::Retransmit => "retransmit",
        }
    }

    /// Its `kind` label on `nettel_events_received_total`.
    fn received_label(self) -> &'static str {
        match self {
            Self::Synthetic => "synthetic",
            Self::Retransmit => "tcp_retransmit",
        }
    }
}

// === generator (child process) ===

/// Reads `RATE SECONDS [KIND]` lines; makes the benchmark probe's system call
/// RATE times a second (0 = as fast as possible) for SECONDS; answers
/// `SENT ELAPSED_NS`. KIND is `synthetic` (getppid(), the default) or
/// `retransmit` (getpgrp(): a retransmit-shaped event each).
fn generator() {
    let stdin = std::io::stdin();
    let mut out = std::io::stdout();
    writeln!(out, "ready").unwrap();
    out.flush().unwrap();
    for line in stdin.lock().lines() {
        let line = line.unwrap();
        let mut it = line.split_whitespace();
        let rate: u64 = it.next().unwrap().parse().unwrap();
        let secs: f64 = it.next().unwrap().parse().unwrap();
        let start = Instant::now();
        let sent = match it.next().unwrap_or("synthetic") {
            "synthetic" => emit(rate, secs, || {
                std::hint::black_box(rustix::process::getppid());
            }),
            "retransmit" => emit(rate, secs, || {
                std::hint::black_box(rustix::process::getpgrp());
            }),
            other => panic!("generator: unknown event kind {other:?}"),
        };
        writeln!(out, "{sent} {}", start.elapsed().as_nanos()).unwrap();
        out.flush().unwrap();
    }
}

/// Calls `call` `rate` times a second (0: as fast as possible) for `secs`;
/// returns how many calls it made.
fn emit(rate: u64, secs: f64, call: impl Fn()) -> u64 {
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(secs);
    let mut sent = 0u64;
    if rate == 0 {
        while Instant::now() < end {
            for _ in 0..1000 {
                call();
            }
            sent += 1000;
        }
    } else {
        // 1 ms slots: issue the slot's share, then sleep to the slot's end.
        let per_slot = (rate / 1000).max(1);
        let mut slot = start;
        while slot < end {
            for _ in 0..per_slot {
                call();
            }
            sent += per_slot;
            slot += Duration::from_millis(1);
            if let Some(d) = slot.checked_duration_since(Instant::now()) {
                std::thread::sleep(d);
            }
        }
    }
    sent
}

// === orchestrator ===

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the `(comm)`: state is field 3; utime 14 and stime 15.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    ticks as f64 / 100.0 // USER_HZ is 100 on Linux
}

/// CPU time of every thread of `pid` so far, in seconds, from
/// `/proc/PID/task/*/schedstat` (nanoseconds; threads that exited are not
/// counted, so only for processes whose threads live throughout).
fn thread_cpu_seconds(pid: u32) -> f64 {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap();
    let ns: u64 = tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    ns as f64 / 1e9
}

fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kb / 1024.0
}

fn run(rates: &[u64], kinds: &[Kind], seconds: f64, ring: Option<&str>, idle: f64) {
    let bin = std::env::current_exe().unwrap().parent().unwrap().to_owned();
    let dir = nettel_integration::process::scratch_dir("bench");
    let socket = dir.join("loader.sock");
    let pin_dir = format!("/sys/fs/bpf/nettel-bench-{}", std::process::id());

    let mut gen = Killed(
        Command::new(std::env::current_exe().unwrap())
            .arg("gen")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let gen_pid = gen.0.id();
    let mut gen_in: ChildStdin = gen.0.stdin.take().unwrap();
    let mut gen_out = BufReader::new(gen.0.stdout.take().unwrap());
    let mut line = String::new();
    gen_out.read_line(&mut line).unwrap();

    let loader = Killed(
        Command::new(bin.join("nettel-loader"))
            .args(["run", "--socket"])
            .arg(&socket)
            .args(["--pin-dir", &pin_dir, "--socket-gid", "65534", "--allow-uid", "65534"])
            .args(ring.map(|r| ["--ring-buffer-bytes", r]).into_iter().flatten())
            .args(["--bench-tgid", &gen_pid.to_string()])
            .stderr(std::fs::File::create(dir.join("loader.log")).unwrap())
            .spawn()
            .expect("nettel-loader next to nettel-bench (cargo build --release --bins)"),
    );
    while !socket.exists() {
        std::thread::sleep(Duration::from_millis(50));
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let agg = Killed({
        use std::os::unix::process::CommandExt;
        Command::new(bin.join("nettel-aggregator"))
            .arg("--loader-socket")
            .arg(&socket)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .uid(65534)
            .gid(65534)
            .stderr(std::fs::File::create(dir.join("aggregator.log")).unwrap())
            .spawn()
            .unwrap()
    });
    let scrape = || http_get(port, "/metrics", None).map(|(_, b)| b).unwrap_or_default();
    while !http_get(port, "/readyz", None).is_ok_and(|(s, _)| s.contains(" 200 ")) {
        std::thread::sleep(Duration::from_millis(100));
    }
    // (received of `kind`, kernel-lost + queue-dropped, kernel-lost)
    let counts = |t: &str, kind: Kind| {
        let kernel = sum(t, "nettel_kernel_lost_events_total", &[]);
        (
            sum(t, "nettel_events_received_total", &[("kind", kind.received_label())]),
            kernel + sum(t, "nettel_loader_queue_dropped_events_total", &[]),
            kernel,
        )
    };

    if idle > 0.0 {
        // Connected and ready, no events: the loader's 100 ms tick and
        // heartbeats, the TLS attacher's scans, the aggregator's stream and
        // timers. From schedstat: a USER_HZ tick (10 ms) is too coarse here.
        let (c_l0, c_a0) = (thread_cpu_seconds(loader.0.id()), thread_cpu_seconds(agg.0.id()));
        std::thread::sleep(Duration::from_secs_f64(idle));
        let (c_l1, c_a1) = (thread_cpu_seconds(loader.0.id()), thread_cpu_seconds(agg.0.id()));
        println!(
            "idle, no events, {idle:.0} s: loader {:.2} ms CPU per second, aggregator {:.2} ms per second\n",
            (c_l1 - c_l0) * 1000.0 / idle,
            (c_a1 - c_a0) * 1000.0 / idle,
        );
    }
    println!("| target ev/s | events | sent | achieved ev/s | received | lost (kernel / queue) | loader CPU s/M ev | aggregator CPU s/M ev | zero loss |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for &rate in rates {
        for &kind in kinds {
            let (r0, l0, k0) = counts(&scrape(), kind);
            let (c_l0, c_a0) = (cpu_seconds(loader.0.id()), cpu_seconds(agg.0.id()));
            writeln!(gen_in, "{rate} {seconds} {}", kind.name()).unwrap();
            line.clear();
            gen_out.read_line(&mut line).unwrap();
            let mut parts = line.split_whitespace().map(|v| v.parse::<u64>().unwrap());
            let (sent, elapsed_ns) = (parts.next().unwrap(), parts.next().unwrap());
            // Let the pipeline drain: wait until received + lost covers what was sent.
            let deadline = Instant::now() + Duration::from_secs(30);
            let (mut r1, mut l1, mut k1) = counts(&scrape(), kind);
            while (r1 - r0) + (l1 - l0) < sent && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(200));
                (r1, l1, k1) = counts(&scrape(), kind);
            }
            let (c_l1, c_a1) = (cpu_seconds(loader.0.id()), cpu_seconds(agg.0.id()));
            let received = r1 - r0;
            let lost = sent.saturating_sub(received);
            let m = sent as f64 / 1e6;
            println!(
                "| {} | {} | {sent} | {:.0} | {received} | {lost} ({} / {}) | {:.3} | {:.3} | {} |",
                if rate == 0 { "unpaced".to_string() } else { rate.to_string() },
                kind.name(),
                sent as f64 / (elapsed_ns as f64 / 1e9),
                k1 - k0,
                (l1 - l0) - (k1 - k0),
                (c_l1 - c_l0) / m,
                (c_a1 - c_a0) / m,
                if lost == 0 && l1 == l0 { "yes" } else { "NO" },
            );
        }
    }
    println!(
        "\npeak RSS: loader {:.1} MiB, aggregator {:.1} MiB (VmHWM); ring buffer {} bytes; logs in {}",
        peak_rss_mib(loader.0.id()),
        peak_rss_mib(agg.0.id()),
        nettel_integration::bpftool::pinned_map_max_entries(
            &std::path::Path::new(&pin_dir).join("nt_events")
        ),
        dir.display()
    );
    drop(agg);
    drop(loader);
    let _ = Command::new(bin.join("nettel-loader")).args(["cleanup", "--pin-dir", &pin_dir]).status();
}
