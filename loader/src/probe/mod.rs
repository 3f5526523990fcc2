// SPDX-License-Identifier: Apache-2.0
//! Loading and attaching the probes. Every program's link and every shared map
//! is pinned (see [`link`] and [`pin`]): the probes stay attached when the
//! loader exits, and the next loader adopts them. `nettel-loader cleanup`
//! detaches them.

mod bench;
mod http;
pub mod link;
pub mod runs;
mod tcp_retransmit;

use std::{
    os::fd::{AsFd, OwnedFd},
    path::{Path, PathBuf},
    sync::Arc,
};

use aya::{
    maps::{Array, MapData, PerCpuArray},
    programs::{links::FdLink, BtfTracePoint},
    Btf, Ebpf,
};
use nettel_bpf::{abi, names};

use tracing::{info, warn};

use crate::{config::HttpHook, pin, Error};

/// A tracepoint program of a probe object and where it attaches.
#[derive(Debug, Clone, Copy)]
pub struct Tracepoint {
    pub program: &'static str,
    pub category: &'static str,
    pub name: &'static str,
    /// Label for logs and the status RPC, e.g. `tracepoint/syscalls/sys_enter_close`.
    pub attach_point: &'static str,
}

impl Tracepoint {
    /// Loads the program into the kernel, then adopts its pinned link or
    /// attaches and pins it (see [`link::ensure`]).
    pub fn ensure(&self, ebpf: &mut Ebpf, links: &Path) -> Result<Attached, Error> {
        let Self { program, category, name, attach_point } = *self;
        let prog: &mut aya::programs::TracePoint = ebpf
            .program_mut(program)
            .ok_or(Error::ProgramMissing { program })?
            .try_into()
            .map_err(|e| Error::program(program, e))?;
        prog.load().map_err(|e| Error::program(program, e))?;
        let tag = prog.info().map_err(|e| Error::program(program, e))?.tag();
        let origin = link::ensure(links, program, tag, || {
            let attach_err = |source| Error::Attach { program, attach_point, source };
            let id = prog.attach(category, name).map_err(attach_err)?;
            let link = prog.take_link(id).map_err(attach_err)?;
            // Tracepoint links are BPF links (bpf_link_create) on Linux >= 5.15;
            // older kernels give a perf-event link that cannot be pinned.
            FdLink::try_from(link).map_err(|e| Error::Unpinnable { program, reason: e.to_string() })
        })?;
        let fd = running_fd(ebpf, links, program, origin);
        Ok(Attached { name: program, attach_point, origin, fd })
    }
}

/// A BTF tracepoint (`tp_btf`) program of a probe object and where it attaches.
#[derive(Debug, Clone, Copy)]
pub struct BtfTracepoint {
    pub program: &'static str,
    /// The kernel tracepoint (`btf_trace_<name>` in the kernel's BTF).
    pub tracepoint: &'static str,
    /// Label for logs and the status RPC, e.g. `tp_btf/tcp_retransmit_skb`.
    pub attach_point: &'static str,
}

impl BtfTracepoint {
    /// Loads the program against the kernel's `btf`, then adopts its pinned
    /// link or attaches and pins it (see [`link::ensure`]).
    pub fn ensure(&self, ebpf: &mut Ebpf, btf: &Btf, links: &Path) -> Result<Attached, Error> {
        let Self { program, tracepoint, attach_point } = *self;
        let prog: &mut BtfTracePoint = ebpf
            .program_mut(program)
            .ok_or(Error::ProgramMissing { program })?
            .try_into()
            .map_err(|e| Error::program(program, e))?;
        prog.load(tracepoint, btf).map_err(|e| Error::program(program, e))?;
        let tag = prog.info().map_err(|e| Error::program(program, e))?.tag();
        let origin = link::ensure(links, program, tag, || {
            let attach_err = |source| Error::Attach { program, attach_point, source };
            let id = prog.attach().map_err(attach_err)?;
            Ok(FdLink::from(prog.take_link(id).map_err(attach_err)?))
        })?;
        let fd = running_fd(ebpf, links, program, origin);
        Ok(Attached { name: program, attach_point, origin, fd })
    }
}

