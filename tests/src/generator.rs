// SPDX-License-Identifier: Apache-2.0
//! The benchmark probe's event source (`nettel-bench gen`) as a child
//! process: one synthetic event per getppid() it makes (or one
//! retransmit-shaped event per getpgrp()), and it reports exactly how many it
//! made.

use std::{
    io::{BufRead, BufReader, Write},
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
};

use crate::process::bin;

/// A running generator; killed on drop.
#[derive(Debug)]
pub struct Generator {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Generator {
    /// Starts a generator and waits until it is ready.
    pub fn start() -> Self {
        let mut child = Command::new(bin("nettel-bench"))
            .arg("gen")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start nettel-bench gen");
        let stdin = child.stdin.take().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ready");
        Self { child, stdin, stdout }
    }

    /// The tgid to pass as `--bench-tgid`.
    pub fn tgid(&self) -> String {
        self.child.id().to_string()
    }

    /// Makes `rate` events a second (0: as fast as possible) for `seconds`;
    /// returns how many it made.
    pub fn run(&mut self, rate: u64, seconds: f64) -> u64 {
        self.run_kind(rate, seconds, "synthetic")
    }

    /// As [`Generator::run`], with retransmit-shaped events (from
    /// 10.0.0.1 to 10.200.0.0-255, destination ports 8000-8007:
    /// `bpf/probes/bench.bpf.c`).
    pub fn run_retransmits(&mut self, rate: u64, seconds: f64) -> u64 {
        self.run_kind(rate, seconds, "retransmit")
    }

    fn run_kind(&mut self, rate: u64, seconds: f64, kind: &str) -> u64 {
        writeln!(self.stdin, "{rate} {seconds} {kind}").unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        line.split_whitespace().next().and_then(|n| n.parse().ok()).expect("generator answer")
    }
}

impl Drop for Generator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
