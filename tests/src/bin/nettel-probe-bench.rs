// SPDX-License-Identifier: Apache-2.0
//! The retransmit probe's kernel cost per event, against a reference:
//! `bpftrace` counting the same tracepoint (`tcp:tcp_retransmit_skb`) into a
//! map keyed by destination port, attached at the same time, so both see the
//! same events.
//!
//! The workload is a bulk `iperf3` transfer over a veth pair (`nt46a` ->
//! `nt46b`), which retransmits tens of thousands of segments per run on this
//! machine. With `kernel.bpf_stats_enabled` on, it reads `run_time_ns` and
//! `run_cnt` of nettel's `nt_tcp_rtx` and of bpftrace's program from
//! `bpftool prog show` before and after, and prints ns per run for each.
//! nettel's program does more per event: the socket's family, both addresses,
//! ports, state, segment count and netns cookie, a ring-buffer record and its
//! statistics, against one hash-map increment.
//!
//! ```text
//! sudo target/release/nettel-probe-bench [--seconds 5] [--rounds 3]
//! ```
//! Run after `cargo build --release --workspace --bins` (bpftrace and iperf3
//! from scripts/setup).

use std::{
    collections::BTreeMap,
    process::{Command, Stdio},
    time::Duration,
};

use nettel_integration::{
    flag_or,
    netns::{exec, PodPair},
    process::Stack,
    servers::start_iperf3,
};

/// (name, run_time_ns, run_cnt) of every loaded program, by id.
fn progs() -> BTreeMap<u64, (String, u64, u64)> {
    let out = Command::new("bpftool").args(["-j", "prog", "show"]).output().expect("bpftool");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("bpftool JSON");
    v.as_array()
        .unwrap()
        .iter()
        .filter_map(|p| {
            Some((
                p["id"].as_u64()?,
                (
                    p["name"].as_str().unwrap_or("").to_owned(),
                    p["run_time_ns"].as_u64().unwrap_or(0),
                    p["run_cnt"].as_u64().unwrap_or(0),
                ),
            ))
        })
        .collect()
}

fn main() {
    nettel_integration::check_args(
        "sudo nettel-probe-bench [--seconds 5] [--rounds 3]",
        &["--seconds", "--rounds"],
        &[],
    );
    let (seconds, rounds): (u64, u64) = (flag_or("--seconds", 5), flag_or("--rounds", 3));
    let pods = PodPair::new(46);
    let _server = start_iperf3(&pods.b, &pods.b_v4);
    let stack = Stack::start_with(&[], &["--tls", "off", "--http-hook", "off"]);
    let before_bpftrace = progs();
    let mut bpftrace = Command::new("bpftrace")
        .args(["-e", "tracepoint:tcp:tcp_retransmit_skb { @[args->dport] = count(); }"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("bpftrace (scripts/setup installs it)");
    // bpftrace compiles and attaches in the background: wait for its program.
    let mut reference = None;
    for _ in 0..200 {
        reference = progs().into_iter().find(|(id, _)| !before_bpftrace.contains_key(id)).map(|(id, _)| id);
        if reference.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let reference = reference.expect("bpftrace's program did not appear");
    let nettel = before_bpftrace
        .iter()
        .find(|(_, (name, _, _))| name == "nt_tcp_rtx")
        .map(|(id, _)| *id)
        .expect("nettel's nt_tcp_rtx program");

    let previous = std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled").unwrap_or_default();
    std::fs::write("/proc/sys/kernel/bpf_stats_enabled", "1").expect("enable bpf stats");
    println!(
        "| round | events (runs) | nettel `nt_tcp_rtx` ns per run | bpftrace map count ns per run | ratio |"
    );
    println!("|---|---|---|---|---|");
    let mut ratios = Vec::new();
    for round in 0..rounds {
        let before = progs();
        let out = exec(&pods.a, "iperf3")
            .args(["-c", &pods.b_v4, "-t", &seconds.to_string()])
            .stdout(Stdio::null())
            .status()
            .expect("iperf3");
        assert!(out.success(), "iperf3 failed");
        let after = progs();
        let delta = |id: u64| {
            let (_, t0, c0) = &before[&id];
            let (_, t1, c1) = &after[&id];
            (t1 - t0, c1 - c0)
        };
        let ((nt, nc), (bt, bc)) = (delta(nettel), delta(reference));
        let (n_ns, b_ns) = (nt as f64 / nc.max(1) as f64, bt as f64 / bc.max(1) as f64);
        ratios.push(n_ns / b_ns);
        println!("| {round} | {nc} ({bc}) | {n_ns:.0} | {b_ns:.0} | {:.2} |", n_ns / b_ns);
    }
    let _ = std::fs::write("/proc/sys/kernel/bpf_stats_enabled", previous.trim());
    let _ = bpftrace.kill();
    let _ = bpftrace.wait();
    drop(stack);
    ratios.sort_by(f64::total_cmp);
    println!("\nmedian ratio nettel / bpftrace: {:.2}", ratios[ratios.len() / 2]);
}
