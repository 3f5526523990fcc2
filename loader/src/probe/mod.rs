// SPDX-License-Identifier: Apache-2.0
//! Loading and attaching the probes. The loaded [`Probes`] own the aya objects:
//! dropping them detaches every program (pinned maps stay in the pin dir).

mod bench;
mod http;
mod tcp_retransmit;

use std::path::{Path, PathBuf};

use aya::{
    maps::{MapData, MapType, PerCpuArray, RingBuf},
    Ebpf,
};
use nettel_bpf::{abi, names};

use crate::{pin, Error};

/// A tracepoint program of a probe object and where it attaches.
#[derive(Debug, Clone, Copy)]
pub struct Tracepoint {
    pub program: &'static str,
    pub category: &'static str,
    pub name: &'static str,
    /// Label for logs and the status RPC, e.g. `tracepoint/tcp/tcp_retransmit_skb`.
    pub attach_point: &'static str,
}

impl Tracepoint {
    /// Loads the program into the kernel and attaches it.
    pub fn attach(&self, ebpf: &mut Ebpf) -> Result<Attached, Error> {
        let Self { program, category, name, attach_point } = *self;
        let prog: &mut aya::programs::TracePoint = ebpf
            .program_mut(program)
            .ok_or(Error::ProgramMissing { program })?
            .try_into()
            .map_err(|e| Error::program(program, e))?;
        prog.load().map_err(|e| Error::program(program, e))?;
        prog.attach(category, name).map_err(|source| Error::Attach { program, attach_point, source })?;
        Ok(Attached { name: program, attach_point })
    }
}

/// One attached program, as reported by the status RPC.
#[derive(Debug, Clone)]
pub struct Attached {
    pub name: &'static str,
    pub attach_point: &'static str,
}

/// The loaded and attached probes and the statistics map.
pub struct Probes {
    /// Kept alive for the links they own.
    _tcp_retransmit: Ebpf,
    /// The http object; shared with the TLS attacher thread, which attaches
    /// its uprobes at run time (`crate::tls`).
    pub http: crate::tls::SharedEbpf,
    _bench: Option<Ebpf>,
    pub stats: PerCpuArray<MapData, u64>,
    pub attached: Vec<Attached>,
    pub pinned: Vec<(&'static str, PathBuf)>,
}

impl std::fmt::Debug for Probes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Probes").field("attached", &self.attached).field("pinned", &self.pinned).finish()
    }
}

/// Every map the loader pins, with the attributes a reused pin must have.
pub fn map_specs(ring_bytes: u32) -> [pin::MapSpec; 2] {
    [
        pin::MapSpec {
            name: names::EVENTS_MAP,
            map_type: MapType::RingBuf,
            key_size: 0,
            value_size: 0,
            max_entries: ring_bytes,
        },
        pin::MapSpec {
            name: names::STATS_MAP,
            map_type: MapType::PerCpuArray,
            key_size: 4,
            value_size: 8,
            max_entries: abi::NT_STAT_MAX,
        },
    ]
}

/// Loads, pins and attaches every probe. Returns the probes and the ring buffer
/// (which the drain loop owns).
///
/// With `bench_tgid`, also attaches the benchmark probe for that process; it
/// shares the pinned ring buffer and statistics map.
pub fn load(
    pin_dir: &Path,
    ring_bytes: u32,
    bench_tgid: Option<u32>,
    http_hook: crate::config::HttpHook,
) -> Result<(Probes, RingBuf<MapData>), Error> {
    if nettel_bpf::TCP_RETRANSMIT_OBJ.is_empty() {
        return Err(Error::StubObject);
    }
    pin::prepare_dir(pin_dir)?;
    pin::verify_existing(pin_dir, &map_specs(ring_bytes))?;

    let mut ebpf = aya::EbpfLoader::new()
        .map_pin_path(pin_dir)
        .set_max_entries(names::EVENTS_MAP, ring_bytes)
        .load(nettel_bpf::TCP_RETRANSMIT_OBJ)
        .map_err(|source| Error::ObjectLoad { object: "tcp_retransmit", source })?;
    let mut attached =
        tcp_retransmit::PROGRAMS.iter().map(|tp| tp.attach(&mut ebpf)).collect::<Result<Vec<_>, _>>()?;
    let mut http = aya::EbpfLoader::new()
        .map_pin_path(pin_dir)
        .set_max_entries(names::EVENTS_MAP, ring_bytes)
        .load(nettel_bpf::HTTP_OBJ)
        .map_err(|source| Error::ObjectLoad { object: "http", source })?;
    let http_hook = http::resolve(http_hook, Path::new(crate::preflight::TRACEFS));
    attached.extend(http::attach(&mut http, http_hook)?);
    let bench = match bench_tgid {
        Some(tgid) => {
            let mut bench = aya::EbpfLoader::new()
                .map_pin_path(pin_dir)
                .set_max_entries(names::EVENTS_MAP, ring_bytes)
                .set_global(names::BENCH_TGID, &tgid, true)
                .load(nettel_bpf::BENCH_OBJ)
                .map_err(|source| Error::ObjectLoad { object: "bench", source })?;
            attached.push(bench::PROGRAM.attach(&mut bench)?);
            Some(bench)
        }
        None => None,
    };

    let events = take_map(&mut ebpf, names::EVENTS_MAP)?;
    let events = RingBuf::try_from(events).map_err(|source| Error::Map { map: names::EVENTS_MAP, source })?;
    let stats = take_map(&mut ebpf, names::STATS_MAP)?;
    let stats =
        PerCpuArray::try_from(stats).map_err(|source| Error::Map { map: names::STATS_MAP, source })?;
    let pinned = [names::EVENTS_MAP, names::STATS_MAP].map(|m| (m, pin_dir.join(m))).to_vec();
    Ok((
        Probes {
            _tcp_retransmit: ebpf,
            http: std::sync::Arc::new(std::sync::Mutex::new(http)),
            _bench: bench,
            stats,
            attached,
            pinned,
        },
        events,
    ))
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
