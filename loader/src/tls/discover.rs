// SPDX-License-Identifier: Apache-2.0
//! One pass over `/proc`: which files on the node can carry the OpenSSL
//! uprobes (every `libssl.so*` a process maps, and executables with
//! OpenSSL/BoringSSL symbols), which processes map them, and which processes
//! use TLS nettel cannot see, with the reason.

use std::{
    collections::{BTreeMap, HashMap},
    fs::{self, File},
    path::{Path, PathBuf},
};

use super::{
    elf::{self, Kind},
    maps::{self, FileId, Library},
    open, Reason,
};

/// Where to open an instrumentable file from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A library at this path inside the root of process `pid`.
    Library { pid: u32, path: String },
    /// The executable of process `pid`.
    Exe { pid: u32 },
}

/// An instrumentable file and the processes that map it.
#[derive(Debug, Clone)]
pub struct Target {
    pub source: Source,
    pub pids: Vec<u32>,
}

/// A process with TLS that cannot be instrumented, before attach results.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uninstrumented {
    pub pid: u32,
    pub exe: String,
    pub reason: Reason,
}

/// The result of one scan.
#[derive(Debug, Default)]
pub struct Scan {
    pub targets: BTreeMap<FileId, Target>,
    pub uninstrumented: Vec<Uninstrumented>,
    /// Processes whose maps could not be read (permission, or gone meanwhile).
    pub unreadable_maps: u32,
}

/// Most executables whose classification is remembered (by dev/inode).
const KIND_CACHE: usize = 4096;

/// Scans processes under `proc_root` (normally `/proc`), remembering each
/// executable's classification across scans.
#[derive(Debug)]
pub struct Scanner {
    proc_root: PathBuf,
    own_pid: u32,
    kinds: HashMap<FileId, Kind>,
}

impl Scanner {
    pub fn new(proc_root: PathBuf) -> Self {
        Self { proc_root, own_pid: std::process::id(), kinds: HashMap::new() }
    }

    /// The classification of `id` if it was inspected before.
    pub fn cached(&self, id: FileId) -> Option<Kind> {
        self.kinds.get(&id).copied()
    }

    /// Remembers what `id` is.
    pub fn remember(&mut self, id: FileId, kind: Kind) {
        if self.kinds.len() >= KIND_CACHE {
            self.kinds.clear();
        }
        self.kinds.insert(id, kind);
    }

    /// One pass over every process.
    pub fn scan(&mut self) -> Scan {
        let mut scan = Scan::default();
        let Ok(dir) = fs::read_dir(&self.proc_root) else { return scan };
        for entry in dir.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
            if pid == self.own_pid {
                continue;
            }
            self.scan_process(pid, &entry.path(), &mut scan);
        }
        scan
    }

    fn scan_process(&mut self, pid: u32, dir: &Path, scan: &mut Scan) {
        let text = match fs::read_to_string(dir.join("maps")) {
            Ok(t) => t,
            Err(_) => {
                scan.unreadable_maps += 1;
                return;
            }
        };
        if text.is_empty() {
            return; // kernel thread
        }
        let mappings = maps::parse(&text);
        let exe_name = || exe_name(dir);
        let mut has_openssl = false;
        for m in &mappings {
            match maps::library(&m.path) {
                Some(Library::OpenSsl) if m.deleted => {
                    scan.uninstrumented.push(Uninstrumented {
                        pid,
                        exe: exe_name(),
                        reason: Reason::Unreadable,
                    });
                    return;
                }
                Some(Library::OpenSsl) => {
                    has_openssl = true;
                    scan.targets
                        .entry(m.id)
                        .or_insert_with(|| Target {
                            source: Source::Library { pid, path: m.path.clone() },
                            pids: Vec::new(),
                        })
                        .pids
                        .push(pid);
                }
                _ => {}
            }
        }
        if has_openssl {
            return;
        }
        if mappings.iter().any(|m| maps::library(&m.path) == Some(Library::Other)) {
            scan.uninstrumented.push(Uninstrumented { pid, exe: exe_name(), reason: Reason::OtherLibrary });
            return;
        }
        let Ok(meta) = fs::metadata(dir.join("exe")) else { return };
        let id = {
            use std::os::unix::fs::MetadataExt;
            FileId { dev: meta.dev(), ino: meta.ino() }
        };
        let kind = match self.cached(id) {
            Some(k) => k,
            None => {
                // An executable that cannot be opened or parsed is unknown, not TLS.
                let kind = open::open_exe(dir, id)
                    .ok()
                    .and_then(|f: File| elf::inspect(&f).ok())
                    .unwrap_or(Kind::None);
                self.remember(id, kind);
                kind
            }
        };
        let reason = match kind {
            Kind::OpenSsl(_) => {
                scan.targets
                    .entry(id)
                    .or_insert_with(|| Target { source: Source::Exe { pid }, pids: Vec::new() })
                    .pids
                    .push(pid);
                return;
            }
            Kind::GoTls => Reason::Go,
            Kind::Rustls => Reason::Rustls,
            Kind::StrippedSsl => Reason::Stripped,
            Kind::None => return,
        };
        scan.uninstrumented.push(Uninstrumented { pid, exe: exe_name(), reason });
    }
}

/// The executable's path as the process sees it, cut to 256 bytes.
pub fn exe_name(dir: &Path) -> String {
    let mut s = fs::read_link(dir.join("exe")).map(|p| p.display().to_string()).unwrap_or_default();
    if s.len() > 256 {
        let mut cut = 256;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}