/// One running program, as reported by the status RPC.
#[derive(Debug, Clone)]
pub struct Attached {
    pub name: &'static str,
    pub attach_point: &'static str,
    pub origin: link::Origin,
    /// The running program's descriptor, for its statistics ([`runs`]);
    /// `None` when it could not be had (logged).
    pub fd: Option<Arc<OwnedFd>>,
}

/// The descriptor of the program running for `program` after `origin`
/// ([`runs`]): an adopted one opened from its pin ([`link::prog_pin_path`]);
/// otherwise the one just loaded, which is pinned there for a later loader.
/// `None` (logged) when it cannot be had: the program runs all the same,
/// only its skipped runs go unreported.
fn running_fd(
    ebpf: &mut Ebpf,
    links: &Path,
    program: &'static str,
    origin: link::Origin,
) -> Option<Arc<OwnedFd>> {
    let path = link::prog_pin_path(links, program);
    let fd = if origin == link::Origin::Adopted {
        crate::sys::bpf_obj_get(&path).map_err(|e| e.to_string())
    } else {
        let prog = ebpf.program_mut(program)?;
        if let Err(e) = prog.pin(&path) {
            warn!(program, error = %e, source = ?std::error::Error::source(&e),
                "Cannot pin the program next to its link; a restarted loader will not report its skipped runs.");
        }
        own_fd(prog)
    };
    fd.inspect_err(|e| warn!(program, path = %path.display(), error = %e, "Cannot open the running program; its skipped runs will not be reported."))
        .ok()
        .map(Arc::new)
}

/// A descriptor of its own for the loaded program `prog`.
fn own_fd(prog: &aya::programs::Program) -> Result<OwnedFd, String> {
    let fd = prog.fd().map_err(|e| e.to_string())?;
    fd.as_fd().try_clone_to_owned().map_err(|e| e.to_string())
}

/// The running probes' shared maps. The programs themselves are held by
/// their pinned links, not by this process.
pub struct Probes {
    /// The http object (unless `--http-hook off`); shared with the TLS
    /// attacher thread, which attaches its uprobes at run time (`crate::tls`).
    pub http: Option<crate::tls::SharedEbpf>,
    /// The http object's request totals (unless `--http-hook off`).
    pub http_table: Option<crate::source::http_table::HttpTable>,
    pub stats: PerCpuArray<MapData, u64>,
    pub cursor: Array<MapData, abi::nt_cursor>,
    pub attached: Vec<Attached>,
    pub pinned: Vec<(&'static str, PathBuf)>,
    /// The running programs' skipped runs.
    pub runs: runs::ProgramRuns,
    /// The ring buffer's size in bytes (set, adopted from its pin, or the default).
    pub ring_bytes: u32,
}

impl std::fmt::Debug for Probes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Probes").field("attached", &self.attached).field("pinned", &self.pinned).finish()
    }
}

/// The objects the loader may load, by name.
const OBJECTS: [(&str, &[u8]); 3] = [
    ("tcp_retransmit", nettel_bpf::TCP_RETRANSMIT_OBJ),
    ("http", nettel_bpf::HTTP_OBJ),
    ("bench", nettel_bpf::BENCH_OBJ),
];

