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

/// Checks this process's command line against the flags a benchmark binary
/// takes: `--help` or `-h` prints `usage` and exits 0; an argument it does
/// not take, or a flag of `valued` without its value, is named with the usage
/// on stderr and exits 2 (a mistyped `--rate` would otherwise run a long
/// benchmark with the default).
pub fn check_args(usage: &str, valued: &[&str], switches: &[&str]) {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match parse_args(&args, valued, switches) {
        Ok(false) => {}
        Ok(true) => {
            println!("usage: {usage}");
            std::process::exit(0);
        }
        Err(problem) => {
            eprintln!("{problem}\nusage: {usage}");
            std::process::exit(2);
        }
    }
}

/// [`check_args`] without the exits: `Ok(true)` when help is asked for.
pub fn parse_args(args: &[String], valued: &[&str], switches: &[&str]) -> Result<bool, String> {
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--help" | "-h" => return Ok(true),
            f if valued.contains(&f) => {
                if it.next().is_none() {
                    return Err(format!("{f} needs a value"));
                }
            }
            f if switches.contains(&f) => {}
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    Ok(false)
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

#[cfg(test)]
mod tests {
    use super::parse_args;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn benchmark_command_lines_take_only_their_flags() {
        let (valued, switches) = (&["--rounds", "--hooks"][..], &["--tls"][..]);
        assert_eq!(parse_args(&args(&["--rounds", "3", "--tls"]), valued, switches), Ok(false));
        assert_eq!(parse_args(&args(&["--tls", "-h"]), valued, switches), Ok(true));
        assert_eq!(
            parse_args(&args(&["--round", "3"]), valued, switches),
            Err("unknown argument `--round`".into())
        );
        assert_eq!(parse_args(&args(&["--hooks"]), valued, switches), Err("--hooks needs a value".into()));
        assert_eq!(parse_args(&args(&["3"]), valued, switches), Err("unknown argument `3`".into()));
    }
}
