// SPDX-License-Identifier: Apache-2.0
//! HTTP probe overhead benchmark: the traced workload with the agent on and
//! off, side by side in one run.
//!
//! nginx (one worker, `return 200`) serves in netns pod `nt12b`; clients run
//! in `nt12a`. Four modes: agent off, agent on with the sendmsg hooks
//! (`--http-hook sendmsg`), the socket hooks (`socket`) and the syscall hooks
//! (`syscall`).
//! Rounds rotate the order of the modes and each figure is the median over
//! rounds. Per round and mode:
//! * `wrk -t1 -c16 --latency` for `--seconds`: requests/s, p50/p99 at saturation;
//! * nginx CPU (master + worker, /proc) per request;
//! * `nettel-traffic paced` at a fixed `--rate` (default: half the agent-off
//!   maximum, from a calibration wrk run before the rounds), 16 keep-alive
//!   connections from one client thread, open loop: p50/p99 latency in
//!   microseconds (the added latency is the median of within-round differences);
//! * a syscall-heavy process unrelated to the network, `dd bs=64` through a
//!   pipe: CPU per read/write syscall (the probes fire on every one).
//!
//! A last pass per hook set enables `kernel.bpf_stats_enabled` to report the
//! BPF time per HTTP request and per dd syscall (stats are off during the
//! timed rounds: they add their own cost).
//!
//! With `--tls`, nginx serves HTTPS (Debian's OpenSSL 3) and the modes are:
//! agent off, agent on without TLS (`--tls off`: the socket hooks see only
//! ciphertext) and agent on with the OpenSSL uprobes (`--tls on`); only wrk
//! requests/s, nginx CPU per request and the BPF time are measured (the
//! paced client speaks plain HTTP, and dd is covered by the plain run).
//!
//! ```text
//! sudo target/release/nettel-http-bench [--rounds 3] [--seconds 10] [--rate REQ_PER_S] [--tls] [--pin]
//!                                      [--hooks floor,bound,sendmsg,socket,syscall] [--loader-args "FLAGS"]
//! ```
//! `--hooks` picks the agent-on modes to compare with agent off (default all three; with `--tls`, the
//! modes are `tls-off,tls-on`). Two reference modes load `bpf/probes/floor.bpf.c` (no loader):
//! `floor` attaches programs that return at once to the sendmsg hooks' tracepoints, what any program
//! there costs before it does any work; `bound` adds to it the two user-memory reads any HTTP probe
//! on these hooks needs (a read's first bytes, a send's status line) and nothing else, so that no
//! probe that counts requests there can cost less. `--pin` runs nginx on CPU 1 and the clients (wrk,
//! the paced client) on CPU 0, so that the server's CPU bounds the request rate and the scheduler does not
//! move the two across CPUs between samples. `--rounds 0` runs only the BPF-time pass. `--loader-args` adds loader
//! flags to every agent-on mode. `--stop-agent` stops the loader and aggregator (SIGSTOP) during the
//! timed rounds (and the `--alternate` samples), the probes still attached: the kernel side's cost alone.
//! `--alternate CYCLES` adds a pass of short wrk samples (`--sample-seconds`, default 2) in the
//! order off, on, on, off per cycle and mode, with nginx's CPU from schedstat (nanoseconds): the
//! host under the development VM changes speed every ten seconds or so, and samples this short
//! mostly fall within one state (see [`alternate`]). `--compare-loader PATH` adds a mode
//! `compare` (add it to `--hooks`): the sendmsg hooks of the loader at PATH, another build, side by
//! side with this one's.
//! Run after `cargo build --release --bins` (the loader and aggregator are
//! taken from the same directory).

use std::{collections::BTreeMap, process::Command};

use nettel_integration::{
    flag, flag_or,
    netns::{exec, PodPair},
    process::Stack,
    servers::{self_signed_cert, start_nginx, start_nginx_tls},
};

const DD_BLOCKS: u64 = 2_000_000;

#[derive(Debug, Default, Clone, Copy)]
struct Sample {
    rps: f64,
    cpu_us_per_req: f64,
    wrk_p50_us: f64,
    wrk_p99_us: f64,
    rate_p50_us: f64,
    rate_p99_us: f64,
    /// Busy share of CPU 0 and CPU 1 (`/proc/stat`) during the fixed-rate pass.
    rate_busy: [f64; 2],
    dd_ns_per_syscall: f64,
    /// The host's syscall speed right before and right after the sample
    /// (agent off both times): [`host_syscall_ns`].
    host_ns: [f64; 2],
}

const USAGE: &str =
    "sudo nettel-http-bench [--rounds N] [--seconds S] [--rate REQ_PER_S] [--tls] [--pin] \
[--hooks floor,bound,sendmsg,socket,syscall,compare | tls-off,tls-on] [--loader-args \"FLAGS\"] [--stop-agent] [--alternate CYCLES] [--sample-seconds S] [--compare-loader PATH]";

