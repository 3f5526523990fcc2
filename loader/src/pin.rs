// SPDX-License-Identifier: Apache-2.0
//! The pin dir under bpffs: created private, refused when anyone but root can
//! write to it, and every map already pinned there is verified before aya is
//! allowed to reuse it (aya reuses a pinned map by name without checks).
//!
//! Layout: `<pin dir>/nt_*` maps (every map declared with
//! `LIBBPF_PIN_BY_NAME`) and `<pin dir>/links/nt_*` program links
//! (`probe::link`).

use std::{
    fs,
    os::unix::fs::{DirBuilderExt, MetadataExt},
    path::{Path, PathBuf},
};

use aya::{
    maps::{MapData, MapError, MapInfo, MapType, PerCpuArray, PerCpuValues},
    sys::SyscallError,
};
use nettel_bpf::names;
use tracing::{info, warn};

use crate::{sys, Error};

/// What a pinned map must look like to be reused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapSpec {
    pub name: String,
    /// `bpf_map_type` number.
    pub map_type: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    /// `BPF_F_*` creation flags (`BPF_F_MMAPABLE` changes how a map is read).
    pub map_flags: u32,
}

/// Maps whose contents must survive a restart: a pinned one that does not
/// match is an error (removing it loses unread events or totals). Any other
/// pinned map that does not match is per-program state and is replaced.
pub const DURABLE: [&str; 3] = [names::EVENTS_MAP, names::STATS_MAP, names::CURSOR_MAP];

/// Durable maps that may grow between versions (a new counter): a pinned copy
/// with fewer entries, created by an older loader, is replaced by a larger one
/// and its values are carried over ([`Carried`]) instead of being refused.
/// Only per-CPU arrays of `u64` counters belong here. A pinned copy with more
/// entries (a downgrade) is still refused: its extra counters would be lost.
pub const GROWABLE: [&str; 1] = [names::STATS_MAP];

/// The infix of a carry pin, `<map>-carry-<n>`: a durable map that grew is
/// renamed to one rather than unpinned, so that its values outlive a loader
/// that stops before copying them (an object that does not load); the next
/// loader finds it and carries it. `nettel-loader cleanup` removes it with
/// every other `nt_*` pin. (bpffs refuses names with a dot: EPERM.)
const CARRY_INFIX: &str = "-carry-";

/// The values of a durable map that grew ([`GROWABLE`]), to copy into its new,
/// larger map: the maps pinned as `<map>-carry-<n>`, each held open with its
/// pin. There is more than one after an interrupted upgrade was rolled back
/// to a loader that does not know carry pins and counted into a map of its
/// own.
pub struct Carried {
    pub name: &'static str,
    sources: Vec<(PathBuf, MapData)>,
}

impl std::fmt::Debug for Carried {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pins: Vec<_> = self.sources.iter().map(|(p, _)| p).collect();
        f.debug_struct("Carried").field("name", &self.name).field("pins", &pins).finish()
    }
}

impl Carried {
    /// Writes into every index of `new` the sum, CPU by CPU, of that index
    /// over the carried maps, then removes their pins. Call it once no
    /// program writes the old maps (their links are detached) and before any
    /// program writes the new one (before attach), so that no increment is
    /// lost or overwritten. The values are set, not added: a loader stopped
    /// between the copy and the unpin leaves a new map holding either nothing
    /// or these same values, and the next one copies them again. Returns the
    /// entries copied.
    pub fn copy_into(self, new: &mut aya::maps::Map) -> Result<u32, Error> {
        let map = self.name;
        let err = |source| Error::Map { map, source };
        let mut new: PerCpuArray<&mut MapData, u64> = PerCpuArray::try_from(new).map_err(err)?;
        let mut olds = Vec::with_capacity(self.sources.len());
        for (path, data) in self.sources {
            let old: PerCpuArray<MapData, u64> =
                PerCpuArray::try_from(aya::maps::Map::PerCpuArray(data)).map_err(err)?;
            olds.push((path, old));
        }
        let len = olds.iter().map(|(_, old)| old.len()).max().unwrap_or(0);
        let cpus = aya::util::nr_cpus().map_err(|(what, source)| Error::Io {
            what: "failed to count possible CPUs",
            path: what.into(),
            source,
        })?;
        for i in 0..len {
            let mut sum = vec![0u64; cpus];
            for (_, old) in olds.iter().filter(|(_, old)| i < old.len()) {
                for (s, v) in sum.iter_mut().zip(old.get(&i, 0).map_err(err)?.iter()) {
                    *s = s.saturating_add(*v);
                }
            }
            let values = PerCpuValues::try_from(sum).map_err(|source| Error::Io {
                what: "failed to sum carried counters",
                path: olds[0].0.clone(),
                source,
            })?;
            new.set(i, values, 0).map_err(err)?;
        }
        for (path, _) in olds {
            unpin(path)?;
        }
        Ok(len)
    }
}

