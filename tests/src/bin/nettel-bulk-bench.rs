// SPDX-License-Identifier: Apache-2.0
//! Bulk TCP throughput with the agent on and off: `iperf3` over a veth pair
//! between two netns pods (`nt45a` -> `nt45b`), side by side in one run.
//!
//! Every read and write of the transfer passes the HTTP hooks (the loader's
//! default set, `--http-hook auto`; they exit at the first bytes, which are
//! not HTTP), and every retransmit the retransmit probe; this measures what
//! that costs a bulk transfer.
//!
//! Two passes, each optional:
//! * rounds (`--rounds`, `--seconds`): one iperf3 run per mode and round,
//!   the order alternating; figures are medians over rounds.
//! * `--alternate CYCLES` (`--sample-seconds`, default 1): per cycle, short
//!   runs in the order off, on, on, off (the agent started before the first
//!   agent-on run and stopped after the second). A cycle's ratio is its two
//!   agent-on runs over its two agent-off ones, so a drift of the host's speed
//!   within the cycle cancels; the figure is the median over cycles, with the
//!   quartiles. The development VM's host changes speed every ten seconds or
//!   so, and 5 s rounds straddle the changes (BENCHMARKS.md, "bulk").
//!
//! ```text
//! sudo target/release/nettel-bulk-bench [--rounds 5] [--seconds 5] [--alternate CYCLES] [--sample-seconds S]
//! ```
//! Run after `cargo build --release --workspace --bins` (iperf3 from
//! scripts/setup).

use std::process::Stdio;

use nettel_integration::{
    flag_or,
    netns::{exec, PodPair},
    process::Stack,
    servers::start_iperf3,
};

/// Flags of the agent-on mode.
const AGENT_FLAGS: [&str; 2] = ["--tls", "off"];

/// One iperf3 run of `seconds`: (received Gbit/s, sender retransmits).
fn iperf(pods: &PodPair, seconds: u64) -> (f64, u64) {
    let out = exec(&pods.a, "iperf3")
        .args(["-c", &pods.b_v4, "-t", &seconds.to_string(), "-J"])
        .stderr(Stdio::null())
        .output()
        .expect("iperf3 (scripts/setup installs it)");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("iperf3 JSON");
    let end = &v["end"];
    let bps = end["sum_received"]["bits_per_second"].as_f64().unwrap_or_else(|| panic!("iperf3: {v}"));
    (bps / 1e9, end["sum_sent"]["retransmits"].as_u64().unwrap_or(0))
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
}

fn median(v: Vec<f64>) -> f64 {
    let v = sorted(v);
    v[v.len() / 2]
}

/// The rounds pass: one run of `seconds` per mode and round.
fn rounds_pass(pods: &PodPair, rounds: u64, seconds: u64) {
    let (mut off, mut on, mut rtx_off, mut rtx_on) = (vec![], vec![], vec![], vec![]);
    for round in 0..rounds {
        for agent in [round % 2 == 1, round % 2 == 0] {
            let stack = agent.then(|| Stack::start_with(&[], &AGENT_FLAGS));
            let (gbps, retransmits) = iperf(pods, seconds);
            eprintln!(
                "round {round} agent {}: {gbps:.2} Gbit/s, {retransmits} retransmits",
                if agent { "on" } else { "off" }
            );
            if agent {
                on.push(gbps);
                rtx_on.push(retransmits as f64);
            } else {
                off.push(gbps);
                rtx_off.push(retransmits as f64);
            }
            drop(stack);
        }
    }
    let (off, on) = (median(off), median(on));
    println!("| figure | agent off | agent on (default hooks, --tls off) | ratio |");
    println!("|---|---|---|---|");
    println!(
        "| iperf3 {seconds} s over veth, median of {rounds} | {off:.2} Gbit/s | {on:.2} Gbit/s | {:.3} |",
        on / off
    );
    println!(
        "| sender retransmits per run (each one an event when the agent is on) | {:.0} | {:.0} | |",
        median(rtx_off),
        median(rtx_on)
    );
}

/// The `--alternate` pass: `cycles` cycles of off, on, on, off runs of
/// `seconds`.
fn alternate_pass(pods: &PodPair, cycles: u64, seconds: u64) {
    let (mut ratios, mut off_gbps, mut on_gbps) = (vec![], vec![], vec![]);
    for c in 0..cycles {
        let before = iperf(pods, seconds).0;
        let stack = Stack::start_with(&[], &AGENT_FLAGS);
        let on = [iperf(pods, seconds).0, iperf(pods, seconds).0];
        drop(stack);
        let after = iperf(pods, seconds).0;
        let ratio = (on[0] + on[1]) / (before + after);
        eprintln!(
            "cycle {c}: off {before:.2}, on {:.2} {:.2}, off {after:.2} Gbit/s: {ratio:.3}",
            on[0], on[1]
        );
        ratios.push(ratio);
        off_gbps.extend([before, after]);
        on_gbps.extend(on);
    }
    let r = sorted(ratios);
    let at = |q: f64| r[((r.len() - 1) as f64 * q).round() as usize];
    println!(
        "\nAlternating runs (--alternate): iperf3 {seconds} s per run; off, on, on, off per cycle; median over cycles (quartiles):\n"
    );
    println!("| cycles | agent off, median run | agent on, median run | throughput, on / off |");
    println!("|---|---|---|---|");
    println!(
        "| {cycles} | {:.2} Gbit/s | {:.2} Gbit/s | {:.3} ({:.3} to {:.3}) |",
        median(off_gbps),
        median(on_gbps),
        r[r.len() / 2],
        at(0.25),
        at(0.75)
    );
}

fn main() {
    nettel_integration::check_args(
        "sudo nettel-bulk-bench [--rounds 5] [--seconds 5] [--alternate CYCLES] [--sample-seconds S]",
        &["--rounds", "--seconds", "--alternate", "--sample-seconds"],
        &[],
    );
    let (rounds, seconds): (u64, u64) = (flag_or("--rounds", 5), flag_or("--seconds", 5));
    let (cycles, sample_seconds): (u64, u64) = (flag_or("--alternate", 0), flag_or("--sample-seconds", 1));
    let pods = PodPair::new(45);
    let _server = start_iperf3(&pods.b, &pods.b_v4);
    if rounds > 0 {
        rounds_pass(&pods, rounds, seconds);
    }
    if cycles > 0 {
        alternate_pass(&pods, cycles, sample_seconds);
    }
}