/// `--pin`: nginx on [`SERVER_CPU`], the clients on [`CLIENT_CPU`].
static PIN: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
const SERVER_CPU: &str = "1";
const CLIENT_CPU: &str = "0";

/// `program` in `ns`, on [`CLIENT_CPU`] with `--pin`.
fn client(ns: &str, program: &str) -> Command {
    if PIN.get().copied().unwrap_or(false) {
        let mut c = exec(ns, "taskset");
        c.args(["-c", CLIENT_CPU, program]);
        c
    } else {
        exec(ns, program)
    }
}

/// The modes that load `bpf/probes/floor.bpf.c` (no loader), and their
/// programs and tracepoints. `floor`: programs that return at once, what any
/// program on the sendmsg hooks' tracepoints costs before it does any work.
/// `bound`: the floor plus the two user-memory reads any HTTP probe on these
/// hooks needs (a read's first bytes, a send's status line) and nothing else.
const REFERENCES: [(&str, &[(&str, &str)]); 2] = [
    (
        "floor",
        &[
            ("nt_floor_recv", "sock_recv_length"),
            ("nt_floor_sendmsg", "tcp_sendmsg_locked"),
            ("nt_floor_state", "inet_sock_set_state"),
        ],
    ),
    (
        "bound",
        &[
            ("nt_bound_recv", "sock_recv_length"),
            ("nt_bound_sendmsg", "tcp_sendmsg_locked"),
            ("nt_floor_state", "inet_sock_set_state"),
        ],
    ),
];

/// The label of the `--compare-loader` mode.
const COMPARE: &str = "compare";

/// What runs in an agent-on mode, until dropped.
enum Agent {
    /// The loader and aggregator.
    Stack { _stack: Stack },
    /// A reference object ([`REFERENCES`]): its links close with it.
    Reference { _ebpf: aya::Ebpf },
    /// An agent whose processes `pids` are stopped (`--stop-agent`): they
    /// continue before it is dropped.
    Stopped { _agent: Box<Agent>, pids: Vec<u32> },
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Agent::Stopped { pids, .. } = self {
            signal(pids, "CONT");
        }
    }
}

/// Loads and attaches the programs of reference mode `label`, if it is one.
fn attach_reference(label: &str) -> Option<aya::Ebpf> {
    let (_, programs) = REFERENCES.iter().find(|(l, _)| *l == label)?;
    let btf = aya::Btf::from_sys_fs().expect("kernel BTF");
    let mut ebpf = aya::Ebpf::load(nettel_bpf::FLOOR_OBJ).expect("load the floor object");
    for (name, tracepoint) in *programs {
        let prog: &mut aya::programs::BtfTracePoint =
            ebpf.program_mut(name).expect(name).try_into().expect("a tp_btf program");
        prog.load(tracepoint, &btf).unwrap_or_else(|e| panic!("load {name}: {e}"));
        prog.attach().unwrap_or_else(|e| panic!("attach {name}: {e}"));
    }
    Some(ebpf)
}

