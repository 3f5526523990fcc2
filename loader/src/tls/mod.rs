// SPDX-License-Identifier: Apache-2.0
//! HTTPS through OpenSSL uprobes: the attacher thread.
//!
//! One dedicated thread, started before the capability drop, keeps only what
//! attaching uprobes at run time needs (see [`ATTACHER_CAPS`]) while every
//! other thread of the loader drops everything. Every `--tls-scan-ms` it
//! scans `/proc` (`discover`), attaches the uprobes of the `http` object to
//! each new `libssl.so*` and OpenSSL-carrying executable (`attach`, files
//! opened with `open`), detaches them from files no process maps any more,
//! and publishes what it sees, including the processes whose TLS it cannot
//! instrument, for the stream and the status RPC ([`Shared`]).
//!
//! The uprobe links are not pinned: a restarted loader finds the same files
//! again on its first scan.

mod attach;
mod discover;
mod elf;
mod internal;
mod maps;
mod open;

use std::{
    path::PathBuf,
    sync::{mpsc, Mutex},
    thread::JoinHandle,
    time::Duration,
};

pub use attach::{load_programs, SharedEbpf, PROGRAMS};
use nettel_proto::v1;
use rustix::thread::CapabilitySet;
use tracing::{info, warn};

use crate::{caps, Error};

/// Capabilities the attacher thread keeps for its lifetime (checked on
/// Linux 6.18):
/// * CAP_SYS_ADMIN: `perf_event_open` of a uprobe event. Linux 5.8 accepted
///   CAP_PERFMON there; the 2025 fix "perf: Require CAP_SYS_ADMIN for
///   uprobes" (in 6.16, backported to stable kernels) made it CAP_SYS_ADMIN
///   again, because a uprobe can corrupt the traced process. CAP_SYS_ADMIN
///   also satisfies every CAP_PERFMON/CAP_BPF check on the way
///   (`perfmon_capable()`, `bpf_capable()`), so those two are not kept.
/// * CAP_SYS_PTRACE: reading `/proc/PID/maps`, `/proc/PID/exe` and
///   `/proc/PID/root` of processes of other users, or with capabilities the
///   loader lacks (`ptrace_may_access(PTRACE_MODE_READ_FSCREDS)`).
pub const ATTACHER_CAPS: CapabilitySet = CapabilitySet::SYS_ADMIN.union(CapabilitySet::SYS_PTRACE);

/// The attacher thread's name (`/proc/PID/task/TID/comm`).
pub const THREAD_NAME: &str = "nt-tls-attach";

/// Why a process's TLS is not instrumented.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Reason {
    Go,
    Rustls,
    Stripped,
    OtherLibrary,
    Unreadable,
    AttachFailed,
}

impl Reason {
    /// The label value (`reason=`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Go => "go",
            Self::Rustls => "rustls",
            Self::Stripped => "stripped",
            Self::OtherLibrary => "other_library",
            Self::Unreadable => "unreadable",
            Self::AttachFailed => "attach_failed",
        }
    }
}

/// Scans a file must be mapped by no process before its uprobes are
/// detached: short-lived clients (curl) map a library for a moment, and
/// re-attaching costs the same as keeping it.
pub const DETACH_AFTER_SCANS: u32 = 10;

/// Most uninstrumented processes listed in the status RPC.
pub const MAX_LISTED: usize = 256;

/// What the attacher last saw, read by the stream and the status RPC.
#[derive(Debug, Default)]
pub struct Shared {
    inner: Mutex<(v1::TlsStatus, Vec<v1::UninstrumentedTls>)>,
}

impl Shared {
    /// The gauges.
    pub fn status(&self) -> v1::TlsStatus {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).0
    }

    /// The uninstrumented processes (at most [`MAX_LISTED`]).
    pub fn uninstrumented(&self) -> Vec<v1::UninstrumentedTls> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).1.clone()
    }

    fn set(&self, status: v1::TlsStatus, list: Vec<v1::UninstrumentedTls>) {
        *self.inner.lock().unwrap_or_else(|e| e.into_inner()) = (status, list);
    }
}

/// Settings of the attacher.
#[derive(Debug, Clone)]
pub struct Config {
    /// Interval between scans of `/proc`.
    pub scan: Duration,
    /// procfs (normally `/proc`).
    pub proc_root: PathBuf,
    /// Whether [`Attacher::start`] refuses to start without [`ATTACHER_CAPS`]
    /// in the permitted set (`Skip`: `run --skip-capability-check`, the
    /// kernel refuses each uprobe attach instead).
    pub capability_check: crate::preflight::CapabilityCheck,
}

/// The running attacher thread; stopping it detaches every uprobe.
#[derive(Debug)]
pub struct Attacher {
    stop: mpsc::Sender<()>,
    thread: Option<JoinHandle<()>>,
}

