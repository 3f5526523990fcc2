// SPDX-License-Identifier: Apache-2.0
//! Capabilities: which ones each step needs, dropping all of them once the
//! probes are attached and the socket is bound, and naming the missing one
//! when the kernel answers EPERM.
//!
//! What the loader does after attach needs no capability on Linux >= 6.5:
//! draining the ring buffer reads a mapping it already holds, accepting
//! connections and SO_PEERCRED need none, and `BPF_MAP_LOOKUP_ELEM` on a map
//! fd it holds is not gated since the unprivileged-BPF checks moved into
//! `map_create()`/`bpf_prog_load()` (kernel commit "bpf: move unprivileged
//! checks into map_create() and bpf_prog_load()", 6.5). Before 6.5, `__sys_bpf`
//! refuses *every* command without CAP_BPF while
//! `kernel.unprivileged_bpf_disabled` is set, so there the loader keeps CAP_BPF
//! (only) to read its statistics map.
//!
//! Capability sets are per thread: [`drop_after_attach`] must run before any
//! other thread exists (`main` calls it before starting the tokio runtime).

use std::io;

use rustix::thread::{CapabilitySet, CapabilitySets};

use crate::sys;

/// First kernel on which map lookups through a held fd need no capability.
pub const UNGATED_MAP_OPS: (u32, u32, u32) = (6, 5, 0);

/// What stays effective after attach, for a kernel version and the value of
/// `kernel.unprivileged_bpf_disabled` (`None` when unreadable).
pub fn needed_after_attach(kernel: (u32, u32, u32), unprivileged_bpf_disabled: Option<u32>) -> CapabilitySet {
    if kernel >= UNGATED_MAP_OPS || unprivileged_bpf_disabled == Some(0) {
        CapabilitySet::empty()
    } else {
        CapabilitySet::BPF
    }
}

/// What [`drop_after_attach`] left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dropped {
    /// Effective (= permitted) set kept.
    pub kept: CapabilitySet,
    /// Effective set before the drop.
    pub before: CapabilitySet,
}

/// Drops every capability not in [`needed_after_attach`] from this thread's
/// effective, permitted, inheritable and ambient sets (and from the bounding
/// set, when CAP_SETPCAP allows), and sets no_new_privs so that no later
/// `execve` of a uid-0 process could regain them. Call it before spawning threads.
pub fn drop_after_attach() -> io::Result<Dropped> {
    let kernel = sys::parse_kernel_version(&sys::kernel_release()).unwrap_or((0, 0, 0));
    let sysctl = std::fs::read_to_string("/proc/sys/kernel/unprivileged_bpf_disabled")
        .ok()
        .and_then(|s| s.trim().parse().ok());
    drop_to(needed_after_attach(kernel, sysctl))
}

/// Like [`drop_after_attach`], keeping `keep` (those of it this thread holds):
/// the calling thread alone (the TLS attacher thread uses it for its own set).
pub fn drop_to(keep: CapabilitySet) -> io::Result<Dropped> {
    rustix::thread::set_no_new_privs(true)?;
    let current = rustix::thread::capabilities(None)?;
    if current.effective.contains(CapabilitySet::SETPCAP) {
        for bit in 0..=last_cap() {
            let cap = CapabilitySet::from_bits_retain(1 << bit);
            if !keep.contains(cap) && rustix::thread::capability_is_in_bounding_set(cap).unwrap_or(false) {
                rustix::thread::remove_capability_from_bounding_set(cap)?;
            }
        }
    }
    // EINVAL on kernels without ambient capabilities (< 4.3): nothing to clear.
    match rustix::thread::clear_ambient_capability_set() {
        Ok(()) | Err(rustix::io::Errno::INVAL) => {}
        Err(e) => return Err(e.into()),
    }
    rustix::thread::set_capabilities(
        None,
        CapabilitySets {
            effective: current.effective & keep,
            permitted: current.permitted & keep,
            inheritable: CapabilitySet::empty(),
        },
    )?;
    let after = rustix::thread::capabilities(None)?;
    if !keep.contains(after.effective) || !keep.contains(after.permitted) {
        return Err(io::Error::other(format!(
            "capabilities still held after the drop: {:?}",
            after.permitted
        )));
    }
    Ok(Dropped { kept: after.effective, before: current.effective })
}

/// The highest capability number this kernel knows.
fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
        .min(63)
}

/// `capsh` names (without `CAP_`) of every capability in `set`.
pub fn names(set: CapabilitySet) -> Vec<&'static str> {
    NAMES.iter().filter(|(c, _)| set.contains(*c)).map(|(_, n)| *n).collect()
}