fn main() {
    nettel_integration::check_args(
        USAGE,
        &[
            "--rounds",
            "--seconds",
            "--rate",
            "--hooks",
            "--loader-args",
            "--alternate",
            "--sample-seconds",
            "--compare-loader",
        ],
        &["--tls", "--pin", "--stop-agent"],
    );
    let tls = std::env::args().any(|a| a == "--tls");
    let rounds: usize = flag_or("--rounds", 3);
    let seconds: u64 = flag_or("--seconds", 10);
    let cycles: usize = flag_or("--alternate", 0);
    let sample_seconds: u64 = flag_or("--sample-seconds", 2);
    let rate: Option<u64> = flag("--rate").map(|r| r.parse().expect("--rate: a number"));
    assert!(rustix::process::geteuid().is_root(), "run as root (network namespaces, BPF)");

    let pods = PodPair::new(12);
    let cert = tls.then(self_signed_cert);
    let (nginx, _upstream) = match &cert {
        Some((cert, key)) => start_nginx_tls(&pods.b, &pods.b_v4, cert, key),
        None => start_nginx(&pods.b, &pods.b_v4),
    };
    let nginx_pids = nginx_pids(nginx.child.id());
    if std::env::args().any(|a| a == "--pin") {
        PIN.set(true).unwrap();
        for pid in &nginx_pids {
            let ok = Command::new("taskset")
                .args(["-a", "-p", "-c", SERVER_CPU, &pid.to_string()])
                .stdout(std::process::Stdio::null())
                .status()
                .expect("taskset");
            assert!(ok.success(), "taskset nginx {pid}");
        }
    }
    let url = format!("{}://{}:8080/ok", if tls { "https" } else { "http" }, pods.b_v4);
    let entries = [(pods.b_v4.as_str(), "bench-0", "bench", "bench")];
    // Warm-up; then the fixed rate: half of what nginx serves with the agent off.
    wrk(&pods.a, &url, 2);
    let rate = rate.unwrap_or_else(|| {
        if tls || (rounds == 0 && cycles == 0) {
            0
        } else {
            (wrk(&pods.a, &url, 5).1 / 2.0) as u64
        }
    });

    // (label, loader flags); `None` is the agent off, always first.
    let mut all: Vec<(&str, &[&str])> = if tls {
        vec![
            ("tls-off", &["--http-hook", "auto", "--tls", "off"]),
            ("tls-on", &["--http-hook", "auto", "--tls", "on"]),
        ]
    } else {
        vec![
            ("floor", &[]),
            ("bound", &[]),
            ("sendmsg", &["--http-hook", "sendmsg", "--tls", "off"]),
            ("socket", &["--http-hook", "socket", "--tls", "off"]),
            ("syscall", &["--http-hook", "syscall", "--tls", "off"]),
        ]
    };
    // `--compare-loader PATH`: the sendmsg hooks (with `--tls`, the TLS
    // uprobes) of another loader build, side by side with this one's (an A/B
    // of a probe change).
    let compare = flag("--compare-loader");
    if compare.is_some() {
        all.push((
            COMPARE,
            if tls {
                &["--http-hook", "auto", "--tls", "on"]
            } else {
                &["--http-hook", "sendmsg", "--tls", "off"]
            },
        ));
    }
    let labels = all.iter().map(|(l, _)| *l).collect::<Vec<_>>().join(",");
    let defaults = all
        .iter()
        .map(|(l, _)| *l)
        .filter(|l| !REFERENCES.iter().any(|(r, _)| r == l))
        .collect::<Vec<_>>()
        .join(",");
    let wanted = flag("--hooks").unwrap_or(defaults);
    // Extra loader flags for every agent-on mode (experiments: ring size, ...).
    let extra = flag("--loader-args").unwrap_or_default();
    let mut modes: Vec<(&str, Option<Vec<&str>>)> = vec![("off", None)];
    for name in wanted.split(',') {
        let Some((label, flags)) = all.iter().find(|(l, _)| *l == name) else {
            panic!("--hooks: unknown mode `{name}` (known: {labels}); {USAGE}")
        };
        modes.push((label, Some(flags.iter().copied().chain(extra.split_whitespace()).collect())));
    }
    // Experiment: the loader and aggregator stopped (SIGSTOP) during the
    // timed rounds, the probes still attached: what the kernel side alone costs.
    let stop_agent = std::env::args().any(|a| a == "--stop-agent");
    let start = |label: &str, flags: &Vec<&str>| {
        if let Some(ebpf) = attach_reference(label) {
            return Agent::Reference { _ebpf: ebpf };
        }
        let stack = match (&compare, label == COMPARE) {
            (Some(path), true) => {
                // The harness execs `prefix NEW-LOADER run ...`; the prefix drops
                // NEW-LOADER and execs the other build with the same arguments.
                let prefix: Vec<String> =
                    ["sh", "-c", "shift; exec \"$0\" \"$@\"", path].iter().map(|s| (*s).to_owned()).collect();
                Stack::start_wrapped(&prefix, &entries, flags)
            }
            _ => Stack::start_with(&entries, flags),
        };
        if flags.windows(2).any(|w| w == ["--tls", "on"]) {
            // The attacher instruments nginx's libssl on its next /proc scan.
            nettel_integration::wait_for(std::time::Duration::from_secs(20), "libssl instrumented", || {
                let tls = stack.loader.status().counters?.probe?.tls?;
                (tls.files_instrumented > 0).then_some(())
            });
        }
        Agent::Stack { _stack: stack }
    };
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); modes.len()];
    for round in 0..rounds {
        for k in 0..modes.len() {
            let m = (round + k) % modes.len();
            let host_before = host_syscall_ns();
            let stack = modes[m].1.as_ref().map(|flags| start(modes[m].0, flags));
            let stopped = if stop_agent && matches!(stack, Some(Agent::Stack { .. })) {
                [agent_pids("nettel-loader"), agent_pids("nettel-aggregat")].concat()
            } else {
                Vec::new()
            };
            signal(&stopped, "STOP");
            let mut s = measure(&pods.a, &url, seconds, rate, &nginx_pids, !tls);
            signal(&stopped, "CONT");
            drop(stack);
            s.host_ns = [host_before, host_syscall_ns()];
            eprintln!("round {round} agent {}: {s:?}", modes[m].0);
            samples[m].push(s);
        }
    }

    let paced_rate = if tls { 0 } else { rate };
    // One `--alternate` sample: wrk, then (plain HTTP) the fixed rate, as long.
    let short = || {
        let cpu0 = schedstat_ns(&nginx_pids);
        let (requests, rps, _, _) = wrk(&pods.a, &url, sample_seconds);
        let cpu_ns = schedstat_ns(&nginx_pids) - cpu0;
        let cpu1 = schedstat_ns(&nginx_pids);
        let (p50_us, p99_us, paced_requests) =
            if paced_rate > 0 { paced(&pods.a, &url, paced_rate, sample_seconds) } else { (0.0, 0.0, 0.0) };
        let paced_cpu_ns = schedstat_ns(&nginx_pids) - cpu1;
        Short { rps, requests, cpu_ns, p50_us, p99_us, paced_requests, paced_cpu_ns }
    };
    // With --stop-agent, an agent-on mode's samples run with the loader and
    // aggregator stopped, as the rounds above do.
    let start_sampled = |label: &str, flags: &Vec<&str>| {
        let agent = start(label, flags);
        if stop_agent && matches!(agent, Agent::Stack { .. }) {
            let pids = [agent_pids("nettel-loader"), agent_pids("nettel-aggregat")].concat();
            signal(&pids, "STOP");
            return Agent::Stopped { _agent: Box::new(agent), pids };
        }
        agent
    };
    let alternated = (cycles > 0).then(|| alternate(&modes, cycles, &short, &start_sampled));

    // BPF time, with stats enabled for these passes only.
    let previous = std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled").unwrap_or_default();
    let mut bpf_lines = Vec::new();
    let mut per_program = Vec::new();
    for (label, flags) in modes.iter().filter_map(|(l, f)| f.as_ref().map(|f| (l, f))) {
        let stack = start(label, flags);
        std::fs::write("/proc/sys/kernel/bpf_stats_enabled", "1").expect("enable bpf stats");
        let agent = [agent_pids("nettel-loader"), agent_pids("nettel-aggregat")];
        let (before, iwi_before) = (http_prog_stats(), irq_work_interrupts());
        let agent_cpu0 = agent.each_ref().map(|p| cpu_seconds(p));
        let (requests, _, _, _) = wrk(&pods.a, &url, 5);
        let agent_cpu = agent.each_ref().map(|p| cpu_seconds(p));
        let (after, iwi_after) = (http_prog_stats(), irq_work_interrupts());
        let [loader_us, agg_us] = [0, 1].map(|i| (agent_cpu[i] - agent_cpu0[i]) * 1e6 / requests);
        let (time, runs) = total(&after, &before);
        let wakeups = (iwi_after - iwi_before) as f64;
        let per_request = time as f64 / requests;
        let runs_per_request = runs as f64 / requests;
        for (name, (t, c)) in &after {
            let (t0, c0) = before.get(name).copied().unwrap_or_default();
            if c > &c0 {
                per_program.push(format!(
                    "| {label} | {name} | {:.2} | {:.0} ns | {:.0} ns |",
                    (c - c0) as f64 / requests,
                    (t - t0) as f64 / (c - c0) as f64,
                    (t - t0) as f64 / requests
                ));
            }
        }
        let (dd_per_syscall, dd_runs) = if tls {
            (f64::NAN, 0)
        } else {
            let before = http_prog_stats();
            dd_cpu();
            let (time, runs) = total(&http_prog_stats(), &before);
            (time as f64 / (4 * DD_BLOCKS) as f64, runs)
        };
        let _ = std::fs::write("/proc/sys/kernel/bpf_stats_enabled", previous.trim());
        bpf_lines.push(format!(
            "| {label} | {per_request:.0} ns | {runs_per_request:.1} | {dd_per_syscall:.0} ns | {dd_runs} | {:.0} ({:.4}) | {loader_us:.2} / {agg_us:.2} us |",
            wakeups,
            wakeups / requests
        ));
        drop(stack);
    }

    let med = |m: usize, f: fn(&Sample) -> f64| median(samples[m].iter().map(f).collect());
    let what = if tls { "HTTPS" } else { "HTTP" };
    let paced = if tls { String::new() } else { format!(", fixed rate {rate} req/s") };
    if rounds > 0 {
        println!("\nnettel {what} overhead: {rounds} rotating rounds, wrk {seconds} s{paced}\n");
        let head: String = modes[1..].iter().map(|(l, _)| format!(" agent {l} | ratio |")).collect();
        println!("| figure | agent off |{head}");
        println!("|---|---|{}", "---|---|".repeat(modes.len() - 1));
        let row = |name: &str, f: fn(&Sample) -> f64, unit: &str| {
            let off = med(0, f);
            let on: String = (1..modes.len())
                .map(|m| format!(" {:.1} {unit} | {:.3} |", med(m, f), med(m, f) / off))
                .collect();
            println!("| {name} | {off:.1} {unit} |{on}");
        };
        row("requests/s (wrk -t1 -c16)", |s| s.rps, "");
        row("nginx CPU per request", |s| s.cpu_us_per_req, "us");
        row("p50 latency at saturation", |s| s.wrk_p50_us, "us");
        row("p99 latency at saturation", |s| s.wrk_p99_us, "us");
        // The fixed-rate and dd figures are not measured over TLS (see the module docs).
        if !tls {
            row("p50 latency at the fixed rate", |s| s.rate_p50_us, "us");
            row("p99 latency at the fixed rate", |s| s.rate_p99_us, "us");
            row("CPU 0 busy at the fixed rate", |s| s.rate_busy[0] * 100.0, "%");
            row("CPU 1 busy at the fixed rate", |s| s.rate_busy[1] * 100.0, "%");
            row("dd through a pipe: CPU per syscall", |s| s.dd_ns_per_syscall, "ns");
        }
        within_round_table(&modes, &samples, tls);
    }
    if let Some(cycles) = alternated {
        alternate_table(&modes, &cycles, sample_seconds, paced_rate);
    }
    println!("\nBPF time (kernel.bpf_stats_enabled, separate pass):\n");
    println!("| agent | BPF time per request | program runs per request | BPF time per dd syscall | program runs during dd | IRQ work interrupts (per request) | loader / aggregator CPU per request |");
    println!("|---|---|---|---|---|---|---|");
    for l in bpf_lines {
        println!("{l}");
    }
    println!("\nPer program, same pass:\n");
    println!("| agent | program | runs per request | BPF time per run | BPF time per request |");
    println!("|---|---|---|---|---|");
    for l in per_program {
        println!("{l}");
    }
}

