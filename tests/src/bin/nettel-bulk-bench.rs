// SPDX-License-Identifier: Apache-2.0
//! Bulk TCP throughput with the agent on and off: `iperf3` over a veth pair
//! between two netns pods (`nt45a` -> `nt45b`), side by side in one run.
//!
//! Every read and write of the transfer passes the HTTP socket hooks (they
//! exit at the first bytes, which are not HTTP), and every retransmit the
//! retransmit probe; this measures what that costs a bulk transfer. Rounds
//! alternate the order of the two modes; figures are medians over rounds.
//!
//! ```text
//! sudo target/release/nettel-bulk-bench [--rounds 5] [--seconds 5]
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

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let (rounds, seconds): (u64, u64) = (flag_or("--rounds", 5), flag_or("--seconds", 5));
    let pods = PodPair::new(45);
    let _server = start_iperf3(&pods.b, &pods.b_v4);
    let (mut off, mut on, mut rtx_off, mut rtx_on) = (vec![], vec![], vec![], vec![]);
    for round in 0..rounds {
        for agent in [round % 2 == 1, round % 2 == 0] {
            let stack = agent.then(|| Stack::start_with(&[], &["--tls", "off"]));
            let (gbps, retransmits) = iperf(&pods, seconds);
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
    println!("| figure | agent off | agent on (socket hooks, --tls off) | ratio |");
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
