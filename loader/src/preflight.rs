// SPDX-License-Identifier: Apache-2.0
//! `nettel-loader check`: the environment checks every start runs first. Each
//! check yields a line of the report; a failure names its fix.

use std::{fmt, path::Path};

use crate::sys::{self, Cap};

/// Oldest kernel the probes support (BPF ring buffer, BTF for CO-RE).
pub const KERNEL_FLOOR: (u32, u32, u32) = (5, 8, 0);
/// Where the kernel exposes its own BTF.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";
/// Where tracefs is expected (aya also looks at /sys/kernel/debug/tracing).
pub const TRACEFS: &str = "/sys/kernel/tracing";

/// Outcome of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Pass(String),
    /// Not satisfied now, but `run` will fix it itself (e.g. by mounting).
    Fixable {
        problem: String,
        fix: String,
    },
    Fail {
        problem: String,
        fix: String,
    },
}

/// One line of the report.
#[derive(Debug, Clone)]
pub struct Check {
    pub name: &'static str,
    pub outcome: Outcome,
}

/// The full report.
#[derive(Debug, Clone)]
pub struct Report {
    pub checks: Vec<Check>,
}

impl Report {
    /// Whether every check passed (fixable ones count as failures for `check`).
    pub fn all_pass(&self) -> bool {
        self.checks.iter().all(|c| matches!(c.outcome, Outcome::Pass(_)))
    }

    /// Whether `run` can proceed (after fixing the fixable ones).
    pub fn runnable(&self) -> bool {
        !self.checks.iter().any(|c| matches!(c.outcome, Outcome::Fail { .. }))
    }

    /// Failures, one line each, for an error message.
    pub fn failures(&self) -> String {
        self.checks
            .iter()
            .filter_map(|c| match &c.outcome {
                Outcome::Fail { problem, fix } => Some(format!("{}: {problem} (fix: {fix})", c.name)),
                _ => None,
            })
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// Whether a named check needs its fix applied.
    pub fn needs_fix(&self, name: &str) -> bool {
        self.checks.iter().any(|c| c.name == name && matches!(c.outcome, Outcome::Fixable { .. }))
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in &self.checks {
            match &c.outcome {
                Outcome::Pass(detail) => writeln!(f, "PASS  {:<12} {detail}", c.name)?,
                Outcome::Fixable { problem, fix } => {
                    writeln!(f, "FIX   {:<12} {problem}\n      {:<12} fix: {fix}", c.name, "")?
                }
                Outcome::Fail { problem, fix } => {
                    writeln!(f, "FAIL  {:<12} {problem}\n      {:<12} fix: {fix}", c.name, "")?
                }
            }
        }
        Ok(())
    }
}

/// Whether [`run`] checks the capabilities.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CapabilityCheck {
    Enforce,
    /// `run --skip-capability-check`: the report has no capabilities line,
    /// and the kernel is the judge (a refusal names the missing capability,
    /// see [`crate::Error::with_capability_hint`]).
    Skip,
}

/// Runs every check. `pin_root` is the bpffs mount expected to hold the pin dir.
pub fn run(pin_root: &Path, capabilities: CapabilityCheck) -> Report {
    let mut checks =
        vec![Check { name: "btf", outcome: check_btf() }, Check { name: "kernel", outcome: check_kernel() }];
    if capabilities == CapabilityCheck::Enforce {
        checks.push(Check { name: "capabilities", outcome: check_caps() });
    }
    checks.extend([
        Check { name: "bpffs", outcome: check_mount(pin_root, sys::BPF_FS_MAGIC, "bpf") },
        Check { name: "tracefs", outcome: check_mount(Path::new(TRACEFS), sys::TRACEFS_MAGIC, "tracefs") },
    ]);
    Report { checks }
}

fn check_btf() -> Outcome {
    match std::fs::metadata(VMLINUX_BTF) {
        Ok(m) if m.len() > 0 => Outcome::Pass(format!("{VMLINUX_BTF} ({} bytes)", m.len())),
        Ok(_) => fail(format!("{VMLINUX_BTF} is empty"), "boot a kernel built with CONFIG_DEBUG_INFO_BTF=y"),
        Err(e) => fail(
            format!("{VMLINUX_BTF} not readable: {e}"),
            "boot a kernel built with CONFIG_DEBUG_INFO_BTF=y (all major distributions since 2021 are)",
        ),
    }
}

fn check_kernel() -> Outcome {
    let release = sys::kernel_release();
    let (a, b, c) = KERNEL_FLOOR;
    match sys::parse_kernel_version(&release) {
        Some(v) if v >= KERNEL_FLOOR => Outcome::Pass(format!("{release} (floor {a}.{b}.{c})")),
        Some(_) => fail(
            format!("kernel {release} is older than {a}.{b}.{c}"),
            "upgrade the node kernel to 5.8 or newer",
        ),
        None => fail(
            format!("cannot parse kernel release `{release}`"),
            "report this kernel release string as a bug",
        ),
    }
}

fn check_caps() -> Outcome {
    let caps = match sys::effective_caps() {
        Ok(c) => c,
        Err(e) => return fail(format!("cannot read capabilities: {e}"), "run on Linux with /proc mounted"),
    };
    let admin = sys::has_cap(caps, Cap::SysAdmin);
    let missing: Vec<&str> = [Cap::Bpf, Cap::Perfmon]
        .into_iter()
        .filter(|&c| !admin && !sys::has_cap(caps, c))
        .map(Cap::name)
        .collect();
    if missing.is_empty() {
        let how = if sys::has_cap(caps, Cap::Bpf) && sys::has_cap(caps, Cap::Perfmon) {
            "CAP_BPF and CAP_PERFMON"
        } else {
            "CAP_SYS_ADMIN"
        };
        Outcome::Pass(format!("{how} effective"))
    } else {
        fail(
            format!(
                "missing capabilities: {}",
                missing.iter().map(|m| format!("CAP_{m}")).collect::<Vec<_>>().join(", ")
            ),
            "run as root, or grant `capabilities.add: [BPF, PERFMON]` (see deploy/)",
        )
    }
}

fn check_mount(path: &Path, magic: i64, fstype: &'static str) -> Outcome {
    match sys::fs_magic(path) {
        Ok(m) if m == magic => Outcome::Pass(format!("{fstype} mounted at {}", path.display())),
        _ => Outcome::Fixable {
            problem: format!("{fstype} is not mounted at {}", path.display()),
            fix: format!(
                "`mount -t {fstype} {fstype} {}` (run does this itself when it has CAP_SYS_ADMIN)",
                path.display()
            ),
        },
    }
}

fn fail(problem: String, fix: &str) -> Outcome {
    Outcome::Fail { problem, fix: fix.to_owned() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_skipped_capability_check_leaves_no_capabilities_line() {
        let names = |c| run(Path::new("/"), c).checks.iter().map(|c| c.name).collect::<Vec<_>>();
        assert_eq!(names(CapabilityCheck::Enforce), ["btf", "kernel", "capabilities", "bpffs", "tracefs"]);
        assert_eq!(names(CapabilityCheck::Skip), ["btf", "kernel", "bpffs", "tracefs"]);
    }
}