/// One sample of an `--alternate` cycle: a wrk run, then (plain HTTP) a
/// paced run at the fixed rate, as long.
#[derive(Debug, Default, Clone, Copy)]
struct Short {
    /// Requests/s as wrk reports it (over its own run time).
    rps: f64,
    requests: f64,
    /// nginx CPU (schedstat) during the wrk run, ns.
    cpu_ns: f64,
    /// Latency percentiles at the fixed rate, us (0 when not measured).
    p50_us: f64,
    p99_us: f64,
    /// Requests completed at the fixed rate, and nginx CPU (schedstat)
    /// meanwhile, ns (0 when not measured).
    paced_requests: f64,
    paced_cpu_ns: f64,
}

/// One `--alternate` cycle of a mode: its two agent-off and two agent-on samples.
#[derive(Debug, Default, Clone, Copy)]
struct Cycle {
    off: [Short; 2],
    on: [Short; 2],
}

impl Cycle {
    /// Agent-on requests/s over agent-off requests/s.
    fn rps_ratio(&self) -> f64 {
        (self.on[0].rps + self.on[1].rps) / (self.off[0].rps + self.off[1].rps)
    }

    /// Agent-on nginx CPU per request over agent-off.
    fn cpu_ratio(&self) -> f64 {
        let per_request = |s: &[Short; 2]| (s[0].cpu_ns + s[1].cpu_ns) / (s[0].requests + s[1].requests);
        per_request(&self.on) / per_request(&self.off)
    }

