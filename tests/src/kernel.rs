// SPDX-License-Identifier: Apache-2.0
//! The kernel's own TCP counters, read inside a network namespace: the
//! independent count the tests compare nettel against.

use crate::netns::{exec, run};

/// A counter from `/proc/net/snmp` (`Tcp: RetransSegs`, ...) or
/// `/proc/net/netstat` (`TcpExt: TCPSynRetrans`, ...) of namespace `ns`.
pub fn counter(ns: &str, group: &str, name: &str) -> u64 {
    let file = if group == "TcpExt" || group == "IpExt" { "/proc/net/netstat" } else { "/proc/net/snmp" };
    let out = run(exec(ns, "cat").arg(file));
    parse_counter(&String::from_utf8_lossy(&out.stdout), group, name)
        .unwrap_or_else(|| panic!("{group}:{name} not in {file} of {ns}"))
}

/// Parses the header/value line pairs of `/proc/net/snmp`-style text.
pub fn parse_counter(text: &str, group: &str, name: &str) -> Option<u64> {
    let prefix = format!("{group}:");
    let mut lines = text.lines().filter(|l| l.starts_with(&prefix));
    let header = lines.next()?;
    let values = lines.next()?;
    let idx = header.split_whitespace().position(|h| h == name)?;
    values.split_whitespace().nth(idx)?.parse().ok()
}

/// `RetransSegs` of `ns` once it has not moved for a second: a baseline that
/// no in-flight retransmit of earlier traffic can land behind.
pub fn quiet_retrans_segs(ns: &str) -> u64 {
    let mut last = retrans_segs(ns);
    loop {
        std::thread::sleep(std::time::Duration::from_secs(1));
        let now = retrans_segs(ns);
        if now == last {
            return now;
        }
        last = now;
    }
}

/// `RetransSegs` of `ns`.
pub fn retrans_segs(ns: &str) -> u64 {
    counter(ns, "Tcp", "RetransSegs")
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_snmp() {
        let t = "Ip: Forwarding X\nIp: 1 2\nTcp: RtoAlgorithm RetransSegs InErrs\nTcp: 1 42 0\n";
        assert_eq!(super::parse_counter(t, "Tcp", "RetransSegs"), Some(42));
        assert_eq!(super::parse_counter(t, "Tcp", "Nope"), None);
    }
}
