// SPDX-License-Identifier: Apache-2.0
//! Harness for nettel's end-to-end tests against the real kernel: privilege
//! gating, network-namespace "pods", the loader and aggregator as real
//! processes, kernel counters read inside a namespace, a `/metrics` parser, and
//! hand-written HTTP/2 for abusing the loader's socket.
//!
//! Kernel tests need root and BTF. Outside CI a missing prerequisite skips the
//! test with a loud message; with `CI` set it fails the test.

pub mod bpftool;
pub mod cgroup;
pub mod generator;
pub mod kernel;
pub mod metrics;
pub mod netns;
pub mod process;
pub mod raw_h2;
pub mod servers;
pub mod traffic;

use std::time::{Duration, Instant};

/// Returns whether the kernel test `name` can run here. Panics in CI when it
/// cannot; prints a loud SKIP otherwise.
pub fn require_kernel(name: &str) -> bool {
    let mut missing = Vec::new();
    if rustix::process::geteuid().as_raw() != 0 {
        missing.push("root (euid 0) for BPF, network namespaces and iptables");
    }
    if !std::path::Path::new("/sys/kernel/btf/vmlinux").exists() {
        missing.push("kernel BTF at /sys/kernel/btf/vmlinux");
    }
    if missing.is_empty() {
        return true;
    }
    let why = missing.join(", ");
    if std::env::var_os("CI").is_some() {
        panic!("kernel test `{name}` cannot run in CI: missing {why}");
    }
    eprintln!("\n!!!!!!!! SKIPPED kernel test `{name}`: missing {why}. Run `sudo -E scripts/test` to run it. !!!!!!!!\n");
    false
}

/// The value after `name` (e.g. `--rounds`) on this process's command line.
pub fn flag(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned()
}

/// [`flag`] parsed, or `default` when absent; panics naming the flag on a bad value.
pub fn flag_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    flag(name).map_or(default, |v| v.parse().unwrap_or_else(|_| panic!("{name}: cannot parse `{v}`")))
}

/// Polls `f` every 100 ms until it returns `Some` or `timeout` passes.
pub fn wait_for<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