    /// Agent-on nginx CPU per request over agent-off at the fixed rate: the
    /// same requests per second in both, so the client's wake-ups follow the
    /// same pattern. At saturation they do not: a server slowed by the probes
    /// finds its client asleep more often, and each wake-up of the other CPU
    /// is charged to the server's send (BENCHMARKS.md, session 13).
    fn paced_cpu_ratio(&self) -> f64 {
        let per_request = |s: &[Short; 2]| {
            (s[0].paced_cpu_ns + s[1].paced_cpu_ns) / (s[0].paced_requests + s[1].paced_requests)
        };
        per_request(&self.on) / per_request(&self.off)
    }

    /// Added p50 latency at the fixed rate, us.
    fn added_p50(&self) -> f64 {
        self.added(|s| s.p50_us)
    }

    /// Added p99 latency at the fixed rate, us.
    fn added_p99(&self) -> f64 {
        self.added(|s| s.p99_us)
    }

    /// The mean of `f` over the agent-on samples minus its mean over the agent-off ones.
    fn added(&self, f: fn(&Short) -> f64) -> f64 {
        (f(&self.on[0]) + f(&self.on[1]) - f(&self.off[0]) - f(&self.off[1])) / 2.0
    }
}

/// `--alternate CYCLES`: short wrk samples in the order off, on, on, off
/// (the agent started before the first agent-on sample and stopped after the
/// second), so that a drift of the host's speed within a cycle cancels out;
/// cycles run the modes in turn. The host under the development VM flips
/// between two speed states every ten seconds or so: with samples of a
/// second or two, most cycles fall within one state, and the median over
/// cycles is taken. CPU is read from `/proc/PID/task/*/schedstat`
/// (nanoseconds; utime and stime tick at 10 ms, too coarse for such samples).
fn alternate(
    modes: &[(&str, Option<Vec<&str>>)],
    cycles: usize,
    sample: &dyn Fn() -> Short,
    start: &dyn Fn(&str, &Vec<&str>) -> Agent,
) -> Vec<Vec<Cycle>> {
    let mut out = vec![Vec::new(); modes.len()];
    for c in 0..cycles {
        for (m, (label, flags)) in modes.iter().enumerate().skip(1) {
            let flags = flags.as_ref().expect("an agent-on mode");
            let mut cycle = Cycle::default();
            cycle.off[0] = sample();
            let agent = start(label, flags);
            cycle.on = [sample(), sample()];
            drop(agent);
            cycle.off[1] = sample();
            eprintln!(
                "cycle {c} agent {label}: requests/s {:.3}, CPU per request {:.3}, at the fixed rate {:.3} ({cycle:?})",
                cycle.rps_ratio(),
                cycle.cpu_ratio(),
                cycle.paced_cpu_ratio()
            );
            out[m].push(cycle);
        }
    }
    out
}

