// SPDX-License-Identifier: Apache-2.0
//! Two network namespaces joined by a veth pair: two "pods" with their own
//! IPv4 and IPv6 addresses and their own kernel TCP counters.

use std::process::{Command, Output};

/// A pod pair `a` <-> `b`. Removed on drop.
#[derive(Debug)]
pub struct PodPair {
    pub a: String,
    pub b: String,
    pub a_v4: String,
    pub b_v4: String,
    pub a_v6: String,
    pub b_v6: String,
}

/// Runs `ip` (or any command) and panics with its stderr on failure.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    out
}

/// `ip netns exec NS PROGRAM ARGS...`.
pub fn exec(ns: &str, program: &str) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns, program]);
    c
}

impl PodPair {
    /// Creates namespaces `nt<id>a` and `nt<id>b` with 10.77.<id>.1/.2 and
    /// fd77:<id>::1/::2. `id` must be unique among concurrently running tests.
    pub fn new(id: u8) -> Self {
        let (a, b) = (format!("nt{id}a"), format!("nt{id}b"));
        // Leftovers of an aborted earlier run.
        for ns in [&a, &b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
        let pair = Self {
            a: a.clone(),
            b: b.clone(),
            a_v4: format!("10.77.{id}.1"),
            b_v4: format!("10.77.{id}.2"),
            a_v6: format!("fd77:{id}::1"),
            b_v6: format!("fd77:{id}::2"),
        };
        let (va, vb) = (format!("nt{id}va"), format!("nt{id}vb"));
        run(Command::new("ip").args(["netns", "add", &a]));
        run(Command::new("ip").args(["netns", "add", &b]));
        run(Command::new("ip").args(["link", "add", &va, "type", "veth", "peer", "name", &vb]));
        run(Command::new("ip").args(["link", "set", &va, "netns", &a]));
        run(Command::new("ip").args(["link", "set", &vb, "netns", &b]));
        for (ns, dev, v4, v6) in [(&a, &va, &pair.a_v4, &pair.a_v6), (&b, &vb, &pair.b_v4, &pair.b_v6)] {
            run(Command::new("ip").args(["-n", ns, "addr", "add", &format!("{v4}/24"), "dev", dev]));
            run(Command::new("ip").args(["-n", ns, "addr", "add", &format!("{v6}/64"), "dev", dev, "nodad"]));
            run(Command::new("ip").args(["-n", ns, "link", "set", dev, "up"]));
            run(Command::new("ip").args(["-n", ns, "link", "set", "lo", "up"]));
        }
        pair
    }

    /// Drops a random `share` of TCP packets entering `ns` that match `rule`
    /// (iptables match arguments, e.g. `["--dport", "8080"]`), for IPv4 and IPv6.
    pub fn drop_inbound(&self, ns: &str, share: f64, rule: &[&str]) {
        for tool in ["iptables", "ip6tables"] {
            let mut c = exec(ns, tool);
            c.args(["-w", "-A", "INPUT", "-p", "tcp"]).args(rule).args([
                "-m",
                "statistic",
                "--mode",
                "random",
                "--probability",
                &share.to_string(),
                "-j",
                "DROP",
            ]);
            run(&mut c);
        }
    }

    /// Removes every drop rule in `ns`.
    pub fn clear_drops(&self, ns: &str) {
        for tool in ["iptables", "ip6tables"] {
            run(exec(ns, tool).args(["-w", "-F", "INPUT"]));
        }
    }
}

impl Drop for PodPair {
    fn drop(&mut self) {
        for ns in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}