/// Loads every probe, then adopts or attaches each program (see [`link`]).
/// Returns the probes and the ring buffer (which the drain loop owns).
///
/// With `bench_tgid`, also runs the benchmark probe for that process; it
/// shares the pinned ring buffer and statistics map. `tls` tells the HTTP
/// probe whether the OpenSSL uprobes may run (without them its socket hooks
/// skip the TLS bookkeeping).
pub fn load(
    pin_dir: &Path,
    sizes: pin::MapSizes,
    bench_tgid: Option<u32>,
    http_hook: HttpHook,
    tls: bool,
) -> Result<(Probes, crate::sys::RingReader), Error> {
    if nettel_bpf::TCP_RETRANSMIT_OBJ.is_empty() {
        return Err(Error::StubObject);
    }
    pin::prepare_dir(pin_dir)?;
    let sizes = sizes.resolve(pin_dir);
    let links = link::prepare_dir(pin_dir)?;
    let objects = pin::object_pins(&OBJECTS, sizes)?;
    // Durable maps that grew are moved aside first (their pins then missing),
    // with what an interrupted upgrade left; every object declares them alike.
    let mut carried = Vec::new();
    for name in pin::GROWABLE {
        let spec = objects.iter().flat_map(|o| &o.maps).find(|m| m.name == name);
        if let Some(c) = spec.map(|spec| pin::carry(pin_dir, spec)).transpose()?.flatten() {
            carried.push(c);
        }
    }
    // Before anything is loaded: the links of an object whose maps must be
    // (re)created go first, so every pinned link uses the pinned maps.
    // Grown durable maps are read only after every link of the old programs
    // is gone (an object sharing the map finds it missing and purges too).
    for obj in &objects {
        let fresh = pin::verify_existing(pin_dir, &obj.maps)?;
        if !fresh.is_empty() {
            let removed = link::purge(&links, &obj.programs)?;
            if !removed.is_empty() {
                warn!(object = obj.object, maps = ?fresh, links = ?removed,
                    "Pinned maps are missing or replaced; detached the links that used the old ones.");
            }
        }
    }

    let http_hook = http::resolve(http_hook, Path::new(crate::preflight::TRACEFS));
    // Every object through one aya loader: it parses the kernel's BTF once
    // (CO-RE), and that copy is gone before the one the tp_btf programs
    // load against is parsed. Two copies at once cost the loader ~17 MiB of
    // peak memory.
    let (mut tcp, http_obj, bench_obj) = {
        let mut loader = aya::EbpfLoader::new();
        loader.default_map_pin_directory(pin_dir);
        for (map, n) in sizes.overrides() {
            loader.map_max_entries(map, n);
        }
        let mut load =
            |object: &'static str, bytes: &[u8]| loader.load(bytes).map_err(|e| Error::object(object, e));
        let tcp = load("tcp_retransmit", nettel_bpf::TCP_RETRANSMIT_OBJ)?;
        let http = (http_hook != HttpHook::Off).then(|| load("http", nettel_bpf::HTTP_OBJ)).transpose()?;
        let bench = bench_tgid.map(|_| load("bench", nettel_bpf::BENCH_OBJ)).transpose()?;
        (tcp, http, bench)
    };
    // Before any program is attached: the shared maps were created by the
    // first object, and nothing writes them yet.
    for c in carried {
        let name = c.name;
        let map = tcp.map_mut(name).ok_or(Error::MapMissing { map: name })?;
        let entries = c.copy_into(map)?;
        info!(map = name, entries, "Carried the old map's values into the new one.");
    }
    let btf = Btf::from_sys_fs().map_err(|e| Error::Btf(e.to_string()))?;
    let mut attached = tcp_retransmit::PROGRAMS
        .iter()
        .map(|tp| tp.ensure(&mut tcp, &btf, &links))
        .collect::<Result<Vec<_>, _>>()?;
    let mut http_table = None;
    let http = match http_obj {
        None => None,
        Some(mut obj) => {
            // Before any program runs, adopted ones included (the map is pinned and shared).
            let mut cfg: Array<_, u32> = Array::try_from(take_map(&mut obj, names::HTTP_CFG_MAP)?)
                .map_err(|source| Error::Map { map: names::HTTP_CFG_MAP, source })?;
            let flags = if tls { nettel_bpf::abi::NT_HTTP_CFG_TLS } else { 0 };
            cfg.set(0, flags, 0).map_err(|source| Error::Map { map: names::HTTP_CFG_MAP, source })?;
            attached.extend(http::ensure(&mut obj, &btf, http_hook, &links)?);
            let mut slots = take_map(&mut obj, names::HTTP_SLOTS_MAP)?;
            // aya's checks of the type and value size, with its error.
            Array::<_, abi::nt_http_slot>::try_from(&mut slots)
                .map_err(|source| Error::Map { map: names::HTTP_SLOTS_MAP, source })?;
            let aya::maps::Map::Array(slots) = slots else { unreachable!("an array, checked above") };
            http_table =
                Some(crate::source::http_table::HttpTable::new(slots).map_err(|source| Error::Io {
                    what: "failed to map the HTTP totals",
                    path: pin_dir.join(names::HTTP_SLOTS_MAP),
                    source,
                })?);
            Some(std::sync::Arc::new(std::sync::Mutex::new(obj)))
        }
    };
    drop(btf);
    if let (Some(tgid), Some(mut obj)) = (bench_tgid, bench_obj) {
        let mut cfg: Array<_, u32> = Array::try_from(take_map(&mut obj, names::BENCH_CFG_MAP)?)
            .map_err(|source| Error::Map { map: names::BENCH_CFG_MAP, source })?;
        cfg.set(0, tgid, 0).map_err(|source| Error::Map { map: names::BENCH_CFG_MAP, source })?;
        for tp in bench::PROGRAMS {
            attached.push(tp.ensure(&mut obj, &links)?);
        }
    }
    let running: Vec<&str> = attached.iter().map(|a| a.name).collect();
    link::remove_stale(&links, &running)?;

    let ring_bytes = sizes.ring_bytes();
    let aya::maps::Map::RingBuf(events) = take_map(&mut tcp, names::EVENTS_MAP)? else {
        let source = aya::maps::MapError::IoError(std::io::Error::other("not a ring buffer"));
        return Err(Error::Map { map: names::EVENTS_MAP, source });
    };
    let events = crate::sys::RingReader::new(events, ring_bytes).map_err(|source| Error::Io {
        what: "failed to map the ring buffer",
        path: pin_dir.join(names::EVENTS_MAP),
        source,
    })?;
    let stats = take_map(&mut tcp, names::STATS_MAP)?;
    let stats =
        PerCpuArray::try_from(stats).map_err(|source| Error::Map { map: names::STATS_MAP, source })?;
    let cursor = take_map(&mut tcp, names::CURSOR_MAP)?;
    let cursor = Array::try_from(cursor).map_err(|source| Error::Map { map: names::CURSOR_MAP, source })?;
    let pinned =
        [names::EVENTS_MAP, names::STATS_MAP, names::CURSOR_MAP].map(|m| (m, pin_dir.join(m))).to_vec();
    let mut runs = runs::ProgramRuns::default();
    for a in &attached {
        if let Some(fd) = &a.fd {
            runs.add(a.name, Arc::clone(fd));
        }
    }
    Ok((Probes { stats, cursor, http, http_table, attached, pinned, runs, ring_bytes }, events))
}