/// Gathers what [`Carried`] copies for `spec`, a [`GROWABLE`] map: the carry
/// pins a stopped loader left (each must be `spec` but for fewer or as many
/// entries), and the pinned map itself if it has fewer entries than `spec`,
/// which is renamed to a carry pin (the pin is then missing: the load creates
/// the larger map). A pinned map that matches stays, one that does not match
/// in another way is left for [`verify_existing`] to refuse. Nothing is
/// renamed unless every carry pin is valid. `None`: nothing to carry.
pub fn carry(dir: &Path, spec: &MapSpec) -> Result<Option<Carried>, Error> {
    let Some(name) = GROWABLE.iter().copied().find(|g| *g == spec.name) else { return Ok(None) };
    let open = |path: &Path| MapData::from_pin(path).map_err(|source| Error::Map { map: name, source });
    let mut sources = Vec::new();
    let mut next = 0;
    for (n, path) in carry_pins(dir, name)? {
        if let Some(Mismatch { reason, grows: false }) = check(&path, spec)? {
            return Err(Error::PinnedMapMismatch { map: name.to_owned(), path, reason });
        }
        next = next.max(n + 1);
        sources.push((path.clone(), open(&path)?));
    }
    if !sources.is_empty() {
        warn!(map = name, pins = sources.len(), "Found the values of an interrupted upgrade; carrying them.");
    }
    let path = dir.join(name);
    if path.exists() {
        if let Some(Mismatch { reason, grows: true }) = check(&path, spec)? {
            // Opened before the rename, so the values stay reachable either way.
            let old = open(&path)?;
            let to = dir.join(format!("{name}{CARRY_INFIX}{next}"));
            warn!(map = name, %reason, carry = %to.display(),
                "A pinned map has fewer entries than this loader's; carrying its values into a larger one.");
            fs::rename(&path, &to).map_err(|source| Error::Io {
                what: "failed to rename pinned map",
                path,
                source,
            })?;
            sources.push((to, old));
        }
    }
    Ok((!sources.is_empty()).then_some(Carried { name, sources }))
}

/// The carry pins of `name` in `dir`, `(n, path)` for each `<name>-carry-<n>`.
/// A name with that prefix and no number is not one of ours: ignored.
fn carry_pins(dir: &Path, name: &str) -> Result<Vec<(u32, PathBuf)>, Error> {
    let prefix = format!("{name}{CARRY_INFIX}");
    let io = |source| Error::Io { what: "failed to list pin dir", path: dir.to_owned(), source };
    let mut pins = Vec::new();
    for entry in fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let file = entry.file_name();
        let Some(n) = file.to_str().and_then(|f| f.strip_prefix(&prefix)).and_then(|n| n.parse().ok()) else {
            continue;
        };
        pins.push((n, entry.path()));
    }
    pins.sort();
    Ok(pins)
}

