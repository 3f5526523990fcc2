// SPDX-License-Identifier: Apache-2.0
//! The kernel's own TCP counters, read inside a network namespace: the
//! independent count the tests compare nettel against.

use std::collections::BTreeMap;

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

/// Every `Tcp:` and `TcpExt:` counter of `ns`, by name (`Tcp:RetransSegs`).
pub fn tcp_counters(ns: &str) -> BTreeMap<String, u64> {
    let mut all = BTreeMap::new();
    for file in ["/proc/net/snmp", "/proc/net/netstat"] {
        let out = run(exec(ns, "cat").arg(file));
        all.extend(parse_all(&String::from_utf8_lossy(&out.stdout), &["Tcp", "TcpExt"]));
    }
    all
}

/// The counters of `groups` in `/proc/net/snmp`-style text, as `group:name`.
pub fn parse_all(text: &str, groups: &[&str]) -> BTreeMap<String, u64> {
    let mut all = BTreeMap::new();
    let mut lines = text.lines();
    while let (Some(header), Some(values)) = (lines.next(), lines.next()) {
        let (mut header, mut values) = (header.split_whitespace(), values.split_whitespace());
        let Some(group) = header.next().and_then(|g| g.strip_suffix(':')) else { continue };
        values.next();
        if !groups.contains(&group) {
            continue;
        }
        for (name, value) in header.zip(values) {
            if let Ok(v) = value.parse() {
                all.insert(format!("{group}:{name}"), v);
            }
        }
    }
    all
}

/// The counters that moved from `before` to `after`, one `name +delta` a line:
/// what a failed count comparison prints, so that the kernel path behind a
/// difference can be told (tail-loss probes, SYN retransmits, failures...).
pub fn moved(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>) -> String {
    after
        .iter()
        .filter_map(|(name, &v)| {
            let was = before.get(name).copied().unwrap_or(0);
            (v != was).then(|| format!("{name} +{}\n", v.wrapping_sub(was)))
        })
        .collect()
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

    #[test]
    fn parses_groups_and_reports_what_moved() {
        let t = "Ip: Forwarding X\nIp: 1 2\nTcp: RtoAlgorithm RetransSegs\nTcp: 1 42\n";
        let before = super::parse_all(t, &["Tcp"]);
        assert_eq!(before.len(), 2);
        assert_eq!(before["Tcp:RetransSegs"], 42);
        let after = super::parse_all(&t.replace(" 42", " 45"), &["Tcp"]);
        assert_eq!(super::moved(&before, &after), "Tcp:RetransSegs +3\n");
    }
}