/// Prints the `--alternate` figures: the median over cycles of each cycle's
/// ratio, with the quartiles.
fn alternate_table(modes: &[(&str, Option<Vec<&str>>)], cycles: &[Vec<Cycle>], seconds: u64, rate: u64) {
    println!(
        "\nAlternating samples (--alternate): {seconds} s of wrk, then {seconds} s at {rate} req/s, per sample; off, on, on, off per cycle; median over cycles (quartiles):\n"
    );
    println!("| agent | cycles | requests/s, on / off | nginx CPU per request, on / off | nginx CPU per request at the fixed rate, on / off | added p50 at the fixed rate | added p99 at the fixed rate |");
    println!("|---|---|---|---|---|---|---|");
    for (m, (label, _)) in modes.iter().enumerate().skip(1) {
        let quartiles = |f: fn(&Cycle) -> f64, prec: usize, unit: &str| {
            let mut v: Vec<f64> = cycles[m].iter().map(f).collect();
            v.sort_by(f64::total_cmp);
            let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
            format!("{:.prec$}{unit} ({:.prec$} to {:.prec$})", median(v.clone()), at(0.25), at(0.75))
        };
        let latency = |f: fn(&Cycle) -> f64| if rate > 0 { quartiles(f, 1, " us") } else { "-".to_owned() };
        println!(
            "| {label} | {} | {} | {} | {} | {} | {} |",
            cycles[m].len(),
            quartiles(Cycle::rps_ratio, 3, ""),
            quartiles(Cycle::cpu_ratio, 3, ""),
            if rate > 0 { quartiles(Cycle::paced_cpu_ratio, 3, "") } else { "-".to_owned() },
            latency(Cycle::added_p50),
            latency(Cycle::added_p99)
        );
    }
}

/// CPU time so far of every thread of `pids`, in nanoseconds
/// (`/proc/PID/task/TID/schedstat`, first field).
fn schedstat_ns(pids: &[u32]) -> f64 {
    let mut total = 0u64;
    for pid in pids {
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("/proc/PID/task");
        for task in tasks {
            let path = task.expect("a task entry").path().join("schedstat");
            let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            total += text.split_whitespace().next().and_then(|v| v.parse::<u64>().ok()).expect("schedstat");
        }
    }
    total as f64
}

fn measure(ns: &str, url: &str, seconds: u64, rate: u64, nginx: &[u32], full: bool) -> Sample {
    let cpu0 = cpu_seconds(nginx);
    let (requests, rps, wrk_p50_us, wrk_p99_us) = wrk(ns, url, seconds);
    let cpu_us_per_req = (cpu_seconds(nginx) - cpu0) * 1e6 / requests;
    if !full {
        return Sample { rps, cpu_us_per_req, wrk_p50_us, wrk_p99_us, ..Sample::default() };
    }
    let busy0 = cpu_ticks();
    let (rate_p50_us, rate_p99_us, _) = paced(ns, url, rate, 5);
    let busy = cpu_ticks();
    let rate_busy = [0, 1].map(|c| {
        let (b, t) = (busy[c].0 - busy0[c].0, busy[c].1 - busy0[c].1);
        if t == 0 {
            0.0
        } else {
            b as f64 / t as f64
        }
    });
    let dd_ns_per_syscall = dd_cpu() * 1e9 / (4 * DD_BLOCKS) as f64;
    Sample {
        rps,
        cpu_us_per_req,
        wrk_p50_us,
        wrk_p99_us,
        rate_p50_us,
        rate_p99_us,
        rate_busy,
        dd_ns_per_syscall,
        ..Sample::default()
    }
}

/// Host speed states further apart than this ratio make a pair unsteady.
const STEADY: f64 = 1.2;

