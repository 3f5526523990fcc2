// SPDX-License-Identifier: Apache-2.0
//! A verifier rejection, for real: the kernel rejects `fixtures/rejected.bpf.c`
//! (compiled with clang here, loaded through aya as the loader does), and the
//! loader's error for it, as `main` logs it (`{:#}` of the anyhow chain) and
//! as a `Debug` field would, names the program and the reason class but
//! carries no line of the verifier log and no kernel address, although the
//! log aya got back has both.
//!
//! Why a fixture and not the loader binary: the binary loads only the probes
//! embedded in it, all of which verify, and a flag to load another object would
//! be a production way to feed the kernel arbitrary BPF. The error path under
//! test is the one every load goes through (`Error::program`, then
//! `Error::with_capability_hint`).
//!
//! Needs root (CAP_BPF + CAP_PERFMON) and clang; without them it is skipped,
//! unless `CI` is set, where it fails.

use std::{path::Path, process::Command};

use nettel_loader::Error;

const PROGRAM: &str = "nt_rejected";

/// Lowest x86-64/arm64 kernel-half address (canonical upper half).
const KERNEL_HALF: u64 = 0xffff_8000_0000_0000;

/// Every kernel-pointer-looking token in `text` (hex, with or without `0x`,
/// or decimal).
fn kernel_pointers(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| {
            let hex = w.strip_prefix("0x").unwrap_or(w);
            let as_hex = (9..=16).contains(&hex.len())
                && hex.chars().all(|c| c.is_ascii_hexdigit())
                && u64::from_str_radix(hex, 16).is_ok_and(|v| v >= KERNEL_HALF);
            let as_dec =
                w.chars().all(|c| c.is_ascii_digit()) && w.parse::<u64>().is_ok_and(|v| v >= KERNEL_HALF);
            as_hex || as_dec
        })
        .map(str::to_owned)
        .collect()
}

/// Whether this test can run; panics in CI when it cannot.
fn runnable() -> bool {
    let mut missing = Vec::new();
    if rustix::process::geteuid().as_raw() != 0 {
        missing.push("root (CAP_BPF and CAP_PERFMON to load a tracepoint program)");
    }
    if Command::new("clang").arg("--version").output().is_err() {
        missing.push("clang (scripts/setup installs it)");
    }
    if missing.is_empty() {
        return true;
    }
    let why = missing.join(", ");
    assert!(std::env::var_os("CI").is_none(), "verifier_log cannot run in CI: missing {why}");
    eprintln!("\n!!!!!!!! SKIPPED verifier_log: missing {why}. Run it as root. !!!!!!!!\n");
    false
}

fn compile_fixture(out: &Path) -> Vec<u8> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/rejected.bpf.c");
    let obj = out.join("rejected.bpf.o");
    let status = Command::new("clang")
        .args(["-O2", "-g", "--target=bpf", "-c"])
        .arg(&src)
        .arg("-o")
        .arg(&obj)
        .status()
        .expect("run clang");
    assert!(status.success(), "clang failed on {}", src.display());
    std::fs::read(&obj).unwrap()
}

/// The error and its sources, as `main` logs it, and its `Debug`.
fn renderings(e: Error) -> String {
    let debug = format!("{e:?}");
    format!("{:#}\n{debug}", anyhow::Error::from(e))
}

#[test]
fn a_verifier_rejection_names_the_program_and_reason_without_the_log_or_kernel_addresses() {
    if !runnable() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let bytes = compile_fixture(dir.path());
    let mut ebpf = aya::EbpfLoader::new().load(&bytes).expect("the fixture's object loads (map creation)");
    let prog: &mut aya::programs::TracePoint =
        ebpf.program_mut(PROGRAM).expect("the fixture's program").try_into().unwrap();
    let err = prog.load().expect_err("the verifier must reject the fixture");

    // What aya got back: a real verifier log, with the hazard in it.
    let aya::programs::ProgramError::LoadError { io_error, verifier_log } = &err else {
        panic!("expected a verifier rejection, got {err:?}");
    };
    let log = verifier_log.to_string();
    assert_eq!(io_error.raw_os_error(), Some(13), "EACCES: {io_error}\n{log}");
    assert!(log.contains("invalid mem access"), "{log}");
    let leaked_in_log = kernel_pointers(&log);
    assert!(!leaked_in_log.is_empty(), "a root verifier log prints the map's kernel address:\n{log}");
    // Distinctive log lines (instruction dumps, register states, the verdict).
    let lines: Vec<&str> = log.lines().map(str::trim).filter(|l| l.len() >= 8).collect();
    assert!(lines.len() >= 5, "{log}");

    let shown = renderings(Error::program(PROGRAM, err).with_capability_hint());
    for line in &lines {
        assert!(!shown.contains(line), "the error shows verifier log line `{line}`:\n{shown}");
    }
    for fragment in ["invalid mem access", "processed ", "R0", "R10", "map_value_or_null", "Verifier output"]
    {
        assert!(!shown.contains(fragment), "the error shows verifier text `{fragment}`:\n{shown}");
    }
    let leaked = kernel_pointers(&shown);
    assert!(leaked.is_empty(), "the error shows kernel addresses {leaked:?}:\n{shown}");
    // What it still says: the program, the reason class and the errno.
    assert!(
        shown.contains(&format!(
            "the kernel refused to load BPF program `{PROGRAM}`: the verifier rejected it"
        )),
        "{shown}"
    );
    assert!(shown.contains("os error 13"), "the errno is kept: {shown}");
}
