// SPDX-License-Identifier: Apache-2.0
//! Loader startup: from `exec` to serving (probes loaded, verified and
//! attached or adopted, the socket bound), and the peak RSS by then.
//!
//! Each round starts a loader on a fresh pin dir (everything loaded and
//! attached), stops it with SIGTERM keeping its pins, starts a second one on
//! the same pin dir (the pinned links adopted), stops that one and removes the
//! pins (`nettel-loader cleanup`). The loader binds its socket only after the
//! probes are running, so the time to the socket's appearance is the startup
//! time; it is polled every 0.5 ms. VmHWM is read right then. Medians over
//! `--rounds`, for the DaemonSet's base flags (`--tls off`) and with the TLS
//! attacher on.
//!
//! ```text
//! sudo target/release/nettel-startup-bench [--rounds 5]
//! ```
//! Run after `cargo build --release --workspace --bins`.

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use nettel_integration::process::{bin, scratch_dir};

fn hwm_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("VmHWM:")).map(str::to_owned))
        .and_then(|v| v.split_whitespace().next().and_then(|k| k.parse::<f64>().ok()))
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

/// Starts a loader and waits for its socket; returns it, the time taken and VmHWM then.
fn start(pin: &Path, socket: &Path, extra: &[&str]) -> (Child, Duration, f64) {
    let _ = std::fs::remove_file(socket);
    let t = Instant::now();
    let mut child = Command::new(bin("nettel-loader"))
        .arg("run")
        .arg("--socket")
        .arg(socket)
        .arg("--pin-dir")
        .arg(pin)
        .args(["--socket-gid", "65534", "--allow-uid", "65534"])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nettel-loader");
    while !socket.exists() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the loader exited ({status}) before serving; run it by hand to see why");
        }
        assert!(t.elapsed() < Duration::from_secs(30), "no socket after 30 s");
        std::thread::sleep(Duration::from_micros(500));
    }
    let took = t.elapsed();
    let hwm = hwm_mib(child.id());
    (child, took, hwm)
}

fn stop(mut child: Child) {
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let _ = child.wait();
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    nettel_integration::check_args("sudo nettel-startup-bench [--rounds 5]", &["--rounds"], &[]);
    let rounds: usize = nettel_integration::flag_or("--rounds", 5);
    println!(
        "| loader flags | start | time to serving (median of {rounds}) | min / max | VmHWM then (median) |"
    );
    println!("|---|---|---|---|---|");
    for flags in [&["--tls", "off"][..], &["--tls", "on"][..]] {
        let (mut fresh, mut adopt, mut fresh_hwm, mut adopt_hwm) = (vec![], vec![], vec![], vec![]);
        for round in 0..rounds {
            let dir = scratch_dir("startup");
            let pin = Path::new("/sys/fs/bpf").join(format!("nettel-startup-{}-{round}", std::process::id()));
            let socket = dir.join("loader.sock");
            let (first, took, hwm) = start(&pin, &socket, flags);
            stop(first);
            fresh.push(took.as_secs_f64() * 1e3);
            fresh_hwm.push(hwm);
            let (second, took, hwm) = start(&pin, &socket, flags);
            stop(second);
            adopt.push(took.as_secs_f64() * 1e3);
            adopt_hwm.push(hwm);
            let out = Command::new(bin("nettel-loader")).arg("cleanup").arg("--pin-dir").arg(&pin).output();
            assert!(out.is_ok_and(|o| o.status.success()), "cleanup of {}", pin.display());
        }
        for (what, times, hwm) in
            [("fresh pins: load + attach", fresh, fresh_hwm), ("pinned: adopt", adopt, adopt_hwm)]
        {
            let (min, max) =
                (times.iter().copied().fold(f64::MAX, f64::min), times.iter().copied().fold(0.0, f64::max));
            println!(
                "| {} | {what} | {:.0} ms | {min:.0} / {max:.0} ms | {:.1} MiB |",
                flags.join(" "),
                median(times),
                median(hwm)
            );
        }
    }
}
