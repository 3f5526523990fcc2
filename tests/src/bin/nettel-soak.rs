// SPDX-License-Identifier: Apache-2.0
//! Soak: the whole agent under steady mixed traffic for a long time, with the
//! loader's and the aggregator's RSS and CPU sampled over time.
//!
//! Traffic, all real and all traced:
//! * HTTP: `hey` at `--rate` requests/s (keep-alive, 4 connections) against
//!   nginx in netns pod `nt44b`, over paths answering 200 and 404;
//! * TCP retransmits: 1% of the packets entering `nt44b` on port 8080 are
//!   dropped, so nginx retransmits;
//! * a new connection per request for a tenth of the HTTP load (`hey
//!   -disable-keepalive`), so connection setup/teardown and the HTTP
//!   connection table churn too;
//! * synthetic events from the benchmark probe at `--synthetic` events/s.
//!
//! Every `--interval` seconds it prints one row: elapsed time, RSS of each
//! process (VmRSS), CPU of each since the previous row (% of one core), the
//! events the aggregator received and lost so far, and its series count. At
//! the end, a summary: RSS at the first sample after warm-up vs the last and
//! the maximum, mean CPU, and the loss identity terms.
//!
//! ```text
//! sudo target/release/nettel-soak [--minutes 30] [--interval 60] [--rate 500] [--synthetic 2000]
//! ```
//! Run after `cargo build --release --bins`.

use std::{
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use nettel_integration::{
    flag_or,
    generator::Generator,
    metrics::sum,
    netns::{exec, PodPair},
    process::Stack,
    servers::start_nginx,
};

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// utime + stime of `pid` in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    (f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()) as f64 / 100.0
}