/// The agent-on figures against agent off *within* each round, where the
/// modes run back to back: medians (and ranges) of the per-round ratios and
/// differences, over all rounds and over the steady ones only. On the
/// development VM the host's syscall cost flips between two states (dd's
/// 280 and 470 ns per syscall) for tens of seconds at a time, with no steal
/// time; a round whose samples straddle a flip compares two hosts. A round
/// is steady when the four [`host_syscall_ns`] readings around its two
/// samples are within [`STEADY`] of each other.
fn within_round_table(modes: &[(&str, Option<Vec<&str>>)], samples: &[Vec<Sample>], tls: bool) {
    type Figure = (&'static str, fn(&Sample, &Sample) -> f64, &'static str);
    let mut figures: Vec<Figure> = vec![
        ("requests/s, on / off", |on, off| on.rps / off.rps, ""),
        ("nginx CPU per request, on / off", |on, off| on.cpu_us_per_req / off.cpu_us_per_req, ""),
    ];
    if !tls {
        figures.push((
            "added p50 latency at the fixed rate",
            |on, off| on.rate_p50_us - off.rate_p50_us,
            " us",
        ));
        figures.push((
            "added p99 latency at the fixed rate",
            |on, off| on.rate_p99_us - off.rate_p99_us,
            " us",
        ));
        figures.push((
            "added CPU per dd syscall",
            |on, off| on.dd_ns_per_syscall - off.dd_ns_per_syscall,
            " ns",
        ));
    }
    let steady = |on: &Sample, off: &Sample| {
        let (lo, hi) = range(&[on.host_ns, off.host_ns].concat());
        hi <= lo * STEADY
    };
    let summary = |v: Vec<f64>, unit: &str| {
        if v.is_empty() {
            return "none".to_owned();
        }
        let (lo, hi) = range(&v);
        let prec = if unit.is_empty() { 3 } else { 1 };
        format!("{:.prec$}{unit} ({lo:.prec$} to {hi:.prec$})", median(v))
    };
    println!("\nWithin a round, median (range); steady rounds: host syscall speed within {STEADY}x before and after both samples:\n");
    println!("| agent | figure | all rounds | steady rounds |");
    println!("|---|---|---|---|");
    for (m, (label, _)) in modes.iter().enumerate().skip(1) {
        let pairs: Vec<(&Sample, &Sample)> = samples[m].iter().zip(&samples[0]).collect();
        let n_steady = pairs.iter().filter(|(on, off)| steady(on, off)).count();
        for (name, f, unit) in &figures {
            let all: Vec<f64> = pairs.iter().map(|(on, off)| f(on, off)).collect();
            let kept: Vec<f64> =
                pairs.iter().filter(|(on, off)| steady(on, off)).map(|(on, off)| f(on, off)).collect();
            println!(
                "| {label} | {name} | {} [{}] | {} [{n_steady}] |",
                summary(all, unit),
                pairs.len(),
                summary(kept, unit)
            );
        }
    }
}

/// The smallest and largest of `v`.
fn range(v: &[f64]) -> (f64, f64) {
    v.iter().fold((f64::MAX, f64::MIN), |(l, h), &x| (l.min(x), h.max(x)))
}

/// The host's cost of a syscall right now, in wall-clock ns per block of
/// `dd bs=64` through a pipe (300k blocks, ~0.1-0.3 s). Pipes pass neither
/// socket hook, and it runs with the agent off.
fn host_syscall_ns() -> f64 {
    const BLOCKS: u64 = 300_000;
    let t0 = std::time::Instant::now();
    let ok = Command::new("bash")
        .args([
            "-c",
            &format!("dd if=/dev/zero bs=64 count={BLOCKS} 2>/dev/null | dd of=/dev/null bs=64 2>/dev/null"),
        ])
        .status()
        .expect("bash");
    assert!(ok.success(), "dd through a pipe failed");
    t0.elapsed().as_nanos() as f64 / BLOCKS as f64
}

/// Runs wrk; returns (requests, requests/s, p50 us, p99 us).
fn wrk(ns: &str, url: &str, seconds: u64) -> (f64, f64, f64, f64) {
    let out = client(ns, "wrk")
        .args(["-t1", "-c16", &format!("-d{seconds}s"), "--latency", url])
        .output()
        .expect("wrk (scripts/setup installs it)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && !text.contains("Non-2xx"), "wrk failed:\n{text}");
    let field = |prefix: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(prefix).map(str::trim))
            .unwrap_or_else(|| panic!("no `{prefix}` in wrk output:\n{text}"))
            .to_owned()
    };
    let total = text
        .lines()
        .find(|l| l.contains("requests in"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no request count in wrk output:\n{text}"));
    let rps = field("Requests/sec:").parse().unwrap();
    (total, rps, duration_us(&field("50%")), duration_us(&field("99%")))
}

/// wrk's durations: `812.00us`, `1.23ms`, `2.00s`.
fn duration_us(s: &str) -> f64 {
    let (num, mult) = if let Some(v) = s.strip_suffix("us") {
        (v, 1.0)
    } else if let Some(v) = s.strip_suffix("ms") {
        (v, 1e3)
    } else if let Some(v) = s.strip_suffix('s') {
        (v, 1e6)
    } else {
        panic!("unknown duration `{s}`")
    };
    num.parse::<f64>().unwrap() * mult
}

/// Sends GETs at a fixed total rate for `seconds` over 16 keep-alive
/// connections from netns `ns` (`nettel-traffic paced`, open loop); returns
/// (p50 us, p99 us, requests completed).
fn paced(ns: &str, url: &str, rate: u64, seconds: u64) -> (f64, f64, f64) {
    let rest = url.strip_prefix("http://").expect("plain HTTP url");
    let (addr, path) = rest.split_once('/').expect("url with a path");
    let out = client(ns, nettel_integration::process::bin("nettel-traffic").to_str().unwrap())
        .args(["paced", addr, &format!("/{path}"), &rate.to_string(), &seconds.to_string(), "16"])
        .output()
        .expect("nettel-traffic");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "nettel-traffic paced: {}", String::from_utf8_lossy(&out.stderr));
    let v: Vec<f64> = text.split_whitespace().map(|x| x.parse().unwrap()).collect();
    (v[0], v[1], v[2])
}