/// Maps that depend on others: when any map of the first list is
/// (re)created, the pinned maps of the second are replaced too. The HTTP
/// table's maps only make sense together, and HTTP connections cache slot
/// indices of the table.
pub const DEPENDENTS: [(&[&str], &[&str]); 2] =
    [(&names::HTTP_TABLE_MAPS, &names::HTTP_TABLE_MAPS), (&names::HTTP_TABLE_MAPS, &[names::HTTP_CONNS_MAP])];

/// The ring buffer's size when `--ring-buffer-bytes` is unset and no ring is
/// pinned yet. At 2 M events/s on two vCPUs a 1 MiB ring lost events in 3 of
/// 8 runs and a 4 MiB ring in none (BENCHMARKS.md, "pipeline"); 4 MiB is also
/// ~26 ms of that rate for a loader restart to carry.
pub const DEFAULT_RING_BYTES: u32 = 4 << 20;

/// Whether `n` bytes is a ring buffer size the loader accepts: a power of two
/// from one page (4096) to 1 GiB.
pub fn valid_ring_bytes(n: u64) -> bool {
    (4096..=(1 << 30)).contains(&n) && n.is_power_of_two()
}

/// Map sizes set at run time (`--ring-buffer-bytes`, `--http-table-entries`)
/// instead of the objects' defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapSizes {
    /// `None` until [`MapSizes::resolve`]: the flag was not set.
    pub ring_bytes: Option<u32>,
    pub http_table_entries: u32,
}

impl MapSizes {
    /// Fills in an unset ring size: the size of the ring buffer pinned in
    /// `dir`, so that a loader whose default differs from the one that
    /// created it adopts it (its unread events included) instead of refusing
    /// it, or else [`DEFAULT_RING_BYTES`]. A pinned `nt_events` that is not a
    /// ring buffer of a valid size leaves the default, and
    /// [`verify_existing`] then refuses it as a mismatch.
    pub fn resolve(self, dir: &Path) -> Self {
        if self.ring_bytes.is_some() {
            return self;
        }
        let pinned = pinned_ring_bytes(&dir.join(names::EVENTS_MAP));
        if let Some(n) = pinned {
            info!(bytes = n, "Adopting the pinned ring buffer's size (--ring-buffer-bytes unset).");
        }
        Self { ring_bytes: Some(pinned.unwrap_or(DEFAULT_RING_BYTES)), ..self }
    }

    /// The ring buffer's size: the one set or resolved, else the default.
    pub fn ring_bytes(&self) -> u32 {
        self.ring_bytes.unwrap_or(DEFAULT_RING_BYTES)
    }

    /// `(map, max_entries)` of every map whose size is set at run time.
    pub fn overrides(&self) -> Vec<(&'static str, u32)> {
        let mut v = vec![(names::EVENTS_MAP, self.ring_bytes())];
        v.extend(names::HTTP_TABLE_SIZED_MAPS.map(|m| (m, self.http_table_entries)));
        v
    }
}

/// What an object pins and runs, from its ELF: the maps it pins by name
/// (as this loader would create them, with `sizes`) and its programs.
#[derive(Debug, Clone)]
pub struct ObjectPins {
    pub object: &'static str,
    pub maps: Vec<MapSpec>,
    pub programs: Vec<String>,
}