fn status_kib(pid: u32, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

fn hey(ns: &str, url: &str, rate_per_conn: u64, conns: u64, seconds: u64, keepalive: bool) -> Killed {
    let mut cmd = exec(ns, "hey");
    cmd.args(["-z", &format!("{seconds}s"), "-c", &conns.to_string(), "-q", &rate_per_conn.to_string()]);
    if !keepalive {
        cmd.arg("-disable-keepalive");
    }
    Killed(cmd.arg(url).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("hey"))
}

#[derive(Debug, Clone, Copy)]
struct Row {
    at: f64,
    loader_rss: f64,
    agg_rss: f64,
    loader_cpu: f64,
    agg_cpu: f64,
}

fn main() {
    nettel_integration::check_args(
        "sudo nettel-soak [--minutes 30] [--interval 60] [--rate 500] [--synthetic 2000]",
        &["--minutes", "--interval", "--rate", "--synthetic"],
        &[],
    );
    let minutes: u64 = flag_or("--minutes", 30);
    let interval: u64 = flag_or::<u64>("--interval", 60).max(1);
    let rate: u64 = flag_or::<u64>("--rate", 500).max(10);
    let synthetic: u64 = flag_or("--synthetic", 2000);
    assert!(rustix::process::geteuid().is_root(), "run as root (network namespaces, BPF)");
    let seconds = minutes * 60;

    let pods = PodPair::new(44);
    let (_nginx, _upstream) = start_nginx(&pods.b, &pods.b_v4);
    pods.drop_inbound(&pods.b, 0.01, &["--dport", "8080"]);
    let mut gen = Generator::start();
    let tgid = gen.tgid();
    let entries = [(pods.b_v4.as_str(), "soak-0", "soak", "soak")];
    let stack = Stack::start_with(&entries, &["--bench-tgid", &tgid]);
    let (loader_pid, agg_pid) = (stack.loader.proc.child.id(), stack.agg.proc.child.id());

    // 90% keep-alive on 4 connections, 10% a connection per request.
    let ok = format!("http://{}:8080/ok", pods.b_v4);
    let missing = format!("http://{}:8080/missing", pods.b_v4);
    let keepalive_per_conn = (rate * 9 / 10 / 4).max(1);
    // `hey -q` is per connection (worker): two connections each for 200s and 404s.
    let _h1 = hey(&pods.a, &ok, keepalive_per_conn, 2, seconds, true);
    let _h2 = hey(&pods.a, &missing, keepalive_per_conn, 2, seconds, true);
    let _h3 = hey(&pods.a, &ok, (rate / 10).max(1), 1, seconds, false);
    // The generator runs in slices so it can be stopped with the soak.
    let synth = std::thread::spawn(move || {
        let mut sent = 0;
        if synthetic > 0 {
            for _ in 0..seconds / 10 {
                sent += gen.run(synthetic, 10.0);
            }
        }
        sent
    });

    println!(
        "# nettel soak: {minutes} min, HTTP {rate} req/s, synthetic {synthetic}/s, 1% inbound drops; \
         sample every {interval} s"
    );
    println!("| t (min) | loader RSS MiB | loader CPU % | aggregator RSS MiB | aggregator CPU % | events received | kernel lost | queue dropped | series |");
    println!("|---|---|---|---|---|---|---|---|---|");
    let start = Instant::now();
    let mut last = (start, cpu_seconds(loader_pid), cpu_seconds(agg_pid));
    let mut rows: Vec<Row> = Vec::new();
    while start.elapsed() < Duration::from_secs(seconds) {
        std::thread::sleep(Duration::from_secs(interval).min(Duration::from_secs(seconds) - start.elapsed()));
        let now = Instant::now();
        let (lc, ac) = (cpu_seconds(loader_pid), cpu_seconds(agg_pid));
        let dt = now.duration_since(last.0).as_secs_f64();
        let row = Row {
            at: start.elapsed().as_secs_f64() / 60.0,
            loader_rss: status_kib(loader_pid, "VmRSS:") / 1024.0,
            agg_rss: status_kib(agg_pid, "VmRSS:") / 1024.0,
            loader_cpu: (lc - last.1) / dt * 100.0,
            agg_cpu: (ac - last.2) / dt * 100.0,
        };
        last = (now, lc, ac);
        let t = stack.agg.scrape();
        println!(
            "| {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {} | {} | {} | {} |",
            row.at,
            row.loader_rss,
            row.loader_cpu,
            row.agg_rss,
            row.agg_cpu,
            sum(&t, "nettel_events_received_total", &[]),
            sum(&t, "nettel_kernel_lost_events_total", &[]),
            sum(&t, "nettel_loader_queue_dropped_events_total", &[]),
            sum(&t, "nettel_series", &[]),
        );
        rows.push(row);
    }
    let synthetic_sent = synth.join().expect("generator thread");
    std::thread::sleep(Duration::from_secs(2));
    let t = stack.agg.scrape();
    let received = sum(&t, "nettel_events_received_total", &[("kind", "synthetic")]);

    // The first row is warm-up: growth is measured from the second.
    let base = rows.get(1).or(rows.first()).copied().expect("at least one sample");
    let last = *rows.last().unwrap();
    let max = |f: fn(&Row) -> f64| rows.iter().map(f).fold(0.0, f64::max);
    let mean = |f: fn(&Row) -> f64| rows.iter().map(f).sum::<f64>() / rows.len() as f64;
    println!();
    println!("| | loader | aggregator |");
    println!("|---|---|---|");
    println!("| RSS after warm-up (MiB) | {:.1} | {:.1} |", base.loader_rss, base.agg_rss);
    println!("| RSS at the end (MiB) | {:.1} | {:.1} |", last.loader_rss, last.agg_rss);
    println!("| RSS max (MiB) | {:.1} | {:.1} |", max(|r| r.loader_rss), max(|r| r.agg_rss));
    println!("| CPU mean (% of a core) | {:.2} | {:.2} |", mean(|r| r.loader_cpu), mean(|r| r.agg_cpu));
    println!(
        "synthetic events: sent {synthetic_sent}, received {received}, kernel lost {}, queue dropped {} \
         (kernel and queue loss are over all kinds)",
        sum(&t, "nettel_kernel_lost_events_total", &[]),
        sum(&t, "nettel_loader_queue_dropped_events_total", &[])
    );
    drop(stack);
    pods.clear_drops(&pods.b);
}