const NAMES: &[(CapabilitySet, &str)] = &[
    (CapabilitySet::CHOWN, "CHOWN"),
    (CapabilitySet::DAC_OVERRIDE, "DAC_OVERRIDE"),
    (CapabilitySet::SETPCAP, "SETPCAP"),
    (CapabilitySet::SYS_ADMIN, "SYS_ADMIN"),
    (CapabilitySet::SYS_PTRACE, "SYS_PTRACE"),
    (CapabilitySet::SYS_RESOURCE, "SYS_RESOURCE"),
    (CapabilitySet::NET_ADMIN, "NET_ADMIN"),
    (CapabilitySet::PERFMON, "PERFMON"),
    (CapabilitySet::BPF, "BPF"),
];

/// The operation that got EPERM, for [`missing_for`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// bpf(2): map creation, BTF load, pinning.
    Bpf,
    /// BPF_PROG_LOAD of a tracing program (tracepoint, tp_btf).
    TracingProgLoad,
    /// perf_event_open(2) / raw tracepoint open to attach.
    Attach,
    /// perf_event_open(2) of a uprobe (the TLS attacher thread).
    UprobeAttach,
    /// mount(2) of bpffs or tracefs.
    Mount,
}

/// The capabilities `op` needs that `effective` lacks, as `CAP_*` names; an
/// empty result means the capabilities were there and something else (an LSM,
/// lockdown or a seccomp profile) refused.
pub fn missing_for(op: Operation, effective: u64) -> Vec<&'static str> {
    let has = |c: sys::Cap| sys::has_cap(effective, c);
    if has(sys::Cap::SysAdmin) {
        return Vec::new();
    }
    let needed: &[sys::Cap] = match op {
        Operation::Bpf => &[sys::Cap::Bpf],
        Operation::TracingProgLoad | Operation::Attach => &[sys::Cap::Bpf, sys::Cap::Perfmon],
        // "perf: Require CAP_SYS_ADMIN for uprobes" (Linux 6.16 and stable
        // backports; CAP_PERFMON before). See crate::tls::ATTACHER_CAPS.
        Operation::Mount | Operation::UprobeAttach => &[sys::Cap::SysAdmin],
    };
    needed.iter().filter(|c| !has(**c)).map(|c| cap_name(*c)).collect()
}

fn cap_name(c: sys::Cap) -> &'static str {
    match c {
        sys::Cap::SysAdmin => "CAP_SYS_ADMIN",
        sys::Cap::Perfmon => "CAP_PERFMON",
        sys::Cap::Bpf => "CAP_BPF",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_nothing_on_recent_kernels_and_cap_bpf_before_6_5() {
        assert_eq!(needed_after_attach((6, 18, 0), Some(2)), CapabilitySet::empty());
        assert_eq!(needed_after_attach((6, 5, 0), Some(1)), CapabilitySet::empty());
        assert_eq!(needed_after_attach((6, 1, 0), Some(2)), CapabilitySet::BPF);
        assert_eq!(needed_after_attach((5, 8, 0), None), CapabilitySet::BPF);
        assert_eq!(needed_after_attach((5, 10, 0), Some(0)), CapabilitySet::empty());
    }

    #[test]
    fn names_the_missing_capability() {
        let bpf = 1u64 << 39;
        let perfmon = 1u64 << 38;
        let admin = 1u64 << 21;
        assert_eq!(missing_for(Operation::TracingProgLoad, bpf), ["CAP_PERFMON"]);
        assert_eq!(missing_for(Operation::TracingProgLoad, perfmon), ["CAP_BPF"]);
        assert_eq!(missing_for(Operation::Bpf, perfmon), ["CAP_BPF"]);
        assert_eq!(missing_for(Operation::Attach, 0), ["CAP_BPF", "CAP_PERFMON"]);
        assert_eq!(missing_for(Operation::Mount, bpf | perfmon), ["CAP_SYS_ADMIN"]);
        assert_eq!(missing_for(Operation::UprobeAttach, bpf | perfmon), ["CAP_SYS_ADMIN"]);
        assert!(missing_for(Operation::Attach, bpf | perfmon).is_empty());
        assert!(missing_for(Operation::Mount, admin).is_empty());
    }

    #[test]
    fn names_capability_sets() {
        assert_eq!(names(CapabilitySet::BPF | CapabilitySet::PERFMON), ["PERFMON", "BPF"]);
    }
}