/// Parses each object of `objects`.
pub fn object_pins(objects: &[(&'static str, &[u8])], sizes: MapSizes) -> Result<Vec<ObjectPins>, Error> {
    let overrides = sizes.overrides();
    objects
        .iter()
        .map(|(object, bytes)| {
            let parsed = aya_obj::Object::parse(bytes)
                .map_err(|e| Error::ObjectParse { object, reason: e.to_string() })?;
            let mut maps: Vec<MapSpec> = parsed
                .maps
                .iter()
                .filter(|(_, m)| m.pinning() == aya_obj::maps::PinningType::ByName)
                .map(|(name, m)| MapSpec {
                    name: name.clone(),
                    map_type: m.map_type(),
                    key_size: m.key_size(),
                    value_size: m.value_size(),
                    max_entries: overrides
                        .iter()
                        .find(|(o, _)| o == name)
                        .map_or(m.max_entries(), |(_, n)| *n),
                    map_flags: m.map_flags(),
                })
                .collect();
            maps.sort_by(|a, b| a.name.cmp(&b.name));
            let mut programs: Vec<String> = parsed.programs.keys().cloned().collect();
            programs.sort();
            Ok(ObjectPins { object, maps, programs })
        })
        .collect()
}

/// Creates `dir` (mode 0700) if missing and verifies it is a bpffs directory
/// owned by the loader's uid and not writable by group or others.
pub fn prepare_dir(dir: &Path) -> Result<(), Error> {
    if !dir.exists() {
        fs::DirBuilder::new().mode(0o700).recursive(true).create(dir).map_err(|source| Error::Io {
            what: "failed to create pin dir",
            path: dir.to_owned(),
            source,
        })?;
    }
    let meta = fs::symlink_metadata(dir).map_err(|source| Error::Io {
        what: "failed to stat pin dir",
        path: dir.to_owned(),
        source,
    })?;
    let unsafe_dir = |reason: String| Error::UnsafePinDir { path: dir.to_owned(), reason };
    if !meta.is_dir() {
        return Err(unsafe_dir("not a directory".into()));
    }
    if meta.uid() != sys::euid() {
        return Err(unsafe_dir(format!("owned by uid {}, not the loader's uid {}", meta.uid(), sys::euid())));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(unsafe_dir(format!(
            "mode {:o} is group/world-writable; chmod go-w it",
            meta.mode() & 0o7777
        )));
    }
    match sys::fs_magic(dir) {
        Ok(m) if m == sys::BPF_FS_MAGIC => Ok(()),
        _ => Err(unsafe_dir("not on a bpf filesystem".into())),
    }
}

/// Verifies every map of `specs` that is already pinned in `dir`, so that aya
/// (which reuses a pin by name without checks) reuses only what matches. A
/// durable map that does not match is an error (one that only grew was moved
/// aside by [`carry`] before); any other is unpinned, to be recreated. A map
/// is also replaced when one it depends on is new ([`DEPENDENTS`]). Returns
/// the maps not pinned now (missing, or just unpinned): the load creates
/// them.
pub fn verify_existing(dir: &Path, specs: &[MapSpec]) -> Result<Vec<String>, Error> {
    let mut fresh = Vec::new();
    for spec in specs {
        let path = dir.join(&spec.name);
        if !path.exists() {
            fresh.push(spec.name.clone());
            continue;
        }
        let Some(Mismatch { reason, .. }) = check(&path, spec)? else { continue };
        if DURABLE.contains(&spec.name.as_str()) {
            return Err(Error::PinnedMapMismatch { map: spec.name.clone(), path, reason });
        }
        warn!(map = %spec.name, %reason, "A pinned map does not match this loader; replacing it.");
        unpin(path)?;
        fresh.push(spec.name.clone());
    }
    for (name, cause) in dependents_of(&fresh) {
        let path = dir.join(name);
        if path.exists() {
            warn!(map = name, because = cause, "A map this one depends on is new; replacing this one too.");
            unpin(path)?;
        }
        fresh.push(name.to_owned());
    }
    Ok(fresh)
}

/// The maps to replace because a map they depend on is in `fresh` (and they
/// are not), each with that map ([`DEPENDENTS`]).
fn dependents_of(fresh: &[String]) -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    for (causes, dependents) in DEPENDENTS {
        let Some(cause) = causes.iter().find(|m| fresh.iter().any(|f| f == *m)) else { continue };
        for d in dependents.iter().filter(|d| !fresh.iter().any(|f| f == *d)) {
            if !out.iter().any(|(o, _)| o == d) {
                out.push((d, cause));
            }
        }
    }
    out
}

fn unpin(path: PathBuf) -> Result<(), Error> {
    fs::remove_file(&path).map_err(|source| Error::Io { what: "failed to remove pinned map", path, source })
}

/// The size of the ring buffer pinned at `path`, if one of a valid size is.
fn pinned_ring_bytes(path: &Path) -> Option<u32> {
    let info = MapInfo::from_pin(path).ok()?;
    let n = info.max_entries();
    (matches!(info.map_type(), Ok(MapType::RingBuf)) && valid_ring_bytes(n.into())).then_some(n)
}

/// Why a pinned map does not match its spec.
#[derive(Debug, PartialEq, Eq)]
struct Mismatch {
    reason: String,
    /// It matches but for fewer entries (an older loader's map of a kind
    /// that may grow).
    grows: bool,
}

impl Mismatch {
    fn other(reason: String) -> Option<Self> {
        Some(Self { reason, grows: false })
    }
}

/// Why the map pinned at `path` does not match `spec` (`None`: it matches).
/// A refused `BPF_OBJ_GET` (EPERM: a missing capability, an LSM) is an error,
/// not a mismatch: it says nothing about the map, which must not be replaced.
fn check(path: &Path, spec: &MapSpec) -> Result<Option<Mismatch>, Error> {
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) => return Ok(Mismatch::other(format!("cannot stat: {e}"))),
    };
    if meta.uid() != sys::euid() || meta.mode() & 0o022 != 0 {
        return Ok(Mismatch::other(format!(
            "owner uid {} mode {:o} is not private",
            meta.uid(),
            meta.mode() & 0o7777
        )));
    }
    let info = match MapInfo::from_pin(path) {
        Ok(info) => info,
        Err(MapError::SyscallError(SyscallError { io_error, .. })) if io_error.raw_os_error() == Some(1) => {
            return Err(Error::PinnedMapRefused {
                map: spec.name.clone(),
                path: path.to_owned(),
                source: io_error,
            })
        }
        Err(e) => return Ok(Mismatch::other(format!("not a BPF map: {e}"))),
    };
    let ty = match info.map_type() {
        Ok(ty) => ty as u32,
        Err(e) => return Ok(Mismatch::other(format!("unknown map type: {e}"))),
    };
    let got = (ty, info.key_size(), info.value_size(), info.max_entries(), info.map_flags());
    Ok(compare(got, spec))
}