/// CPU seconds (user + system) of `dd bs=64` through a pipe, both ends.
fn dd_cpu() -> f64 {
    let script = format!(
        "dd if=/dev/zero bs=64 count={DD_BLOCKS} 2>/dev/null | dd of=/dev/null bs=64 2>/dev/null; times"
    );
    let out = Command::new("bash").args(["-c", &script]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    // `times`: the shell's user/sys, then its children's.
    let children = text.lines().nth(1).unwrap_or_else(|| panic!("no times output: {text}"));
    children.split_whitespace().map(bash_time).sum()
}

/// `0m1.234s` -> 1.234.
fn bash_time(s: &str) -> f64 {
    let (m, rest) = s.split_once('m').unwrap();
    m.parse::<f64>().unwrap() * 60.0 + rest.trim_end_matches('s').parse::<f64>().unwrap()
}

/// nginx master and its workers.
fn nginx_pids(master: u32) -> Vec<u32> {
    let children = std::fs::read_to_string(format!("/proc/{master}/task/{master}/children")).unwrap();
    std::iter::once(master).chain(children.split_whitespace().map(|p| p.parse().unwrap())).collect()
}

/// (busy, total) ticks of CPU 0 and CPU 1 so far (`/proc/stat`; busy is all
/// but idle and iowait).
fn cpu_ticks() -> [(u64, u64); 2] {
    let text = std::fs::read_to_string("/proc/stat").expect("/proc/stat");
    [0, 1].map(|c| {
        let line = text.lines().find(|l| l.starts_with(&format!("cpu{c} "))).expect("a cpu line");
        let v: Vec<u64> = line.split_whitespace().skip(1).map(|x| x.parse().unwrap_or(0)).collect();
        let total: u64 = v.iter().take(8).sum();
        (total - v[3] - v[4], total)
    })
}

/// Sends `sig` to each of `pids`.
fn signal(pids: &[u32], sig: &str) {
    for pid in pids {
        let ok = Command::new("kill").args([&format!("-{sig}"), &pid.to_string()]).status().expect("kill");
        assert!(ok.success(), "kill -{sig} {pid}");
    }
}

/// Pids of the processes whose command name (15 bytes at most) is `comm`.
fn agent_pids(comm: &str) -> Vec<u32> {
    let out = Command::new("pgrep").args(["-x", comm]).output().expect("pgrep");
    String::from_utf8_lossy(&out.stdout).split_whitespace().filter_map(|p| p.parse().ok()).collect()
}

fn cpu_seconds(pids: &[u32]) -> f64 {
    pids.iter()
        .map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
            let after_comm = &stat[stat.rfind(')').unwrap() + 2..];
            let f: Vec<u64> = after_comm.split_whitespace().map(|x| x.parse().unwrap_or(0)).collect();
            (f[11] + f[12]) as f64 / 100.0 // utime + stime, USER_HZ = 100
        })
        .sum()
}

/// IRQ work interrupts on all CPUs so far (`IWI` in /proc/interrupts): how a
/// ring-buffer wakeup reaches the loader, one self-IPI each.
fn irq_work_interrupts() -> u64 {
    let text = std::fs::read_to_string("/proc/interrupts").expect("/proc/interrupts");
    text.lines()
        .find_map(|l| l.trim_start().strip_prefix("IWI:"))
        .map(|rest| rest.split_whitespace().map_while(|v| v.parse::<u64>().ok()).sum())
        .unwrap_or(0)
}

/// (run_time_ns, run_cnt) of each of nettel's HTTP and TLS programs (and the
/// reference modes'), by name.
fn http_prog_stats() -> BTreeMap<String, (u64, u64)> {
    let out = Command::new("bpftool").args(["-j", "prog", "show"]).output().expect("bpftool");
    let progs: serde_json::Value = serde_json::from_slice(&out.stdout).expect("bpftool JSON");
    progs
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| {
            let name = p["name"].as_str().filter(|n| {
                n.starts_with("nt_http")
                    || n.starts_with("nt_tls")
                    || n.starts_with("nt_floor")
                    || n.starts_with("nt_bound")
            })?;
            Some((
                name.to_owned(),
                (p["run_time_ns"].as_u64().unwrap_or(0), p["run_cnt"].as_u64().unwrap_or(0)),
            ))
        })
        .fold(BTreeMap::new(), |mut m, (name, (t, c))| {
            let e: &mut (u64, u64) = m.entry(name).or_default();
            *e = (e.0 + t, e.1 + c);
            m
        })
}

/// (run time, runs) added between two [`http_prog_stats`] readings, over all programs.
fn total(after: &BTreeMap<String, (u64, u64)>, before: &BTreeMap<String, (u64, u64)>) -> (u64, u64) {
    let sum = |m: &BTreeMap<String, (u64, u64)>| m.values().fold((0, 0), |(t, c), (a, b)| (t + a, c + b));
    let (a, b) = (sum(after), sum(before));
    (a.0.saturating_sub(b.0), a.1.saturating_sub(b.1))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}