fn take_map(ebpf: &mut Ebpf, map: &'static str) -> Result<aya::maps::Map, Error> {
    ebpf.take_map(map).ok_or(Error::MapMissing { map })
}

/// Kernel-side counters summed over CPUs.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct KernelStats {
    pub submitted: u64,
    pub reserve_failed: u64,
}

impl Probes {
    /// Tracks the OpenSSL uprobe programs' skipped runs too (once the TLS
    /// attacher has loaded them: they are this loader's own instances).
    pub fn track_tls_programs(&mut self) {
        let Some(http) = &self.http else { return };
        let ebpf = http.lock().unwrap_or_else(|e| e.into_inner());
        for program in crate::tls::PROGRAMS {
            match ebpf.program(program).ok_or_else(|| "not in the object".to_owned()).and_then(own_fd) {
                Ok(fd) => self.runs.add(program, Arc::new(fd)),
                Err(e) => warn!(program, error = %e, "Cannot track a TLS program's skipped runs."),
            }
        }
    }

    /// Reads and sums the per-CPU statistics map.
    pub fn kernel_stats(&self) -> Result<KernelStats, Error> {
        let sum = |idx: u32| -> Result<u64, Error> {
            let per_cpu =
                self.stats.get(&idx, 0).map_err(|source| Error::Map { map: names::STATS_MAP, source })?;
            Ok(per_cpu.iter().sum())
        };
        Ok(KernelStats {
            submitted: sum(abi::NT_STAT_SUBMITTED)?,
            reserve_failed: sum(abi::NT_STAT_RESERVE_FAILED)?,
        })
    }
}