/// `got` (type, key size, value size, max entries, flags) against `spec`.
fn compare(got: (u32, u32, u32, u32, u32), spec: &MapSpec) -> Option<Mismatch> {
    let want = (spec.map_type, spec.key_size, spec.value_size, spec.max_entries, spec.map_flags);
    if got == want {
        return None;
    }
    let grows = (got.0, got.1, got.2, got.4) == (want.0, want.1, want.2, want.4) && got.3 < want.3;
    let reason = format!(
        "found (type {}, key {}, value {}, max_entries {}, flags {:#x}), \
         expected (type {}, key {}, value {}, max_entries {}, flags {:#x})",
        got.0, got.1, got.2, got.3, got.4, want.0, want.1, want.2, want.3, want.4
    );
    Some(Mismatch { reason, grows })
}

/// Removes what the loader pinned: every `nt_*` entry of `dir/links` and of
/// `dir`, then both directories if empty. Only `nt_*` names are touched, so a
/// pin dir pointed at a shared bpffs directory loses nothing of other tools.
/// Removing a link's pin detaches its program. Returns the paths removed.
pub fn cleanup(dir: &Path) -> Result<Vec<PathBuf>, Error> {
    let mut removed = Vec::new();
    for d in [dir.join(crate::probe::link::LINKS_DIR), dir.to_owned()] {
        let entries = match fs::read_dir(&d) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => return Err(Error::Io { what: "failed to list pin dir", path: d, source }),
        };
        for entry in entries {
            let entry = entry.map_err(|source| Error::Io {
                what: "failed to list pin dir",
                path: d.clone(),
                source,
            })?;
            let path = entry.path();
            if !entry.file_name().to_string_lossy().starts_with("nt_") || path.is_dir() {
                continue;
            }
            fs::remove_file(&path).map_err(|source| Error::Io {
                what: "failed to remove pin",
                path: path.clone(),
                source,
            })?;
            removed.push(path);
        }
        if fs::read_dir(&d).is_ok_and(|mut e| e.next().is_none()) {
            fs::remove_dir(&d).map_err(|source| Error::Io {
                what: "failed to remove pin dir",
                path: d.clone(),
                source,
            })?;
            removed.push(d);
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_sizes_are_powers_of_two_from_a_page_to_a_gib() {
        for ok in [4096, 65536, 1 << 20, u64::from(DEFAULT_RING_BYTES), 1 << 30] {
            assert!(valid_ring_bytes(ok), "{ok}");
        }
        for bad in [0, 2048, 3000, 4097, 3 << 20, 1 << 31] {
            assert!(!valid_ring_bytes(bad), "{bad}");
        }
    }

    #[test]
    fn an_unset_ring_size_without_a_pin_is_the_default_and_a_set_one_stays() {
        let dir = std::env::temp_dir().join(format!("nettel-pin-test-{}", std::process::id()));
        let unset = MapSizes { ring_bytes: None, http_table_entries: 16 };
        assert_eq!(unset.ring_bytes(), DEFAULT_RING_BYTES);
        assert_eq!(unset.resolve(&dir).ring_bytes, Some(DEFAULT_RING_BYTES));
        let set = MapSizes { ring_bytes: Some(65536), ..unset };
        assert_eq!(set.resolve(&dir), set);
        assert_eq!(set.overrides()[0], (names::EVENTS_MAP, 65536));
    }

    #[test]
    fn only_fewer_entries_of_the_same_kind_is_growth() {
        let spec = MapSpec {
            name: names::STATS_MAP.into(),
            map_type: 6,
            key_size: 4,
            value_size: 8,
            max_entries: 9,
            map_flags: 0,
        };
        assert_eq!(compare((6, 4, 8, 9, 0), &spec), None);
        assert!(compare((6, 4, 8, 2, 0), &spec).unwrap().grows, "fewer entries");
        let refused =
            [(6, 4, 8, 12, 0), (2, 4, 8, 2, 0), (6, 4, 4, 2, 0), (6, 8, 8, 2, 0), (6, 4, 8, 2, 0x400)];
        for got in refused {
            let m = compare(got, &spec).unwrap();
            assert!(!m.grows, "{got:?} is not growth");
            assert!(m.reason.contains("expected (type 6, key 4, value 8, max_entries 9"), "{}", m.reason);
        }
    }

    #[test]
    fn carry_pins_are_the_numbered_ones_of_the_map_in_numeric_order() {
        let dir = tempfile::tempdir().unwrap();
        let names = [
            "nt_stats-carry-10",
            "nt_stats-carry-0",
            "nt_stats-carry-2",
            "nt_stats-carry-x",
            "nt_stats-carry-",
            "nt_stats.carryx",
            "nt_stats",
            "nt_events-carry-1",
        ];
        for n in names {
            fs::write(dir.path().join(n), b"").unwrap();
        }
        let got = carry_pins(dir.path(), names::STATS_MAP).unwrap();
        let want: Vec<_> = [0, 2, 10].map(|n| (n, dir.path().join(format!("nt_stats-carry-{n}")))).into();
        assert_eq!(got, want);
    }

    #[test]
    fn a_new_http_table_map_replaces_the_rest_of_the_table_and_the_connections() {
        let fresh = vec![names::HTTP_HINT_MAP.to_owned()];
        let mut got: Vec<_> = dependents_of(&fresh).into_iter().map(|(d, _)| d).collect();
        got.sort_unstable();
        assert_eq!(
            got,
            [names::HTTP_CLAIMS_MAP, names::HTTP_CONNS_MAP, names::HTTP_INDEX_MAP, names::HTTP_SLOTS_MAP]
        );
        assert!(dependents_of(&[names::HTTP_CONNS_MAP.to_owned()]).is_empty(), "connections alone: no table");
        assert!(dependents_of(&[names::EVENTS_MAP.to_owned()]).is_empty());
    }
}