impl Attacher {
    /// Loads the uprobe programs, then starts the thread, which drops every
    /// capability but [`ATTACHER_CAPS`] before its first scan. Must run
    /// before the main thread drops its capabilities.
    pub fn start(ebpf: SharedEbpf, cfg: Config, shared: std::sync::Arc<Shared>) -> Result<Self, Error> {
        let permitted =
            rustix::thread::capabilities(None).map_err(|e| Error::DropCapabilities(e.into()))?.permitted;
        let missing: Vec<&'static str> =
            [(CapabilitySet::SYS_ADMIN, "CAP_SYS_ADMIN"), (CapabilitySet::SYS_PTRACE, "CAP_SYS_PTRACE")]
                .into_iter()
                .filter(|(c, _)| !permitted.contains(*c))
                .map(|(_, n)| n)
                .collect();
        if !missing.is_empty() && cfg.capability_check == crate::preflight::CapabilityCheck::Enforce {
            return Err(Error::TlsCapabilities { missing });
        }
        load_programs(&mut ebpf.lock().unwrap_or_else(|e| e.into_inner()))?;
        let (stop, stopped) = mpsc::channel();
        let (ready_tx, ready_rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name(THREAD_NAME.into())
            .spawn(move || {
                let dropped = caps::drop_to(ATTACHER_CAPS);
                let ok = dropped.is_ok();
                let _ = ready_tx.send(dropped);
                if ok {
                    run(ebpf, cfg, shared, stopped);
                }
            })
            .map_err(|source| Error::Io {
                what: "cannot start the TLS attacher thread",
                path: "".into(),
                source,
            })?;
        let dropped = ready_rx
            .recv()
            .map_err(|_| Error::Config("the TLS attacher thread died at start".into()))?
            .map_err(Error::DropCapabilities)?;
        info!(kept = ?caps::names(dropped.kept), "TLS attacher started.");
        Ok(Self { stop, thread: Some(thread) })
    }

    /// Stops the thread and detaches every uprobe.
    pub fn stop(mut self) {
        let _ = self.stop.send(());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(ebpf: SharedEbpf, cfg: Config, shared: std::sync::Arc<Shared>, stopped: mpsc::Receiver<()>) {
    let mut scanner = discover::Scanner::new(cfg.proc_root.clone());
    let mut links = attach::Links::default();
    let mut failed: std::collections::BTreeMap<maps::FileId, Reason> = Default::default();
    // Consecutive scans in which an attached file was mapped by no process.
    let mut absent: std::collections::BTreeMap<maps::FileId, u32> = Default::default();
    let mut first = true;
    loop {
        let started = std::time::Instant::now();
        let scan = scanner.scan();
        if first {
            first = false;
            info!(
                elapsed_ms = started.elapsed().as_millis() as u64,
                targets = scan.targets.len(),
                uninstrumented = scan.uninstrumented.len(),
                unreadable_maps = scan.unreadable_maps,
                "First TLS scan of /proc done."
            );
        }
        tracing::debug!(targets = ?scan.targets.iter().map(|(id, t)| (id.ino, &t.pids)).collect::<Vec<_>>(), "TLS scan.");
        let mut list: Vec<(u32, String, Reason)> =
            scan.uninstrumented.iter().map(|u| (u.pid, u.exe.clone(), u.reason)).collect();
        failed.retain(|id, _| scan.targets.contains_key(id));
        let mut processes = 0u32;
        for (id, target) in &scan.targets {
            if !links.contains(*id) {
                match links.attach(&ebpf, &cfg.proc_root, *id, target, scanner.cached(*id)) {
                    Ok(kind) => {
                        scanner.remember(*id, kind);
                        failed.remove(id);
                        // `internal`: on OpenSSL's internal read/write functions,
                        // `exported`: on SSL_read/SSL_write and their _ex variants.
                        let at = match kind {
                            elf::Kind::OpenSsl(elf::Offsets { internal: Some(_), .. }) => "internal",
                            _ => "exported",
                        };
                        info!(source = ?target.source, dev = id.dev, ino = id.ino, functions = at, "TLS uprobes attached.");
                    }
                    Err(f) => {
                        if failed.insert(*id, f.reason).is_none() {
                            warn!(source = ?target.source, reason = f.reason.as_str(), error = %f.error, "Cannot instrument a TLS library; its processes are reported as uninstrumented.");
                        }
                    }
                }
            }
            match failed.get(id) {
                Some(reason) => list.extend(
                    target
                        .pids
                        .iter()
                        .map(|p| (*p, discover::exe_name(&cfg.proc_root.join(p.to_string())), *reason)),
                ),
                None => processes += target.pids.len() as u32,
            }
        }
        // Detach after new files are attached: unregistering a uprobe waits
        // for an RCU grace period per link, and a new server must not wait.
        for id in links.files() {
            if scan.targets.contains_key(&id) {
                absent.remove(&id);
                continue;
            }
            let n = absent.entry(id).or_insert(0);
            *n += 1;
            if *n >= DETACH_AFTER_SCANS {
                absent.remove(&id);
                links.detach(&ebpf, id);
                info!(dev = id.dev, ino = id.ino, "TLS uprobes detached: no process maps the file any more.");
            }
        }
        list.sort();
        let count = |r: Reason| list.iter().filter(|(_, _, x)| *x == r).count() as u32;
        let status = v1::TlsStatus {
            files_instrumented: links.files().len() as u32,
            processes_instrumented: processes,
            uninstrumented_go: count(Reason::Go),
            uninstrumented_rustls: count(Reason::Rustls),
            uninstrumented_stripped: count(Reason::Stripped),
            uninstrumented_other_library: count(Reason::OtherLibrary),
            uninstrumented_unreadable: count(Reason::Unreadable),
            uninstrumented_attach_failed: count(Reason::AttachFailed),
        };
        let listed = list
            .into_iter()
            .take(MAX_LISTED)
            .map(|(pid, exe, r)| v1::UninstrumentedTls { pid, exe, reason: r.as_str().into() })
            .collect();
        shared.set(status, listed);
        match stopped.recv_timeout(cfg.scan) {
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            _ => break,
        }
    }
    links.clear(&ebpf);
}
